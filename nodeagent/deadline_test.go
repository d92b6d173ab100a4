package nodeagent_test

import (
	"testing"

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
