package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// An in-place resize, as a user tries it with kubectl, is not applied on a
// device. The API server refuses it for a running pod (a device reports no
// containerStatuses[].resources, which is how a kubelet says it can resize)
// and the container runs on untouched; one it accepts (no container running
// yet) leaves the Pod saying so: PodResizePending, Infeasible, with what
// was asked.
func TestInPlaceResizeIsExplained(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "resize")
	resources := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
	}
	pod := sleeper(ns, "sized", devA)
	pod.Spec.Containers[0].Resources = resources
	stuck := sleeper(ns, "stuck", devA)
	stuck.Spec.Containers[0].Resources = resources
	stuck.Spec.Containers[0].Image = "localhost/vkf-not-there:1"
	stuck.Spec.Containers[0].ImagePullPolicy = corev1.PullNever
	for _, p := range []*corev1.Pod{pod, stuck} {
		if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	running := waitRunning(t, ns, "sized")
	before := podmanPod(t, t.Context(), devA, running.UID)
	if before == nil || len(before.Containers) == 0 {
		t.Fatal("no podman pod for the running pod")
	}
	patch := `{"spec":{"containers":[{"name":"main","resources":{"limits":{"cpu":"300m"},"requests":{"cpu":"150m"}}}]}}`

	_, errOut, code := kubectl(t, t.Context(), "", "patch", "pod", "sized", "-n", ns, "--subresource", "resize", "--patch", patch)
	if code == 0 || !strings.Contains(errOut, "without support for resize") {
		t.Errorf("resizing a running device pod: exit %d, %q; want the API server's refusal", code, errOut)
	}
	after := podmanPod(t, t.Context(), devA, running.UID)
	if after == nil || len(after.Containers) == 0 || after.Containers[0].ID != before.Containers[0].ID ||
		!after.Containers[0].StartedAt.Equal(before.Containers[0].StartedAt) {
		t.Errorf("the container was restarted or re-created: before %+v, after %+v", before.Containers, after)
	}

	eventually(t, time.Minute, "stuck reported waiting", func(ctx context.Context) (bool, string) {
		p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "stuck", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		cs := p.Status.ContainerStatuses
		return len(cs) == 1 && cs[0].State.Waiting != nil && cs[0].State.Waiting.Reason == "ErrImageNeverPull", fmt.Sprintf("%+v", cs)
	})
	if _, errOut, code := kubectl(t, t.Context(), "", "patch", "pod", "stuck", "-n", ns, "--subresource", "resize", "--patch", patch); code != 0 {
		t.Fatalf("resizing a pod with no running container: exit %d: %s", code, errOut)
	}
	var cond corev1.PodCondition
	eventually(t, time.Minute, "PodResizePending on the pod", func(ctx context.Context) (bool, string) {
		p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "stuck", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodResizePending {
				cond = c
				return c.Status == corev1.ConditionTrue && p.Status.ObservedGeneration == p.Generation, fmt.Sprintf("%+v", c)
			}
		}
		return false, fmt.Sprintf("conditions %+v", p.Status.Conditions)
	})
	if cond.Reason != corev1.PodReasonInfeasible || !strings.Contains(cond.Message, "cpu limit 200m → 300m") {
		t.Errorf("PodResizePending = %s: %q; want Infeasible saying what was asked", cond.Reason, cond.Message)
	}
}
