package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// hooks tracks the containers' postStart hooks, one run per container
// instance, as a kubelet runs them after each start.
type hooks struct {
	mu      sync.Mutex
	done    map[string]string // uid/container → instance whose postStart finished
	running map[string]string // uid/container → instance whose postStart runs
	// stopping keeps the workloads withdrawn from the store until their
	// pods are removed, for their preStop hooks.
	stopping map[string]*bridge.Workload
	// tails caches log tails by uid/container/instance.
	tails map[string]string
}

// forget drops what hooks hold of a removed pod.
func (h *hooks) forget(uid string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.stopping, uid)
	for _, m := range []map[string]string{h.done, h.tails} {
		for k := range m {
			if strings.HasPrefix(k, uid+"/") {
				delete(m, k)
			}
		}
	}
}

// postStartDone reports whether the postStart hook of the container's
// current instance has finished (true without a hook). Until it has, the
// container is neither started nor ready.
func (a *Agent) postStartDone(uid string, c *bridge.Container, containerID string) bool {
	if c.PostStart == nil {
		return true
	}
	a.hooks.mu.Lock()
	defer a.hooks.mu.Unlock()
	inst := a.hooks.done[uid+"/"+c.Name]
	return containerID != "" && strings.HasPrefix(inst, containerID+"@")
}

// syncPostStart runs the postStart hook of every running container
// instance that has not had it. A hook that fails stops the container,
// whose restart policy then applies (kubelet's FailedPostStartHook).
func (a *Agent) syncPostStart(ctx context.Context, records []Record, pods map[string]*PodState) {
	eachRunning(records, pods, func(wp *bridge.Workload, c bridge.Container, rc ContainerState) {
		if c.PostStart == nil {
			return
		}
		w := *wp
		key, inst := w.UID+"/"+c.Name, instanceOf(&rc)
		a.hooks.mu.Lock()
		if a.hooks.done == nil {
			a.hooks.done, a.hooks.running = map[string]string{}, map[string]string{}
		}
		if a.hooks.done[key] == inst || a.hooks.running[key] == inst {
			a.hooks.mu.Unlock()
			return
		}
		a.hooks.running[key] = inst
		a.hooks.mu.Unlock()
		go func() {
			err := a.runHandler(ctx, w.UID, c.Name, c.PostStart, grace(&w))
			a.hooks.mu.Lock()
			delete(a.hooks.running, key)
			a.hooks.done[key] = inst
			a.hooks.mu.Unlock()
			if err != nil && ctx.Err() == nil {
				a.log.Warn("postStart hook failed; stopping the container (FailedPostStartHook)",
					"pod", w.Namespace+"/"+w.Name, "container", c.Name, "err", err)
				a.probes.kill(ctx, w.UID, c.Name)
			}
			a.kick()
		}()
	})
}

// runPreStops runs the preStop hooks of p's running containers in
// parallel, within budget, before the pod is stopped; it returns how long
// they took.
func (a *Agent) runPreStops(ctx context.Context, w *bridge.Workload, p *PodState, budget time.Duration) time.Duration {
	start := time.Now()
	running := map[string]bool{}
	for _, c := range p.Containers {
		running[c.Name] = c.State == ContainerRunning
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range append(append([]bridge.Container(nil), w.Containers...), w.InitContainers...) {
		if c.PreStop == nil || !running[c.Name] {
			continue
		}
		wg.Add(1)
		go func(c bridge.Container) {
			defer wg.Done()
			if err := a.runHandler(ctx, w.UID, c.Name, c.PreStop, budget); err != nil {
				a.log.Warn("preStop hook failed (FailedPreStopHook)", "pod", w.Namespace+"/"+w.Name, "container", c.Name, "err", err)
			}
		}(c)
	}
	wg.Wait()
	return time.Since(start)
}

// runHandler runs one lifecycle hook in the container, as a kubelet does:
// a command, an HTTP GET inside the pod, or a pause.
func (a *Agent) runHandler(ctx context.Context, uid, container string, h *bridge.Handler, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	switch {
	case len(h.Exec) > 0:
		ex, ok := a.rt.(Execer)
		if !ok {
			return fmt.Errorf("%w: exec hooks", ErrUnsupported)
		}
		var out limitedBuffer
		code, err := ex.Exec(ctx, uid, container, h.Exec, StreamIO{Stdout: &out, Stderr: &out})
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("command %q exited with %d: %s", strings.Join(h.Exec, " "), code, strings.TrimSpace(out.String()))
		}
		return nil
	case h.HTTPGet != nil:
		return a.probes.httpGet(ctx, uid, h.HTTPGet)
	case h.SleepSeconds > 0:
		t := time.NewTimer(time.Duration(h.SleepSeconds) * time.Second)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return errors.New("hook has no handler")
}

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }

