package provider

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/vk-fleet/vk-fleet/bridge"
)

func TestContainerResources(t *testing.T) {
	c := &corev1.Container{Name: "app", Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1.5"), corev1.ResourceMemory: resource.MustParse("128Mi"),
			corev1.ResourceEphemeralStorage: resource.MustParse("1Gi")},
	}}
	var ignored []string
	got := containerResources(c, func(f string, a ...any) { ignored = append(ignored, fmt.Sprintf(f, a...)) })
	want := bridge.Resources{MemoryLimitBytes: 128 << 20, CPULimitMilli: 1500, CPURequestMilli: 250}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if len(ignored) != 1 {
		t.Errorf("ignored %q, want the ephemeral-storage limit", ignored)
	}

	var refused []string
	refuse := func(f string, a ...any) { refused = append(refused, fmt.Sprintf(f, a...)) }
	podResources(&corev1.Pod{}, refuse)
	if len(refused) != 0 {
		t.Errorf("refused %q", refused)
	}
	podResources(&corev1.Pod{Spec: corev1.PodSpec{Resources: &corev1.ResourceRequirements{
		Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}}}, refuse)
	if len(refused) != 1 {
		t.Errorf("pod-level resources not refused")
	}
}
