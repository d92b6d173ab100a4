package nodeagent_test

import (
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
	"github.com/vk-fleet/vk-fleet/nodeagent/simruntime"
)

// A pod runs until its activeDeadlineSeconds from its startTime, then its
// containers are stopped and it is Failed with reason DeadlineExceeded; a
// longer deadline given while it runs (a spec update) restarts nothing,
// and a shorter one ends it; after the deadline nothing starts it again,
// also across an agent restart.
func TestActiveDeadlineEndsThePod(t *testing.T) {
	f := startFleet(t, t.TempDir())
	rt := &simruntime.Runtime{}
	state := t.TempDir()
	stop := startAgent(t, f.srv.ClientURL(), "dev-a", state, rt)

	w := workload("u1", bridge.RestartAlways, "sleep", "3600")
	long := int64(3600)
	w.ActiveDeadlineSeconds = &long
	putWorkload(t, f, "dev-a", w)
	waitStatus(t, f, "dev-a", "u1", running)

	short := int64(1)
	w.ActiveDeadlineSeconds = &short
	w.Generation++
	putWorkload(t, f, "dev-a", w)
	waitStatus(t, f, "dev-a", "u1", func(s *bridge.PodStatus) bool {
		return s != nil && s.Phase == bridge.PhaseFailed && s.Reason == nodeagent.ReasonDeadlineExceeded &&
			s.Message != "" && len(s.Containers) == 1 && s.Containers[0].State == bridge.StateTerminated
	})
	if n := rt.Created(); n != 1 {
		t.Errorf("created %d pods, want 1: the deadline update recreated the pod", n)
	}

	// An agent restart does not bring it back.
	stop()
	startAgent(t, f.srv.ClientURL(), "dev-a", state, rt)
	waitStatus(t, f, "dev-a", "u1", func(s *bridge.PodStatus) bool {
		return s != nil && s.Phase == bridge.PhaseFailed && s.Reason == nodeagent.ReasonDeadlineExceeded
	})
	pods, err := rt.ListPods(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		for _, c := range p.Containers {
			if c.State == nodeagent.ContainerRunning {
				t.Errorf("container %s runs again after the deadline", c.Name)
			}
		}
	}
	if n := rt.Created(); n != 1 {
		t.Errorf("created %d pods, want 1", n)
	}
}

// An ephemeral container added to a running pod (kubectl debug) is started
// beside its containers without restarting any, reported in its own
// statuses, and never restarted when it exits.
func TestEphemeralContainerJoinsARunningPod(t *testing.T) {
	f := startFleet(t, t.TempDir())
	rt := &simruntime.Runtime{}
	startAgent(t, f.srv.ClientURL(), "dev-a", t.TempDir(), rt)

	w := workload("u1", bridge.RestartAlways, "sleep", "3600")
	putWorkload(t, f, "dev-a", w)
	var firstID string
	waitStatus(t, f, "dev-a", "u1", func(s *bridge.PodStatus) bool {
		if running(s) {
			firstID = s.Containers[0].ContainerID
		}
		return running(s)
	})

	w.EphemeralContainers = []bridge.Container{{Name: "debugger", Image: "busybox:v1", Command: []string{"sh"}, TTY: true, Stdin: true}}
	w.Generation++
	putWorkload(t, f, "dev-a", w)
	ephemeralIs := func(state string) func(*bridge.PodStatus) bool {
		return func(s *bridge.PodStatus) bool {
			return s != nil && len(s.EphemeralContainers) == 1 && s.EphemeralContainers[0].Name == "debugger" &&
				s.EphemeralContainers[0].State == state && !s.EphemeralContainers[0].Ready &&
				len(s.Containers) == 1 && s.Containers[0].State == bridge.StateRunning
		}
	}
	waitStatus(t, f, "dev-a", "u1", ephemeralIs(bridge.StateRunning))
	if n := rt.Created(); n != 1 {
		t.Errorf("created %d pods, want 1: adding an ephemeral container recreated the pod", n)
	}

	rt.ExitContainer("u1", "debugger", 0)
	waitStatus(t, f, "dev-a", "u1", ephemeralIs(bridge.StateTerminated))
	// It stays exited past the first restart back-off of an app container
	// (10 s) and three more reconcile passes: a restart would show as
	// running again.
	listed, exited := rt.Listed(), time.Now()
	waitStatusFor(t, f, "dev-a", "u1", 20*time.Second, func(s *bridge.PodStatus) bool {
		if !ephemeralIs(bridge.StateTerminated)(s) {
			t.Fatalf("the exited ephemeral container changed: %+v", s.EphemeralContainers)
		}
		return rt.Listed() >= listed+3 && time.Since(exited) > 11*time.Second
	})
	pods, _ := rt.ListPods(t.Context())
	if len(pods) != 1 || pods[0].Containers[0].ID != firstID && pods[0].Containers[1].ID != firstID {
		t.Errorf("the pod's container changed: %+v (first %s)", pods, firstID)
	}
}
