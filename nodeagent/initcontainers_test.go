package nodeagent_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent/simruntime"
)

// startLog records the order in which containers start.
type startLog struct {
	mu    sync.Mutex
	order []string
}

func (l *startLog) add(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.order = append(l.order, name)
}

func (l *startLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.order...)
}

// Init containers run one after the other, each to success, before the
// app containers start; a sidecar starts before them and keeps running.
// An init container that succeeded is ready, as a kubelet reports it.
func TestInitContainersRunInOrderBeforeTheApp(t *testing.T) {
	f := startFleet(t, t.TempDir())
	var log startLog
	rt := &simruntime.Runtime{OnStart: func(_, container string) (int32, bool) {
		log.add(container)
		switch container {
		case "first", "second":
			return 0, true // done at once
		}
		return 0, false // keeps running
	}}
	startAgent(t, f.srv.ClientURL(), "dev-a", t.TempDir(), rt)
	w := workload("u1", bridge.RestartAlways)
	w.InitContainers = []bridge.Container{
		{Name: "first", Image: "busybox:v1"},
		{Name: "proxy", Image: "busybox:v1", RestartPolicy: bridge.RestartAlways},
		{Name: "second", Image: "busybox:v1"},
	}
	putWorkload(t, f, "dev-a", w)
	waitStatus(t, f, "dev-a", "u1", func(s *bridge.PodStatus) bool {
		if !running(s) || len(s.InitContainers) != 3 || len(s.Containers) != 1 {
			return false
		}
		first, proxy, second := s.InitContainers[0], s.InitContainers[1], s.InitContainers[2]
		return first.State == bridge.StateTerminated && first.Reason == "Completed" && first.Ready &&
			proxy.State == bridge.StateRunning && proxy.Ready &&
			second.State == bridge.StateTerminated && second.Ready && s.Containers[0].State == bridge.StateRunning && s.Containers[0].Ready
	})
	if got := log.get(); len(got) != 4 || got[0] != "first" || got[1] != "proxy" || got[2] != "second" || got[3] != "main" {
		t.Fatalf("start order %v, want [first proxy second main]", got)
	}
}

// With restartPolicy Never, a failed init container fails the pod, and the
// app never starts (kubectl shows Init:Error).
func TestFailedInitContainerFailsANeverRestartPod(t *testing.T) {
	f := startFleet(t, t.TempDir())
	var log startLog
	rt := &simruntime.Runtime{OnStart: func(_, container string) (int32, bool) {
		log.add(container)
		if container == "check" {
			return 3, true
		}
		return 0, false
	}}
	startAgent(t, f.srv.ClientURL(), "dev-a", t.TempDir(), rt)
	w := workload("u1", bridge.RestartNever)
	w.InitContainers = []bridge.Container{{Name: "check", Image: "busybox:v1"}}
	putWorkload(t, f, "dev-a", w)
	waitStatus(t, f, "dev-a", "u1", func(s *bridge.PodStatus) bool {
		return s != nil && s.Phase == bridge.PhaseFailed && len(s.InitContainers) == 1 &&
			s.InitContainers[0].State == bridge.StateTerminated && s.InitContainers[0].ExitCode == 3 && !s.InitContainers[0].Ready &&
			s.Containers[0].State == bridge.StateWaiting && s.Containers[0].Reason == "PodInitializing"
	})
	for _, c := range log.get() {
		if c == "main" {
			t.Fatal("the app container started after its init container failed")
		}
	}
}

// Probes run on the device: a failing readiness probe keeps the container
// unready (and the pod Running), a passing one makes it ready; a failing
// liveness probe stops the container for its restart policy.
func TestProbesDecideReadinessAndLiveness(t *testing.T) {
	f := startFleet(t, t.TempDir())
	rt := &simruntime.Runtime{}
	startAgent(t, f.srv.ClientURL(), "dev-a", t.TempDir(), rt)
	probe := func(cmd ...string) *bridge.Probe {
		return &bridge.Probe{Exec: cmd, PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1}
	}
	w := workload("u1", bridge.RestartAlways)
	w.Containers = append(w.Containers, bridge.Container{Name: "good", Image: "busybox:v1", Readiness: probe("exit", "0")})
	w.Containers[0].Readiness = probe("exit", "1")
	putWorkload(t, f, "dev-a", w)
	waitStatus(t, f, "dev-a", "u1", func(s *bridge.PodStatus) bool {
		return running(s) && len(s.Containers) == 2 && !s.Containers[0].Ready && s.Containers[1].Ready &&
			s.Containers[0].State == bridge.StateRunning
	})

	l := workload("u2", bridge.RestartAlways)
	l.Containers[0].Liveness = probe("exit", "1")
	putWorkload(t, f, "dev-a", l)
	waitStatus(t, f, "dev-a", "u2", func(s *bridge.PodStatus) bool {
		// Stopped (137) and waiting in back-off for its restart.
		return s != nil && len(s.Containers) == 1 && s.Containers[0].LastTermination != nil &&
			s.Containers[0].LastTermination.ExitCode == 137
	})
}

// gRPC probes speak grpc.health.v1 to the pod's port: SERVING is ready,
// NOT_SERVING is not.
func TestGRPCProbes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("up", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("down", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

	f := startFleet(t, t.TempDir())
	rt := &simruntime.Runtime{Dial: func(ctx context.Context, port int32) (net.Conn, error) {
		if port != 9090 {
			return nil, fmt.Errorf("nothing listens on %d", port)
		}
		return (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
	}}
	startAgent(t, f.srv.ClientURL(), "dev-a", t.TempDir(), rt)
	probe := func(service string) *bridge.Probe {
		return &bridge.Probe{GRPC: &bridge.GRPCProbe{Port: 9090, Service: service}, PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1}
	}
	w := workload("u1", bridge.RestartAlways)
	w.Containers[0].Readiness = probe("up")
	w.Containers = append(w.Containers, bridge.Container{Name: "other", Image: "busybox:v1", Readiness: probe("down")})
	putWorkload(t, f, "dev-a", w)
	waitStatus(t, f, "dev-a", "u1", func(s *bridge.PodStatus) bool {
		return running(s) && len(s.Containers) == 2 && s.Containers[0].Ready && !s.Containers[1].Ready
	})
}
