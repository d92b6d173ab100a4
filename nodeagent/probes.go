package nodeagent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// ContainerStopper is a Runtime that stops one container, giving it grace
// to exit: what a failed liveness or startup probe does before the restart
// policy applies.
type ContainerStopper interface {
	StopContainer(ctx context.Context, podUID, container string, grace time.Duration) error
}

// readiness answers what the probes say of a running container.
type readiness interface {
	// ready: the readiness probe succeeds (without one: the container has
	// started).
	ready(uid string, c *bridge.Container, containerID string) bool
	// started: the startup probe has succeeded (without one: true).
	started(uid string, c *bridge.Container, containerID string) bool
	// failure: what the failing probe said, or "".
	failure(uid, container, containerID string) string
}

// Probe kinds.
const (
	probeStartup   = "startup"
	probeReadiness = "readiness"
	probeLiveness  = "liveness"
)

// prober runs the containers' probes on the device, as a kubelet's prober
// manager does: one worker per probe of a running container instance, so
// probes keep working while the device is offline.
type prober struct {
	a *Agent

	mu      sync.Mutex
	workers map[string]*probeWorker // uid/container/kind → worker
	// results hold the current verdicts, by uid/container/kind, for the
	// instance they were taken on.
	results map[string]probeResult
}

type probeResult struct {
	instance string
	ok       bool
	// failure says what failed when ok is false.
	failure string
}

type probeWorker struct {
	instance string
	cancel   context.CancelFunc
}

func probeKey(uid, container, kind string) string { return uid + "/" + container + "/" + kind }

// eachRunning calls fn for every running container (init containers too)
// of the records' pods.
func eachRunning(records []Record, pods map[string]*PodState, fn func(w *bridge.Workload, c bridge.Container, rc ContainerState)) {
	for i := range records {
		w := &records[i].Workload
		p := pods[w.UID]
		if p == nil {
			continue
		}
		states := make(map[string]ContainerState, len(p.Containers))
		for _, c := range p.Containers {
			states[c.Name] = c
		}
		for _, c := range append(append([]bridge.Container(nil), w.InitContainers...), w.Containers...) {
			if rc, ok := states[c.Name]; ok && rc.State == ContainerRunning {
				fn(w, c, rc)
			}
		}
	}
}

// instanceOf names one run of a container: podman restarts containers in
// place, so the ID alone does not change.
func instanceOf(c *ContainerState) string {
	return c.ID + "@" + strconv.FormatInt(c.StartedAt.UnixNano(), 10)
}

// failure returns what the failing probe of container's current instance
// said, or "".
func (pr *prober) failure(uid, container, containerID string) string {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	for _, kind := range []string{probeLiveness, probeStartup, probeReadiness} {
		r, ok := pr.results[probeKey(uid, container, kind)]
		if ok && !r.ok && containerID != "" && strings.HasPrefix(r.instance, containerID+"@") {
			return r.failure
		}
	}
	return ""
}

// probeTitle is how a kubelet names a probe kind in its messages.
func probeTitle(kind string) string {
	return strings.ToUpper(kind[:1]) + kind[1:]
}

func (pr *prober) verdict(uid, container, kind, containerID string) (bool, bool) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	r, ok := pr.results[probeKey(uid, container, kind)]
	if !ok || containerID == "" || !strings.HasPrefix(r.instance, containerID+"@") {
		return false, false
	}
	return r.ok, true
}

func (pr *prober) started(uid string, c *bridge.Container, containerID string) bool {
	if !pr.a.postStartDone(uid, c, containerID) {
		return false
	}
	if c.Startup == nil {
		return true
	}
	ok, _ := pr.verdict(uid, c.Name, probeStartup, containerID)
	return ok
}

func (pr *prober) ready(uid string, c *bridge.Container, containerID string) bool {
	if !pr.started(uid, c, containerID) {
		return false
	}
	if c.Readiness == nil {
		return true
	}
	ok, _ := pr.verdict(uid, c.Name, probeReadiness, containerID)
	return ok
}

