package nodeagent

import (
	"testing"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// noProbes: every container is ready once running.
type noProbes struct{}

func (noProbes) ready(string, *bridge.Container, string) bool   { return true }
func (noProbes) started(string, *bridge.Container, string) bool { return true }
func (noProbes) failure(string, string, string) string          { return "" }

// TestPodIPIsTheSandboxsOrNone: a pod on the pod network reports its
// sandbox's IP, or none while the runtime does not know it; never the
// host's (a client would dial the host for the pod). A host-network pod
// reports the host's.
func TestPodIPIsTheSandboxsOrNone(t *testing.T) {
	const hostIP = "192.0.2.7"
	running := []ContainerState{{Name: "main", State: ContainerRunning}}
	for _, tc := range []struct {
		name        string
		hostNetwork bool
		p           *PodState
		want        string
	}{
		{"sandbox IP", false, &PodState{PodIP: "10.88.0.9", Containers: running}, "10.88.0.9"},
		{"IP not known yet", false, &PodState{Containers: running}, ""},
		{"no pod yet", false, nil, ""},
		{"host network", true, &PodState{Containers: running}, hostIP},
		{"host network, no pod yet", true, nil, hostIP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Record{Workload: bridge.Workload{UID: "u1", Namespace: "ns", Name: "p", HostNetwork: tc.hostNetwork,
				Containers: []bridge.Container{{Name: "main", Image: "img"}}}}
			st := buildStatus(r, tc.p, &pending{waiting: map[string]bool{}}, hostIP, noProbes{})
			if st.PodIP != tc.want {
				t.Errorf("pod IP %q, want %q", st.PodIP, tc.want)
			}
		})
	}
}
