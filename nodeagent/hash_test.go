package nodeagent

import (
	"testing"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// A pod created by an agent before RestartHash is adopted, not recreated,
// when it runs the workload's containers.
func TestLegacyPodsAreAdopted(t *testing.T) {
	w := &bridge.Workload{UID: "u", Namespace: "n", Name: "p", Containers: []bridge.Container{{Name: "c", Image: "busybox"}}}
	running := []ContainerState{{Name: "c", Image: "docker.io/library/busybox:latest"}}
	for _, tc := range []struct {
		name string
		pod  PodState
		same bool
	}{
		{"current hash", PodState{SpecHash: specHash(w)}, true},
		{"old hash of the same workload", PodState{SpecHash: legacySpecHash(w)}, true},
		{"old hash, same images", PodState{SpecHash: "0123456789abcdef", Containers: running}, true},
		{"old hash, another image", PodState{SpecHash: "0123456789abcdef", Containers: []ContainerState{{Name: "c", Image: "docker.io/library/busybox:1.36"}}}, false},
		{"current hash of another spec", PodState{SpecHash: "r1-0000000000000000", Containers: running}, false},
	} {
		if got := sameSpec(&tc.pod, w); got != tc.same {
			t.Errorf("%s: sameSpec = %v, want %v", tc.name, got, tc.same)
		}
	}
	for in, want := range map[string]string{
		"busybox":                  "docker.io/library/busybox:latest",
		"nginx:1.25":               "docker.io/library/nginx:1.25",
		"ghcr.io/a/b":              "ghcr.io/a/b:latest",
		"localhost/vkf-busybox:v1": "localhost/vkf-busybox:v1",
		"registry:5000/x/y":        "registry:5000/x/y:latest",
		"me/app@sha256:abc":        "docker.io/me/app@sha256:abc",
	} {
		if got := normalImage(in); got != want {
			t.Errorf("normalImage(%q) = %q, want %q", in, got, want)
		}
	}
}
