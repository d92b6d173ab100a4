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

// The conditions say why they are False as a kubelet says it
// (pkg/kubelet/status/generate.go): which init containers are incomplete,
// which containers are unready or unreported, which readiness gates are
// not True.
func TestConditionMessagesAreKubelets(t *testing.T) {
	p := testProvider(t)
	now := time.Now().UTC().Truncate(time.Second)
	always := corev1.ContainerRestartPolicyAlways
	no, yes := false, true
	type cond struct{ status, reason, message string }
	for _, tc := range []struct {
		name  string
		spec  func(*corev1.PodSpec)
		ds    bridge.PodStatus
		prev  []corev1.PodCondition
		wants map[corev1.PodConditionType]cond
	}{{
		name: "restartPolicy Never, second init container failed",
		spec: func(s *corev1.PodSpec) {
			s.RestartPolicy = corev1.RestartPolicyNever
			s.InitContainers = []corev1.Container{{Name: "init1", Image: "i"}, {Name: "init2", Image: "i"}}
		},
		ds: bridge.PodStatus{Phase: bridge.PhaseFailed, Initialized: &no,
			InitContainers: []bridge.ContainerStatus{
				{Name: "init1", State: bridge.StateTerminated, Reason: "Completed", ContainerID: "a"},
				{Name: "init2", State: bridge.StateTerminated, Reason: "Error", ExitCode: 1, ContainerID: "b"},
			},
			Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateWaiting, Reason: "PodInitializing"}}},
		wants: map[corev1.PodConditionType]cond{
			corev1.PodInitialized:  {"False", "ContainersNotInitialized", "containers with incomplete status: [init2]"},
			corev1.ContainersReady: {"False", "PodFailed", ""},
			corev1.PodReady:        {"False", "PodFailed", ""},
		},
	}, {
		name: "restartPolicy Always, first init container crash-looping",
		spec: func(s *corev1.PodSpec) {
			s.InitContainers = []corev1.Container{{Name: "init1", Image: "i"}, {Name: "init2", Image: "i"}}
		},
		ds: bridge.PodStatus{Phase: bridge.PhasePending, Initialized: &no,
			InitContainers: []bridge.ContainerStatus{
				{Name: "init1", State: bridge.StateWaiting, Reason: "CrashLoopBackOff", RestartCount: 3, ContainerID: "a",
					LastTermination: &bridge.Termination{ExitCode: 1, Reason: "Error"}},
				{Name: "init2", State: bridge.StateWaiting, Reason: "PodInitializing"},
			},
			Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateWaiting, Reason: "PodInitializing"}}},
		wants: map[corev1.PodConditionType]cond{
			corev1.PodInitialized:  {"False", "ContainersNotInitialized", "containers with incomplete status: [init1 init2]"},
			corev1.ContainersReady: {"False", "ContainersNotReady", "containers with unready status: [c]"},
			corev1.PodReady:        {"False", "ContainersNotReady", "containers with unready status: [c]"},
		},
	}, {
		name: "an unready sidecar and an unreported container",
		spec: func(s *corev1.PodSpec) {
			s.InitContainers = []corev1.Container{{Name: "proxy", Image: "i", RestartPolicy: &always}}
			s.Containers = append(s.Containers, corev1.Container{Name: "d", Image: "i"})
		},
		ds: bridge.PodStatus{Phase: bridge.PhaseRunning, Initialized: &yes,
			InitContainers: []bridge.ContainerStatus{{Name: "proxy", State: bridge.StateRunning, StartedAt: &now, Started: &yes, ContainerID: "p"}},
			Containers:     []bridge.ContainerStatus{{Name: "c", State: bridge.StateRunning, StartedAt: &now, Ready: true, ContainerID: "c"}}},
		wants: map[corev1.PodConditionType]cond{
			corev1.PodInitialized:  {"True", "", ""},
			corev1.ContainersReady: {"False", "ContainersNotReady", "containers with unknown status: [d], containers with unready status: [proxy]"},
			corev1.PodReady:        {"False", "ContainersNotReady", "containers with unknown status: [d], containers with unready status: [proxy]"},
		},
	}, {
		name: "containers ready, readiness gates not",
		spec: func(s *corev1.PodSpec) {
			s.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: "example.com/lb"}, {ConditionType: "example.com/dns"}}
		},
		prev: []corev1.PodCondition{{Type: "example.com/dns", Status: corev1.ConditionFalse}},
		ds: bridge.PodStatus{Phase: bridge.PhaseRunning,
			Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateRunning, StartedAt: &now, Ready: true, ContainerID: "c"}}},
		wants: map[corev1.PodConditionType]cond{
			corev1.ContainersReady: {"True", "", ""},
			corev1.PodReady: {"False", "ReadinessGatesNotReady",
				`corresponding condition of pod readiness gate "example.com/lb" does not exist., the status of pod readiness gate "example.com/dns" is not "True", but False`},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			pod := basePod()
			tc.spec(&pod.Spec)
			pod.Status.Conditions = tc.prev
			ds := tc.ds
			ds.UID, ds.StartTime = "uid-1", &now
			st := p.podWithStatus(&podEntry{pod: pod, status: &ds}).Status
			for typ, want := range tc.wants {
				var got *corev1.PodCondition
				for i := range st.Conditions {
					if st.Conditions[i].Type == typ {
						got = &st.Conditions[i]
					}
				}
				if got == nil {
					t.Errorf("no %s condition in %+v", typ, st.Conditions)
					continue
				}
				if g := (cond{string(got.Status), got.Reason, got.Message}); g != want {
					t.Errorf("%s condition = %+v, want %+v", typ, g, want)
				}
			}
		})
	}
}

// A pod's IP is the one its device reports; once it had one, a report
// without (its sandbox stopped with the pod) keeps it, as a kubelet does.
func TestPodIPIsKeptWhenTheDeviceKnowsNone(t *testing.T) {
	p := testProvider(t)
	now := time.Now().UTC().Truncate(time.Second)
	pod := basePod()
	ent := &podEntry{pod: pod, status: &bridge.PodStatus{
		UID: "uid-1", Phase: bridge.PhaseRunning, StartTime: &now, PodIP: "10.88.0.4",
		Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateRunning, StartedAt: &now, Ready: true, ContainerID: "c"}},
	}}
	st := p.podWithStatus(ent).Status
	if st.PodIP != "10.88.0.4" || len(st.PodIPs) != 1 || st.PodIPs[0].IP != "10.88.0.4" {
		t.Fatalf("pod IP %q %v, want 10.88.0.4", st.PodIP, st.PodIPs)
	}
	ent.pod.Status = st
	ent.status = &bridge.PodStatus{UID: "uid-1", Phase: bridge.PhaseSucceeded, StartTime: &now,
		Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateTerminated, Reason: "Completed", StartedAt: &now, FinishedAt: &now, ContainerID: "c"}}}
	if st := p.podWithStatus(ent).Status; st.PodIP != "10.88.0.4" || len(st.PodIPs) != 1 {
		t.Errorf("after a report without an IP: pod IP %q %v, want 10.88.0.4 kept", st.PodIP, st.PodIPs)
	}
	fresh := basePod()
	ent = &podEntry{pod: fresh, status: &bridge.PodStatus{UID: "uid-1", Phase: bridge.PhasePending, StartTime: &now}}
	if st := p.podWithStatus(ent).Status; st.PodIP != "" || st.PodIPs != nil {
		t.Errorf("a pod that never had an IP: %q %v, want none", st.PodIP, st.PodIPs)
	}
}
