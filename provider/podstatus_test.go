package provider

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// An init container that ran to success is ready, as a kubelet reports it,
// even from a device that says otherwise; one that failed is not.
func TestCompletedInitContainerIsReady(t *testing.T) {
	p := testProvider(t)
	now := time.Now().UTC().Truncate(time.Second)
	pod := basePod()
	pod.Spec.InitContainers = []corev1.Container{{Name: "init1", Image: "i"}, {Name: "init2", Image: "i"}}
	initialized := true
	ent := &podEntry{pod: pod, status: &bridge.PodStatus{
		UID: "uid-1", Phase: bridge.PhaseRunning, StartTime: &now, Initialized: &initialized,
		InitContainers: []bridge.ContainerStatus{
			{Name: "init1", State: bridge.StateTerminated, Reason: "Completed", StartedAt: &now, FinishedAt: &now, ContainerID: "a"},
			{Name: "init2", State: bridge.StateTerminated, Reason: "Completed", StartedAt: &now, FinishedAt: &now, ContainerID: "b", Ready: true},
		},
		Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateRunning, StartedAt: &now, Ready: true, ContainerID: "c"}},
	}}
	st := p.podWithStatus(ent).Status
	for _, cs := range st.InitContainerStatuses {
		if !cs.Ready {
			t.Errorf("completed init container %s: ready false, want true", cs.Name)
		}
	}

	ent.status.Phase = bridge.PhaseFailed
	ent.status.Initialized = new(bool)
	ent.status.InitContainers[1] = bridge.ContainerStatus{Name: "init2", State: bridge.StateTerminated, Reason: "Error", ExitCode: 1, Ready: true}
	st = p.podWithStatus(ent).Status
	if cs := st.InitContainerStatuses[1]; cs.Ready {
		t.Errorf("failed init container %s: ready true, want false", cs.Name)
	}
}
