// Package simruntime is an in-memory nodeagent.Runtime: containers "run" the
// moment they are created and keep running until told otherwise. It lets the
// real agent loop run without podman, for tests and for simulated fleets.
package simruntime

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// Runtime is an in-memory runtime. The zero value is ready to use.
type Runtime struct {
	// Images lists the images that exist locally; nil means every image does.
	Images map[string]bool
	// Exit, if set, decides a container's fate at start: return ok=false to
	// keep it running, or ok=true and an exit code to make it exit at once.
	Exit func(w *bridge.Workload, container string) (code int32, ok bool)
	// OnStart, if set, decides a container's fate when StartContainer
	// starts it, as Exit does at creation.
	OnStart func(podUID, container string) (code int32, ok bool)
	// Dial, if set, is where DialPod connects (a pod's port).
	Dial func(ctx context.Context, port int32) (net.Conn, error)
	// Pull, if set, returns a channel that a pod's creation waits on (a
	// slow image pull) until it closes or the creation's context ends; nil
	// does not wait.
	Pull func(w *bridge.Workload) <-chan struct{}
	// Log, if set, is every container's log.
	Log []byte

	mu      sync.Mutex
	pods    map[string]*nodeagent.PodState
	subs    []chan nodeagent.Event
	nextID  atomic.Uint64
	created atomic.Int64
	removed atomic.Int64
	listed  atomic.Int64
	down    bool
}

var _ nodeagent.Runtime = (*Runtime)(nil)

// Version reports a fake podman version.
func (r *Runtime) Version(context.Context) (string, error) {
	if err := r.check(); err != nil {
		return "", err
	}
	return "sim-5.0.0", nil
}

// SetDown makes every call fail with nodeagent.ErrRuntimeUnavailable.
func (r *Runtime) SetDown(down bool) {
	r.mu.Lock()
	r.down = down
	r.mu.Unlock()
}

func (r *Runtime) check() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return fmt.Errorf("simulated: %w", nodeagent.ErrRuntimeUnavailable)
	}
	return nil
}

// Created counts the pods created so far.
func (r *Runtime) Created() int64 { return r.created.Load() }

// Removed returns the number of pods removed.
func (r *Runtime) Removed() int64 { return r.removed.Load() }

// Has reports whether pod uid exists, without counting as a ListPods call.
func (r *Runtime) Has(uid string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pods[uid] != nil
}

// Listed returns how many times ListPods was called.
func (r *Runtime) Listed() int64 { return r.listed.Load() }

// ListPods returns copies of every pod.
func (r *Runtime) ListPods(context.Context) ([]nodeagent.PodState, error) {
	r.listed.Add(1)
	if err := r.check(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]nodeagent.PodState, 0, len(r.pods))
	for _, p := range r.pods {
		c := *p
		c.Containers = append([]nodeagent.ContainerState(nil), p.Containers...)
		out = append(out, c)
	}
	return out, nil
}

