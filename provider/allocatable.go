package provider

import (
	"fmt"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// DefaultSystemReserved is vk-fleet's default --system-reserved: what every
// device keeps for its OS, the agent and podman unless it says otherwise.
const DefaultSystemReserved = "cpu=100m,memory=256Mi"

// ParseReserved parses a reserve in kubelet's --system-reserved syntax:
// "cpu=100m,memory=256Mi,ephemeral-storage=1Gi".
func ParseReserved(s string) (corev1.ResourceList, error) {
	out := corev1.ResourceList{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want resource=quantity", kv)
		}
		name := corev1.ResourceName(k)
		switch name {
		case corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage:
		default:
			return nil, fmt.Errorf("%q: unknown resource (cpu, memory, ephemeral-storage)", k)
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		if q.Sign() < 0 {
			return nil, fmt.Errorf("%s: %s is negative", k, v)
		}
		out[name] = q
	}
	return out, nil
}

// nodeResources returns a device's capacity and allocatable as kubelet
// computes them: allocatable = capacity - reserved - hard eviction
// thresholds (memory.available, nodefs.available), never below zero. The
// device's own reserve (Inventory.Reserved) overrides the provider's,
// resource by resource.
func (p *Provider) nodeResources(inv *bridge.Inventory, maxPods int) (capacity, allocatable corev1.ResourceList) {
	capacity = corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(max(inv.CPUs, 1)), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(inv.MemoryBytes, resource.BinarySI),
		corev1.ResourcePods:   *resource.NewQuantity(int64(maxPods), resource.DecimalSI),
	}
	if inv.EphemeralStorageBytes > 0 {
		capacity[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(inv.EphemeralStorageBytes, resource.BinarySI)
	}
	reserved := p.cfg.SystemReserved.DeepCopy()
	if reserved == nil {
		reserved = corev1.ResourceList{}
	}
	if r := inv.Reserved; r != nil {
		if r.CPUMilli > 0 {
			reserved[corev1.ResourceCPU] = *resource.NewMilliQuantity(r.CPUMilli, resource.DecimalSI)
		}
		if r.MemoryBytes > 0 {
			reserved[corev1.ResourceMemory] = *resource.NewQuantity(r.MemoryBytes, resource.BinarySI)
		}
		if r.EphemeralStorageBytes > 0 {
			reserved[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(r.EphemeralStorageBytes, resource.BinarySI)
		}
	}
	if e := inv.EvictionReserved; e != nil {
		for name, v := range map[corev1.ResourceName]int64{corev1.ResourceMemory: e.MemoryBytes, corev1.ResourceEphemeralStorage: e.EphemeralStorageBytes} {
			if v > 0 {
				q := reserved[name]
				q.Add(*resource.NewQuantity(v, resource.BinarySI))
				reserved[name] = q
			}
		}
	}
	allocatable = capacity.DeepCopy()
	for name, r := range reserved {
		a, ok := allocatable[name]
		if !ok {
			continue
		}
		a.Sub(r)
		if a.Sign() < 0 {
			a.Set(0)
		}
		allocatable[name] = a
	}
	return capacity, allocatable
}

// pressureConditions returns the MemoryPressure, DiskPressure and
// PIDPressure conditions of a device's Node from its heartbeat, with
// kubelet's reasons and messages. A transition time changes only when the
// status does (conds remembers them). An agent older than protocol 6
// reports no pressure: the conditions are False, as before.
func pressureConditions(conds *conditionTimes, device string, hb *bridge.Heartbeat, now metav1.Time) []corev1.NodeCondition {
	var pr bridge.NodePressure
	if hb.Pressure != nil {
		pr = *hb.Pressure
	}
	type kind struct {
		t                         corev1.NodeConditionType
		on                        bool
		trueReason, trueMsg       string
		falseReason, falseMessage string
	}
	var out []corev1.NodeCondition
	for _, k := range []kind{
		{corev1.NodeMemoryPressure, pr.Memory, "KubeletHasInsufficientMemory", "kubelet has insufficient memory available", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"},
		{corev1.NodeDiskPressure, pr.Disk, "KubeletHasDiskPressure", "kubelet has disk pressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"},
		{corev1.NodePIDPressure, pr.PID, "KubeletHasInsufficientPID", "kubelet has insufficient PID available", "KubeletHasSufficientPID", "kubelet has sufficient PID available"},
	} {
		c := corev1.NodeCondition{Type: k.t, Status: corev1.ConditionFalse, Reason: k.falseReason, Message: k.falseMessage, LastHeartbeatTime: now}
		if k.on {
			c.Status, c.Reason, c.Message = corev1.ConditionTrue, k.trueReason, k.trueMsg
		}
		c.LastTransitionTime = conds.transition(device, k.t, c.Status, now)
		out = append(out, c)
	}
	return out
}

// conditionTimes remembers when each device's conditions last changed
// status. The zero value is ready to use.
type conditionTimes struct {
	mu sync.Mutex
	m  map[string]map[corev1.NodeConditionType]conditionSince
}

type conditionSince struct {
	status corev1.ConditionStatus
	since  metav1.Time
}

// transition returns when device's condition t took status: now, unless
// it already had that status.
func (c *conditionTimes) transition(device string, t corev1.NodeConditionType, status corev1.ConditionStatus, now metav1.Time) metav1.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]map[corev1.NodeConditionType]conditionSince{}
	}
	dm := c.m[device]
	if dm == nil {
		dm = map[corev1.NodeConditionType]conditionSince{}
		c.m[device] = dm
	}
	if prev, ok := dm[t]; ok && prev.status == status {
		return prev.since
	}
	dm[t] = conditionSince{status, now}
	return now
}

// forget drops what conditionTimes holds for device.
func (c *conditionTimes) forget(device string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, device)
}
