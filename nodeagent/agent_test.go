package nodeagent_test

import (
	"context"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/internal/natsd"
	"github.com/vk-fleet/vk-fleet/nodeagent"
	"github.com/vk-fleet/vk-fleet/nodeagent/simruntime"
)

// fleet is a real embedded nats-server with the buckets the provider creates.
type fleet struct {
	srv       *natsd.Server
	nc        *nats.Conn
	workloads jetstream.KeyValue
	status    jetstream.KeyValue
}

func startFleet(t *testing.T, storeDir string) *fleet {
	t.Helper()
	f := &fleet{}
	f.open(t, "127.0.0.1:-1", storeDir)
	return f
}

// open starts f's server on listen with storeDir, connects to it and
// creates the buckets (or opens them, when the store has them).
func (f *fleet) open(t *testing.T, listen, storeDir string) {
	t.Helper()
	srv, err := natsd.Start(t.Context(), natsd.Config{Listen: listen, StoreDir: storeDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	f.srv, f.nc = srv, nc
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{bridge.WorkloadsBucket, &f.workloads}, {bridge.StatusBucket, &f.status}} {
		kv, err := js.CreateOrUpdateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: b.name, History: 1, Storage: jetstream.FileStorage})
		if err != nil {
			t.Fatal(err)
		}
		*b.kv = kv
	}
}

