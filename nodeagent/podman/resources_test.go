//go:build remote

package podman

import (
	"testing"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// TestLinuxResources checks kubelet's mapping: shares from the request
// (or the limit), 2 without either; a quota from the limit.
func TestLinuxResources(t *testing.T) {
	for _, tc := range []struct {
		in     bridge.Resources
		shares uint64
		quota  int64 // 0: none
		memory int64 // 0: none
	}{
		{bridge.Resources{}, 2, 0, 0},
		{bridge.Resources{CPURequestMilli: 250}, 256, 0, 0},
		{bridge.Resources{CPURequestMilli: 1}, 2, 0, 0},
		{bridge.Resources{CPULimitMilli: 500}, 512, 50000, 0},
		{bridge.Resources{CPURequestMilli: 100, CPULimitMilli: 5, MemoryLimitBytes: 20 << 20}, 102, 1000, 20 << 20},
		{bridge.Resources{CPURequestMilli: 1000000}, 262144, 0, 0},
	} {
		r := linuxResources(tc.in)
		if r.CPU == nil || r.CPU.Shares == nil || *r.CPU.Shares != tc.shares {
			t.Errorf("%+v: shares %v, want %d", tc.in, r.CPU, tc.shares)
		}
		if got := r.CPU.Quota; tc.quota == 0 && got != nil || tc.quota != 0 && (got == nil || *got != tc.quota || *r.CPU.Period != cpuPeriod) {
			t.Errorf("%+v: quota %v, want %d", tc.in, got, tc.quota)
		}
		if tc.memory == 0 && r.Memory != nil || tc.memory != 0 && (r.Memory == nil || *r.Memory.Limit != tc.memory) {
			t.Errorf("%+v: memory %+v, want %d", tc.in, r.Memory, tc.memory)
		}
	}
}

// A container podman is stopping still runs: a pod past its deadline must
// not be reported Failed (its last status) before its containers' final
// states are known.
func TestMapStateStoppingIsRunning(t *testing.T) {
	for state, want := range map[string]string{
		"running": nodeagent.ContainerRunning, "stopping": nodeagent.ContainerRunning,
		"exited": nodeagent.ContainerExited, "stopped": nodeagent.ContainerExited,
		"created": nodeagent.ContainerCreated, "removing": nodeagent.ContainerUnknown,
	} {
		if got := mapState(state); got != want {
			t.Errorf("mapState(%q) = %q, want %q", state, got, want)
		}
	}
}
