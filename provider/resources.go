package provider

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// containerResources maps a container's requests and limits to what its
// device enforces: memory limit, CPU limit (a CFS quota) and CPU request
// (CPU shares), as kubelet does. An ephemeral-storage request counts for
// scheduling against the Node's allocatable ephemeral-storage; its limit
// is accepted but not enforced (podman cannot cap a container's writable
// layer on ordinary filesystems, and the device does not evict), which is
// said on the Pod.
func containerResources(c *corev1.Container, ignore func(string, ...any)) bridge.Resources {
	var r bridge.Resources
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		r.MemoryLimitBytes = q.Value()
	}
	if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		r.CPULimitMilli = q.MilliValue()
	}
	if q, ok := c.Resources.Requests[corev1.ResourceCPU]; ok {
		r.CPURequestMilli = q.MilliValue()
	}
	if _, ok := c.Resources.Limits[corev1.ResourceEphemeralStorage]; ok {
		ignore("container %q: ephemeral-storage limit (counted for scheduling, not enforced on the device)", c.Name)
	}
	return r
}

// podResources refuses pod-level resources (spec.resources), which the
// device cannot enforce on a podman pod yet.
func podResources(pod *corev1.Pod, refuse func(string, ...any)) {
	if r := pod.Spec.Resources; r != nil && (len(r.Limits) > 0 || len(r.Requests) > 0) {
		refuse("pod-level resources (spec.resources) are not supported on devices: set requests and limits on each container")
	}
}