// CreatePod "runs" w's containers.
func (r *Runtime) CreatePod(ctx context.Context, w *bridge.Workload, specHash string) error {
	if err := r.check(); err != nil {
		return err
	}
	if r.Pull != nil {
		if ch := r.Pull(w); ch != nil {
			select {
			case <-ch:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	for _, c := range append(slices.Clone(w.InitContainers), w.Containers...) {
		if r.Images != nil && !r.Images[c.Image] {
			reason := nodeagent.ReasonErrImagePull
			if c.ImagePullPolicy == bridge.PullNever {
				reason = nodeagent.ReasonErrImageNeverPull
			}
			return &nodeagent.ContainerError{Container: c.Name, Reason: reason, Err: fmt.Errorf("image %q not found", c.Image)}
		}
	}
	now := time.Now()
	p := &nodeagent.PodState{UID: w.UID, Namespace: w.Namespace, Name: w.Name, SpecHash: specHash, PodIP: "10.89.0." + strconv.Itoa(int(r.nextID.Add(1)%250)+1)}
	for _, c := range append(slices.Clone(w.InitContainers), w.Containers...) {
		cs := nodeagent.ContainerState{
			Name: c.Name, ID: fmt.Sprintf("sim%012d", r.nextID.Add(1)), Image: c.Image, ImageID: "sha256:sim",
			State: nodeagent.ContainerRunning, StartedAt: now,
		}
		if len(w.InitContainers) > 0 {
			// As podman's: with init containers, nothing starts at creation;
			// the agent starts them in order.
			cs.State, cs.StartedAt = nodeagent.ContainerCreated, time.Time{}
			p.Containers = append(p.Containers, cs)
			continue
		}
		if r.Exit != nil {
			if code, ok := r.Exit(w, c.Name); ok {
				cs.State, cs.ExitCode, cs.FinishedAt = nodeagent.ContainerExited, code, now
			}
		}
		p.Containers = append(p.Containers, cs)
	}
	r.mu.Lock()
	if r.pods == nil {
		r.pods = map[string]*nodeagent.PodState{}
	}
	r.pods[w.UID] = p
	r.mu.Unlock()
	r.created.Add(1)
	r.emit(w.UID)
	return nil
}

// StartContainer runs a created or exited container (again); OnStart, if
// set, decides its fate.
func (r *Runtime) StartContainer(_ context.Context, podUID, container string) error {
	if err := r.check(); err != nil {
		return err
	}
	r.mu.Lock()
	p := r.pods[podUID]
	found := false
	if p != nil {
		for i := range p.Containers {
			if p.Containers[i].Name == container {
				now := time.Now()
				p.Containers[i].State = nodeagent.ContainerRunning
				p.Containers[i].StartedAt = now
				if r.OnStart != nil {
					if code, ok := r.OnStart(podUID, container); ok {
						p.Containers[i].State, p.Containers[i].ExitCode, p.Containers[i].FinishedAt = nodeagent.ContainerExited, code, now
					}
				}
				found = true
			}
		}
	}
	r.mu.Unlock()
	if !found {
		return fmt.Errorf("container %s of pod %s not found", container, podUID)
	}
	r.emit(podUID)
	return nil
}

// ExitContainer makes a running container exit with code, as if its
// process ended.
func (r *Runtime) ExitContainer(podUID, container string, code int32) {
	r.mu.Lock()
	if p := r.pods[podUID]; p != nil {
		for i := range p.Containers {
			if p.Containers[i].Name == container {
				p.Containers[i].State = nodeagent.ContainerExited
				p.Containers[i].ExitCode = code
				p.Containers[i].FinishedAt = time.Now()
			}
		}
	}
	r.mu.Unlock()
	r.emit(podUID)
}

// RemovePod forgets the pod.
func (r *Runtime) RemovePod(_ context.Context, podUID string, _ time.Duration) error {
	if err := r.check(); err != nil {
		return err
	}
	r.mu.Lock()
	_, ok := r.pods[podUID]
	delete(r.pods, podUID)
	r.mu.Unlock()
	if ok {
		r.removed.Add(1)
		r.emit(podUID)
	}
	return nil
}

// Events streams pod changes until ctx ends.
func (r *Runtime) Events(ctx context.Context) (<-chan nodeagent.Event, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	ch := make(chan nodeagent.Event, 64)
	r.mu.Lock()
	r.subs = append(r.subs, ch)
	r.mu.Unlock()
	go func() {
		<-ctx.Done()
		r.mu.Lock()
		for i, s := range r.subs {
			if s == ch {
				r.subs = append(r.subs[:i], r.subs[i+1:]...)
				break
			}
		}
		r.mu.Unlock()
		close(ch)
	}()
	return ch, nil
}

func (r *Runtime) emit(uid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.subs {
		select {
		case s <- nodeagent.Event{PodUID: uid}:
		default: // the reader's periodic resync catches up
		}
	}
}

var _ nodeagent.LogReader = (*Runtime)(nil)

// ContainerLogs returns Log for a container that exists.
func (r *Runtime) ContainerLogs(_ context.Context, podUID, container string, _ nodeagent.LogOptions) (io.ReadCloser, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.pods[podUID]; p != nil {
		for _, c := range p.Containers {
			if c.Name == container {
				return io.NopCloser(bytes.NewReader(r.Log)), nil
			}
		}
	}
	return nil, fmt.Errorf("%w: %s/%s", nodeagent.ErrNoContainer, podUID, container)
}

var (
	_ nodeagent.Execer      = (*Runtime)(nil)
	_ nodeagent.PodDialer   = (*Runtime)(nil)
	_ nodeagent.StatsReader = (*Runtime)(nil)
)

func (r *Runtime) hasContainer(podUID, container string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.pods[podUID]; p != nil {
		for _, c := range p.Containers {
			if c.Name == container {
				return true
			}
		}
	}
	return false
}

// Exec simulates a few commands: "cat" copies stdin to stdout, "exit N"
// exits with N, anything else prints its arguments, as echo does.
func (r *Runtime) Exec(ctx context.Context, podUID, container string, cmd []string, sio nodeagent.StreamIO) (int, error) {
	if !r.hasContainer(podUID, container) {
		return 0, fmt.Errorf("%w: %w: %s/%s", nodeagent.ErrNotStarted, nodeagent.ErrNoContainer, podUID, container)
	}
	if sio.Started != nil {
		sio.Started()
	}
	switch {
	case len(cmd) == 1 && cmd[0] == "cat":
		if sio.Stdin == nil || sio.Stdout == nil {
			return 0, nil
		}
		_, err := io.Copy(sio.Stdout, sio.Stdin)
		return 0, err
	case len(cmd) == 2 && cmd[0] == "exit":
		var code int
		_, err := fmt.Sscan(cmd[1], &code)
		return code, err
	}
	if sio.Stdout != nil {
		_, err := io.WriteString(sio.Stdout, strings.Join(cmd[1:], " ")+"\n")
		return 0, err
	}
	return 0, nil
}

// DialPod connects to Dial's connection if set, else to an echo server:
// what is written comes back.
func (r *Runtime) DialPod(ctx context.Context, podUID string, port int32) (net.Conn, error) {
	if !r.Has(podUID) {
		return nil, fmt.Errorf("%w: pod %s", nodeagent.ErrNoContainer, podUID)
	}
	if r.Dial != nil {
		return r.Dial(ctx, port)
	}
	client, server := net.Pipe()
	go func() {
		defer server.Close()
		_, _ = io.Copy(server, server)
	}()
	return client, nil
}

// PodStats reports every container as having used one millisecond of CPU
// per second since it started, and 8 MiB of memory.
func (r *Runtime) PodStats(context.Context) ([]nodeagent.PodStats, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	var out []nodeagent.PodStats
	for _, p := range r.pods {
		ps := nodeagent.PodStats{UID: p.UID, Namespace: p.Namespace, Name: p.Name}
		for _, c := range p.Containers {
			if c.State != nodeagent.ContainerRunning {
				continue
			}
			ps.Containers = append(ps.Containers, nodeagent.ContainerStats{Name: c.Name, StartedAt: c.StartedAt, Time: now,
				CPUNanos: uint64(now.Sub(c.StartedAt) / time.Second * time.Millisecond), MemoryWorkingSetBytes: 8 << 20, MemoryUsageBytes: 8 << 20})
		}
		out = append(out, ps)
	}
	return out, nil
}

var _ nodeagent.ContainerStopper = (*Runtime)(nil)

// StopContainer makes a running container exit as a SIGKILL would (137).
func (r *Runtime) StopContainer(_ context.Context, podUID, container string, _ time.Duration) error {
	if !r.hasContainer(podUID, container) {
		return fmt.Errorf("%w: %s/%s", nodeagent.ErrNoContainer, podUID, container)
	}
	r.ExitContainer(podUID, container, 137)
	return nil
}

var _ nodeagent.EphemeralStarter = (*Runtime)(nil)

// StartEphemeral adds ephemeral container c to w's pod, running.
func (r *Runtime) StartEphemeral(_ context.Context, w *bridge.Workload, c *bridge.Container) error {
	if err := r.check(); err != nil {
		return err
	}
	if r.Images != nil && !r.Images[c.Image] {
		return &nodeagent.ContainerError{Container: c.Name, Reason: nodeagent.ReasonErrImagePull, Err: fmt.Errorf("image %q not found", c.Image)}
	}
	r.mu.Lock()
	p := r.pods[w.UID]
	if p == nil {
		r.mu.Unlock()
		return fmt.Errorf("%w: pod %s", nodeagent.ErrNoContainer, w.UID)
	}
	p.Containers = append(p.Containers, nodeagent.ContainerState{
		Name: c.Name, ID: fmt.Sprintf("sim%012d", r.nextID.Add(1)), Image: c.Image, ImageID: "sha256:sim",
		State: nodeagent.ContainerRunning, StartedAt: time.Now(),
	})
	r.mu.Unlock()
	r.emit(w.UID)
	return nil
}
