package provider

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// An in-place resize (kubectl patch --subresource resize) is not applied on
// a device: the workload it has keeps the resources its containers started
// with, and the Pod says so with PodResizePending/Infeasible; resizing back
// clears it, and a change that re-creates the containers takes the new
// resources with it.
func TestInPlaceResizeIsHeldAndExplained(t *testing.T) {
	p, _ := natsProvider(t)
	pod := basePod()
	key := bridge.PodKey(pod.Spec.NodeName, string(pod.UID))
	published := func() bridge.Resources {
		t.Helper()
		e, err := p.workloads.Get(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		w, err := bridge.Decode[bridge.Workload](e.Value())
		if err != nil {
			t.Fatal(err)
		}
		return w.Containers[0].Resources
	}
	resizePending := func() *corev1.PodCondition {
		t.Helper()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.podWithStatus(p.pods.byKey[podKey(pod.Namespace, pod.Name)]).Status.Conditions {
			if c.Type == corev1.PodResizePending {
				return &c
			}
		}
		return nil
	}
	if err := p.syncPod(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	started := published()
	if started.CPULimitMilli != 500 {
		t.Fatalf("published cpu limit %d, want 500", started.CPULimitMilli)
	}

	resized := pod.DeepCopy()
	resized.Generation++
	resized.Spec.Containers[0].Resources.Limits[corev1.ResourceCPU] = resource.MustParse("1")
	if err := p.syncPod(t.Context(), resized); err != nil {
		t.Fatal(err)
	}
	if got := published(); got != started {
		t.Errorf("after an in-place resize the device was given %+v, want the resources it started with %+v", got, started)
	}
	c := resizePending()
	if c == nil || c.Status != corev1.ConditionTrue || c.Reason != corev1.PodReasonInfeasible {
		t.Fatalf("PodResizePending = %+v, want True/Infeasible", c)
	}
	if !strings.Contains(c.Message, "container c: cpu limit 500m → 1") {
		t.Errorf("message %q does not say what was asked", c.Message)
	}
	if c.ObservedGeneration != resized.Generation {
		t.Errorf("condition observedGeneration %d, want %d", c.ObservedGeneration, resized.Generation)
	}

	// Back to what it runs with: nothing pending.
	back := resized.DeepCopy()
	back.Generation++
	back.Spec.Containers[0].Resources = pod.Spec.Containers[0].Resources
	if err := p.syncPod(t.Context(), back); err != nil {
		t.Fatal(err)
	}
	if c := resizePending(); c != nil {
		t.Errorf("PodResizePending after resizing back: %+v", c)
	}

	// A new image re-creates the containers: they start with the new resources.
	upgraded := resized.DeepCopy()
	upgraded.Generation = back.Generation + 1
	upgraded.Spec.Containers[0].Image = "img:2"
	if err := p.syncPod(t.Context(), upgraded); err != nil {
		t.Fatal(err)
	}
	if got := published(); got.CPULimitMilli != 1000 {
		t.Errorf("with a new image the device was given cpu limit %d, want 1000", got.CPULimitMilli)
	}
	if c := resizePending(); c != nil {
		t.Errorf("PodResizePending with the containers re-created: %+v", c)
	}
}

// The pod controller writes its own status (ProviderFailed, no container
// statuses) when CreatePod fails; a pod that waits for its ConfigMap gets
// the container statuses that say why written again if that write came last.
func TestWaitingStatusSurvivesThePodControllersErrorStatus(t *testing.T) {
	p := testProvider(t)
	p.log = slog.New(slog.DiscardHandler)
	cs := p.cfg.Client
	pod := basePod()
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "cfg", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "later"}}}})
	pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "cfg", MountPath: "/cfg"})
	// What the API server holds after the pod controller's error status.
	stored := pod.DeepCopy()
	stored.Status = corev1.PodStatus{Phase: corev1.PodPending, Reason: "ProviderFailed", Message: "waiting"}
	if _, err := cs.CoreV1().Pods(pod.Namespace).Create(t.Context(), stored, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := p.syncPod(t.Context(), pod); err == nil || !errors.Is(err, errConfigPending) {
		t.Fatalf("syncPod of a pod whose ConfigMap is missing: %v, want errConfigPending", err)
	}
	p.reassertWaiting(podKey(pod.Namespace, pod.Name), pod.UID)
	got, err := cs.CoreV1().Pods(pod.Namespace).Get(t.Context(), pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cs0 := got.Status.ContainerStatuses
	if len(cs0) != 1 || cs0[0].State.Waiting == nil || cs0[0].State.Waiting.Reason != "CreateContainerConfigError" {
		t.Fatalf("container statuses after the re-check: %+v", cs0)
	}
}
