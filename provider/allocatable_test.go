package provider

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

func TestParseReserved(t *testing.T) {
	r, err := ParseReserved(DefaultSystemReserved + ",ephemeral-storage=1Gi")
	if err != nil {
		t.Fatal(err)
	}
	if r.Cpu().MilliValue() != 100 || r.Memory().Value() != 256<<20 || r.StorageEphemeral().Value() != 1<<30 {
		t.Errorf("got %v", r)
	}
	if r, err := ParseReserved(""); err != nil || len(r) != 0 {
		t.Errorf("empty: %v, %v", r, err)
	}
	for _, bad := range []string{"cpu", "gpu=1", "memory=-1Mi", "memory=lots"} {
		if _, err := ParseReserved(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestNodeResources(t *testing.T) {
	reserved, _ := ParseReserved(DefaultSystemReserved)
	p := &Provider{cfg: Config{SystemReserved: reserved}}
	inv := &bridge.Inventory{
		CPUs: 4, MemoryBytes: 4 << 30, EphemeralStorageBytes: 100 << 30,
		EvictionReserved: &bridge.ResourceAmounts{MemoryBytes: 100 << 20, EphemeralStorageBytes: 10 << 30},
	}
	check := func(list corev1.ResourceList, name corev1.ResourceName, want string) {
		t.Helper()
		q := list[name]
		if q.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("%s = %s, want %s", name, q.String(), want)
		}
	}
	capacity, alloc := p.nodeResources(inv, 110)
	check(capacity, corev1.ResourceCPU, "4")
	check(capacity, corev1.ResourceMemory, "4Gi")
	check(capacity, corev1.ResourceEphemeralStorage, "100Gi")
	check(alloc, corev1.ResourceCPU, "3900m")
	check(alloc, corev1.ResourceMemory, "3740Mi") // 4096 - 256 - 100
	check(alloc, corev1.ResourceEphemeralStorage, "90Gi")
	check(alloc, corev1.ResourcePods, "110")

	// The device's own reserve overrides the provider's, per resource.
	inv.Reserved = &bridge.ResourceAmounts{MemoryBytes: 1 << 30, EphemeralStorageBytes: 5 << 30}
	_, alloc = p.nodeResources(inv, 110)
	check(alloc, corev1.ResourceCPU, "3900m")
	check(alloc, corev1.ResourceMemory, "2972Mi") // 4096 - 1024 - 100
	check(alloc, corev1.ResourceEphemeralStorage, "85Gi")

	// Never below zero; an old agent reports no ephemeral storage.
	p.cfg.SystemReserved, _ = ParseReserved("cpu=8,memory=8Gi")
	capacity, alloc = p.nodeResources(&bridge.Inventory{CPUs: 1, MemoryBytes: 1 << 30}, 110)
	check(alloc, corev1.ResourceCPU, "0")
	check(alloc, corev1.ResourceMemory, "0")
	if _, ok := capacity[corev1.ResourceEphemeralStorage]; ok {
		t.Error("ephemeral-storage capacity without a report")
	}
}

func TestPressureConditions(t *testing.T) {
	var conds conditionTimes
	t0 := metav1.NewTime(time.Unix(1000, 0))
	get := func(hb *bridge.Heartbeat, now metav1.Time) map[corev1.NodeConditionType]corev1.NodeCondition {
		m := map[corev1.NodeConditionType]corev1.NodeCondition{}
		for _, c := range pressureConditions(&conds, "dev", hb, now) {
			m[c.Type] = c
		}
		return m
	}
	// An old agent: no pressure, kubelet's reasons.
	c := get(&bridge.Heartbeat{}, t0)
	for typ, want := range map[corev1.NodeConditionType][2]string{
		corev1.NodeMemoryPressure: {"KubeletHasSufficientMemory", "kubelet has sufficient memory available"},
		corev1.NodeDiskPressure:   {"KubeletHasNoDiskPressure", "kubelet has no disk pressure"},
		corev1.NodePIDPressure:    {"KubeletHasSufficientPID", "kubelet has sufficient PID available"},
	} {
		if c[typ].Status != corev1.ConditionFalse || c[typ].Reason != want[0] || c[typ].Message != want[1] {
			t.Errorf("%s: %+v", typ, c[typ])
		}
	}
	t1 := metav1.NewTime(t0.Add(time.Minute))
	c = get(&bridge.Heartbeat{Pressure: &bridge.NodePressure{Memory: true, PID: true}}, t1)
	for typ, want := range map[corev1.NodeConditionType][2]string{
		corev1.NodeMemoryPressure: {"KubeletHasInsufficientMemory", "kubelet has insufficient memory available"},
		corev1.NodePIDPressure:    {"KubeletHasInsufficientPID", "kubelet has insufficient PID available"},
	} {
		if c[typ].Status != corev1.ConditionTrue || c[typ].Reason != want[0] || c[typ].Message != want[1] || !c[typ].LastTransitionTime.Time.Equal(t1.Time) {
			t.Errorf("%s: %+v", typ, c[typ])
		}
	}
	if d := c[corev1.NodeDiskPressure]; d.Status != corev1.ConditionFalse || !d.LastTransitionTime.Time.Equal(t0.Time) {
		t.Errorf("disk pressure: %+v, want False since %v", d, t0)
	}
	c = get(&bridge.Heartbeat{Pressure: &bridge.NodePressure{Disk: true}}, metav1.NewTime(t1.Add(time.Minute)))
	if d := c[corev1.NodeDiskPressure]; d.Status != corev1.ConditionTrue || d.Reason != "KubeletHasDiskPressure" || d.Message != "kubelet has disk pressure" {
		t.Errorf("disk pressure: %+v", d)
	}
}