func startAgent(t *testing.T, url, device, stateDir string, rt nodeagent.Runtime) context.CancelFunc {
	t.Helper()
	nc, err := nats.Connect(url, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	a, err := nodeagent.New(nodeagent.Config{
		Device: device, StateDir: stateDir, HeartbeatInterval: 200 * time.Millisecond,
		ResyncInterval: time.Second, Addresses: []string{"127.0.0.1"},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}, rt, nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(ctx)
	}()
	stop := func() {
		cancel()
		<-done
		nc.Close()
	}
	t.Cleanup(stop)
	return stop
}

func workload(uid string, restart string, cmd ...string) *bridge.Workload {
	return &bridge.Workload{
		UID: uid, Namespace: "default", Name: "pod-" + uid, RestartPolicy: restart,
		Containers: []bridge.Container{{Name: "main", Image: "busybox:v1", Command: cmd}},
	}
}

func putWorkload(t *testing.T, f *fleet, device string, w *bridge.Workload) {
	t.Helper()
	data, err := bridge.Encode(w)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.workloads.Put(t.Context(), bridge.PodKey(device, w.UID), data); err != nil {
		t.Fatal(err)
	}
}

// waitStatus polls the status bucket until cond holds for the pod's status
// (nil when the key is absent).
func waitStatus(t *testing.T, f *fleet, device, uid string, cond func(*bridge.PodStatus) bool) {
	t.Helper()
	waitStatusFor(t, f, device, uid, 15*time.Second, cond)
}

// waitStatusFor is waitStatus with a deadline of its own.
func waitStatusFor(t *testing.T, f *fleet, device, uid string, timeout time.Duration, cond func(*bridge.PodStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *bridge.PodStatus
	for time.Now().Before(deadline) {
		last = nil
		e, err := f.status.Get(t.Context(), bridge.PodKey(device, uid))
		if err == nil {
			last, _ = bridge.Decode[bridge.PodStatus](e.Value())
		}
		if cond(last) {
			return
		}
		select {
		case <-t.Context().Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("status of %s/%s did not reach the expected state; last: %+v", device, uid, last)
}

func running(s *bridge.PodStatus) bool { return s != nil && s.Phase == bridge.PhaseRunning }

func TestAgentRunsAndRemovesWorkloads(t *testing.T) {
	f := startFleet(t, t.TempDir())
	rt := &simruntime.Runtime{}
	startAgent(t, f.srv.ClientURL(), "dev-a", t.TempDir(), rt)

	putWorkload(t, f, "dev-a", workload("u1", bridge.RestartAlways, "sleep", "3600"))
	waitStatus(t, f, "dev-a", "u1", running)

	// Another device's workload is none of dev-a's business.
	putWorkload(t, f, "dev-b", workload("u2", bridge.RestartAlways))
	if err := f.workloads.Delete(t.Context(), bridge.PodKey("dev-a", "u1")); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, f, "dev-a", "u1", func(s *bridge.PodStatus) bool { return s == nil })
	pods, _ := rt.ListPods(t.Context())
	if len(pods) != 0 {
		t.Fatalf("runtime still holds %d pods: %+v", len(pods), pods)
	}
	if rt.Created() != 1 {
		t.Fatalf("created %d pods, want 1 (dev-b's workload must not run on dev-a)", rt.Created())
	}
}

func TestAgentReportsExitCodeWithRestartNever(t *testing.T) {
	f := startFleet(t, t.TempDir())
	rt := &simruntime.Runtime{Exit: func(*bridge.Workload, string) (int32, bool) { return 3, true }}
	startAgent(t, f.srv.ClientURL(), "dev-a", t.TempDir(), rt)
	putWorkload(t, f, "dev-a", workload("u1", bridge.RestartNever))
	waitStatus(t, f, "dev-a", "u1", func(s *bridge.PodStatus) bool {
		return s != nil && s.Phase == bridge.PhaseFailed && len(s.Containers) == 1 &&
			s.Containers[0].State == bridge.StateTerminated && s.Containers[0].ExitCode == 3 && s.Containers[0].Reason == "Error"
	})
}

func TestAgentBacksOffCrashingContainer(t *testing.T) {
	f := startFleet(t, t.TempDir())
	rt := &simruntime.Runtime{Exit: func(*bridge.Workload, string) (int32, bool) { return 1, true }}
	startAgent(t, f.srv.ClientURL(), "dev-a", t.TempDir(), rt)
	putWorkload(t, f, "dev-a", workload("u1", bridge.RestartAlways))
	waitStatus(t, f, "dev-a", "u1", func(s *bridge.PodStatus) bool {
		return s != nil && len(s.Containers) == 1 && s.Containers[0].State == bridge.StateWaiting &&
			s.Containers[0].Reason == "CrashLoopBackOff" && s.Containers[0].LastTermination != nil &&
			s.Containers[0].LastTermination.ExitCode == 1
	})
}

func TestAgentReportsMissingImage(t *testing.T) {
	f := startFleet(t, t.TempDir())
	rt := &simruntime.Runtime{Images: map[string]bool{}}
	startAgent(t, f.srv.ClientURL(), "dev-a", t.TempDir(), rt)
	w := workload("u1", bridge.RestartAlways)
	w.Containers[0].ImagePullPolicy = bridge.PullNever
	putWorkload(t, f, "dev-a", w)
	waitStatus(t, f, "dev-a", "u1", func(s *bridge.PodStatus) bool {
		return s != nil && s.Phase == bridge.PhasePending && len(s.Containers) == 1 &&
			s.Containers[0].Reason == nodeagent.ReasonErrImageNeverPull
	})
}

// An agent restart converges without recreating what runs.
func TestAgentRestartKeepsRunningPods(t *testing.T) {
	f := startFleet(t, t.TempDir())
	rt := &simruntime.Runtime{}
	state := t.TempDir()
	stop := startAgent(t, f.srv.ClientURL(), "dev-a", state, rt)
	putWorkload(t, f, "dev-a", workload("u1", bridge.RestartAlways))
	waitStatus(t, f, "dev-a", "u1", running)
	stop()
	startAgent(t, f.srv.ClientURL(), "dev-a", state, rt)
	// The new agent has re-published its status (ObservedAt moves on).
	before := time.Now()
	waitStatus(t, f, "dev-a", "u1", func(s *bridge.PodStatus) bool { return running(s) && s.ObservedAt.After(before) })
	if rt.Created() != 1 {
		t.Fatalf("pods created = %d, want 1: the restart recreated a running pod", rt.Created())
	}
}

// A device rebooted while offline restores its pods from its own store, and
// a workload deleted while it was away is removed when it reconnects.
func TestAgentRebootWhileOffline(t *testing.T) {
	storeDir := t.TempDir()
	f := startFleet(t, storeDir)
	url := f.srv.ClientURL()
	state := t.TempDir()
	stop := startAgent(t, url, "dev-a", state, &simruntime.Runtime{})
	putWorkload(t, f, "dev-a", workload("keep", bridge.RestartAlways))
	putWorkload(t, f, "dev-a", workload("drop", bridge.RestartAlways))
	waitStatus(t, f, "dev-a", "keep", running)
	waitStatus(t, f, "dev-a", "drop", running)
	stop()

	// While the device is away, "drop" is withdrawn; then NATS goes down.
	if err := f.workloads.Delete(t.Context(), bridge.PodKey("dev-a", "drop")); err != nil {
		t.Fatal(err)
	}
	f.srv.Shutdown()

	// Reboot: an empty runtime, no NATS.
	rebooted := &simruntime.Runtime{}
	startAgent(t, url, "dev-a", state, rebooted)
	poll(t, 10*time.Second, "pods restored offline", func() bool { return rebooted.Created() == 2 })

	// NATS returns on the same port and store: the delete is applied.
	f.open(t, hostPort(t, url), storeDir)
	waitStatus(t, f, "dev-a", "drop", func(s *bridge.PodStatus) bool { return s == nil })
	waitStatus(t, f, "dev-a", "keep", running)
	pods, _ := rebooted.ListPods(t.Context())
	if len(pods) != 1 || pods[0].UID != "keep" {
		t.Fatalf("pods after reconnect = %+v, want only keep", pods)
	}
	if _, err := os.Stat(filepath.Join(state, "workloads", "drop.json")); !os.IsNotExist(err) {
		t.Fatalf("local store still holds the withdrawn workload: %v", err)
	}
}

func hostPort(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// poll waits until cond holds, failing t after timeout.
func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}