var _ io.Writer = (*limitedBuffer)(nil)

// Bounds of a termination message taken from a log, as kubelet's.
const (
	fallbackLogLines = 80
	fallbackLogBytes = 2048
)

// logTail reads r to its end and returns its last lines lines, at most
// max bytes of them, as kubelet's termination message from a log: a last
// line without a newline counts as a line.
func logTail(r io.Reader, lines, max int) (string, error) {
	// Keep a window of the stream large enough for any tail asked for.
	const window = 64 << 10
	var buf []byte
	chunk := make([]byte, 32<<10)
	for {
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if len(buf) > 2*window {
			buf = append(buf[:0:0], buf[len(buf)-window:]...)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", err
		}
	}
	end := len(buf)
	if end > 0 && buf[end-1] == '\n' {
		end-- // the newline ending the last line starts no new one
	}
	start := end
	for n := 0; start > 0; start-- {
		if buf[start-1] == '\n' {
			if n++; n == lines {
				break
			}
		}
	}
	b := buf[start:]
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b), nil
}

// fillLogTails reads, for each failed container of p whose termination
// message falls back to its log and that wrote none, the tail of its log
// (once per container run).
func (a *Agent) fillLogTails(ctx context.Context, r *Record, p *PodState, note *pending) {
	if p == nil {
		return
	}
	lr, ok := a.rt.(LogReader)
	if !ok {
		return
	}
	policies := map[string]string{}
	for _, c := range append(append([]bridge.Container(nil), r.Workload.InitContainers...), r.Workload.Containers...) {
		policies[c.Name] = c.TerminationMessagePolicy
	}
	for _, c := range p.Containers {
		if c.State != ContainerExited || c.ExitCode == 0 || c.TerminationMessage != "" || policies[c.Name] != "FallbackToLogsOnError" {
			continue
		}
		key := r.Workload.UID + "/" + c.Name + "/" + instanceOf(&c)
		a.hooks.mu.Lock()
		tail, cached := a.hooks.tails[key]
		a.hooks.mu.Unlock()
		if !cached {
			// The whole log, tailed here: podman's own tail leaves out a
			// last line without a newline ("echo -n DONE; false").
			rc, err := lr.ContainerLogs(ctx, r.Workload.UID, c.Name, LogOptions{})
			if err != nil {
				continue
			}
			tail, err = logTail(rc, fallbackLogLines, fallbackLogBytes)
			rc.Close()
			if err != nil {
				continue
			}
			a.hooks.mu.Lock()
			if a.hooks.tails == nil {
				a.hooks.tails = map[string]string{}
			}
			a.hooks.tails[key] = tail
			a.hooks.mu.Unlock()
		}
		if note.logTails == nil {
			note.logTails = map[string]string{}
		}
		note.logTails[c.Name] = tail
	}
}

// stopAppsFirst stops a pod's app containers before the rest when it has
// sidecars, so that sidecars outlive them as a kubelet keeps them; it
// returns how long that took.
func (a *Agent) stopAppsFirst(ctx context.Context, w *bridge.Workload, p *PodState, budget time.Duration) time.Duration {
	sidecars := false
	for _, c := range w.InitContainers {
		sidecars = sidecars || c.RestartPolicy == bridge.RestartAlways
	}
	st, ok := a.rt.(ContainerStopper)
	if !sidecars || !ok {
		return 0
	}
	start := time.Now()
	running := map[string]bool{}
	for _, c := range p.Containers {
		running[c.Name] = c.State == ContainerRunning
	}
	var wg sync.WaitGroup
	for _, c := range w.Containers {
		if !running[c.Name] {
			continue
		}
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			if err := st.StopContainer(ctx, w.UID, name, budget); err != nil {
				a.log.Warn("stopping a container before its sidecars", "pod", w.Namespace+"/"+w.Name, "container", name, "err", err)
			}
		}(c.Name)
	}
	wg.Wait()
	return time.Since(start)
}