// sync starts a worker for every probe of every running container
// instance and stops the workers of instances that are gone.
func (pr *prober) sync(ctx context.Context, records []Record, pods map[string]*PodState) {
	want := map[string]probeWorker{}
	type job struct {
		key, kind, uid string
		c              bridge.Container
		rc             ContainerState
	}
	var jobs []job
	eachRunning(records, pods, func(w *bridge.Workload, c bridge.Container, rc ContainerState) {
		for kind, probe := range map[string]*bridge.Probe{probeStartup: c.Startup, probeReadiness: c.Readiness, probeLiveness: c.Liveness} {
			if probe == nil {
				continue
			}
			key := probeKey(w.UID, c.Name, kind)
			want[key] = probeWorker{instance: instanceOf(&rc)}
			jobs = append(jobs, job{key: key, kind: kind, uid: w.UID, c: c, rc: rc})
		}
	})
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.workers == nil {
		pr.workers, pr.results = map[string]*probeWorker{}, map[string]probeResult{}
	}
	for key, wk := range pr.workers {
		if want[key].instance != wk.instance {
			wk.cancel()
			delete(pr.workers, key)
		}
	}
	for key, r := range pr.results {
		if want[key].instance != r.instance {
			delete(pr.results, key)
		}
	}
	for _, j := range jobs {
		if _, running := pr.workers[j.key]; running {
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		inst := instanceOf(&j.rc)
		pr.workers[j.key] = &probeWorker{instance: inst, cancel: cancel}
		go pr.run(wctx, j.key, j.kind, j.uid, j.c, j.rc, inst)
	}
}

// run probes one container instance until ctx ends, applying the
// thresholds, and acts on the verdicts.
func (pr *prober) run(ctx context.Context, key, kind, uid string, c bridge.Container, rc ContainerState, inst string) {
	probe := map[string]*bridge.Probe{probeStartup: c.Startup, probeReadiness: c.Readiness, probeLiveness: c.Liveness}[kind]
	period := time.Duration(max(probe.PeriodSeconds, 1)) * time.Second
	timeout := time.Duration(max(probe.TimeoutSeconds, 1)) * time.Second
	success, failure := int(max(probe.SuccessThreshold, 1)), int(max(probe.FailureThreshold, 1))
	start := rc.StartedAt.Add(time.Duration(probe.InitialDelaySeconds) * time.Second)
	if d := time.Until(start); d > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
	var oks, fails int
	verdict, decided := false, false
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		if kind != probeStartup {
			// Readiness and liveness wait for the startup probe.
			if c.Startup != nil && !pr.started(uid, &c, rc.ID) {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					continue
				}
			}
		}
		err := pr.probeOnce(ctx, uid, c.Name, probe, timeout)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrNotStarted) {
			// The runtime's failure, not the container's: as kubelet,
			// count neither.
			pr.a.log.Debug("probe not run", "uid", uid, "container", c.Name, "probe", kind, "err", err)
		} else if err == nil {
			oks, fails = oks+1, 0
		} else {
			oks, fails = 0, fails+1
			pr.a.log.Debug("probe failed", "uid", uid, "container", c.Name, "probe", kind, "err", err)
		}
		switch {
		case oks >= success && (!decided || !verdict):
			verdict, decided = true, true
			pr.set(key, inst, true, "")
			if kind == probeStartup {
				return // succeeded once: done for this instance
			}
		case fails >= failure && (!decided || verdict):
			verdict, decided = false, true
			pr.set(key, inst, false, fmt.Sprintf("%s probe failed: %v", probeTitle(kind), err))
			if kind == probeLiveness || kind == probeStartup {
				pr.a.log.Info("probe failed; stopping the container for its restart policy",
					"uid", uid, "container", c.Name, "probe", kind, "failures", fails, "err", err)
				pr.kill(ctx, uid, c.Name)
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (pr *prober) set(key, inst string, ok bool, failure string) {
	pr.mu.Lock()
	pr.results[key] = probeResult{instance: inst, ok: ok, failure: failure}
	pr.mu.Unlock()
	pr.a.kick()
}

func (pr *prober) kill(ctx context.Context, uid, container string) {
	st, ok := pr.a.rt.(ContainerStopper)
	if !ok {
		pr.a.log.Warn("this runtime cannot stop a container for a failed probe", "uid", uid, "container", container)
		return
	}
	g := defaultGrace
	if rec, ok := pr.a.store.Get(uid); ok {
		g = grace(&rec.Workload)
	}
	if err := st.StopContainer(ctx, uid, container, g); err != nil {
		pr.a.log.Warn("stopping a container for a failed probe", "uid", uid, "container", container, "err", err)
	}
	pr.a.kick()
}

// probeRuntimeAllowance is the time the runtime has to start an exec
// probe's command (find the container, create the session), beyond the
// probe's timeout, which counts from the command's start. On a device
// whose podman is slow under load, a probe with a 1 s timeout would
// otherwise fail while the container is healthy, and liveness would
// restart it.
const probeRuntimeAllowance = 30 * time.Second

// probeOnce runs probe once with timeout; nil is success, an error
// wrapping ErrNotStarted neither success nor failure.
func (pr *prober) probeOnce(ctx context.Context, uid, container string, p *bridge.Probe, timeout time.Duration) error {
	if len(p.Exec) > 0 {
		ex, ok := pr.a.rt.(Execer)
		if !ok {
			return fmt.Errorf("%w: exec probes", ErrUnsupported)
		}
		return execProbe(ctx, ex, uid, container, p.Exec, timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.TCPPort > 0:
		conn, err := pr.dial(ctx, uid, p.TCPPort)
		if err != nil {
			return err
		}
		return conn.Close()
	case p.HTTPGet != nil:
		return pr.httpGet(ctx, uid, p.HTTPGet)
	case p.GRPC != nil:
		return pr.grpcCheck(ctx, uid, p.GRPC)
	}
	return errors.New("probe has no handler")
}

// execProbe runs cmd in the container, timing it from its start, and
// fails when it exits non-zero or runs longer than timeout.
func execProbe(ctx context.Context, ex Execer, uid, container string, cmd []string, timeout time.Duration) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timedOut := fmt.Errorf("command timed out after %s", timeout)
	var mu sync.Mutex
	t := time.AfterFunc(timeout+probeRuntimeAllowance, func() {
		cancel(fmt.Errorf("%w: the runtime did not start the command within %s", ErrNotStarted, timeout+probeRuntimeAllowance))
	})
	started := func() {
		mu.Lock()
		defer mu.Unlock()
		if t.Stop() {
			t = time.AfterFunc(timeout, func() { cancel(timedOut) })
		}
	}
	defer func() {
		mu.Lock()
		t.Stop()
		mu.Unlock()
	}()
	code, err := ex.Exec(ctx, uid, container, cmd, StreamIO{Stdout: io.Discard, Stderr: io.Discard, Started: started})
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("command exited with %d", code)
	}
	return nil
}

func (pr *prober) dial(ctx context.Context, uid string, port int32) (net.Conn, error) {
	d, ok := pr.a.rt.(PodDialer)
	if !ok {
		return nil, fmt.Errorf("%w: network probes", ErrUnsupported)
	}
	return d.DialPod(ctx, uid, port)
}

// httpGet probes as kubelet does: a GET inside the pod's network
// namespace; 200–399 succeeds; HTTPS certificates are not verified.
func (pr *prober) httpGet(ctx context.Context, uid string, h *bridge.HTTPProbe) error {
	scheme := "http"
	if h.Scheme == "HTTPS" {
		scheme = "https"
	}
	host := h.Host
	if host == "" {
		host = "127.0.0.1"
	}
	path := h.Path
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	url := scheme + "://" + net.JoinHostPort(host, strconv.Itoa(int(h.Port))) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "kube-probe/vk-fleet")
	for k, v := range h.Headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	tr := &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return pr.dial(ctx, uid, h.Port) },
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as kubelet's probes
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
	}
	return nil
}

// grpcCheck probes as kubelet does: the grpc.health.v1 Check of the
// service, over plain text, inside the pod; SERVING succeeds.
func (pr *prober) grpcCheck(ctx context.Context, uid string, g *bridge.GRPCProbe) error {
	conn, err := grpc.NewClient("passthrough:///pod",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return pr.dial(ctx, uid, g.Port) }))
	if err != nil {
		return fmt.Errorf("grpc probe: %w", err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: g.Service})
	if err != nil {
		return fmt.Errorf("grpc probe: %w", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("grpc probe: service unhealthy (responded with %q)", resp.GetStatus())
	}
	return nil
}
