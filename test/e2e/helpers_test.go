package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vk-fleet/vk-fleet/nodeagent"
	"github.com/vk-fleet/vk-fleet/nodeagent/podman"
	"github.com/vk-fleet/vk-fleet/test/framework/devcluster"
)

// eventually polls cond every 500ms until it returns true or timeout passes.
// cond returns a description of what it saw, for the failure message.
func eventually(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	last := ""
	for {
		ok, seen := cond(ctx)
		if ok {
			return
		}
		last = seen
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s; last seen: %s\nprovider log tail:\n%s", timeout, what, last, cluster.Provider.Tail(25))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// podmanPods lists the pods the podman service holds for device, through
// the podman API.
func podmanPods(t *testing.T, ctx context.Context, device string) []nodeagent.PodState {
	t.Helper()
	rt, err := podman.New(ctx, cluster.Podman.URI, device)
	if err != nil {
		t.Fatalf("connecting to podman: %v", err)
	}
	pods, err := rt.ListPods(ctx)
	if err != nil {
		t.Fatalf("listing podman pods: %v", err)
	}
	return pods
}

func podmanPod(t *testing.T, ctx context.Context, device string, uid types.UID) *nodeagent.PodState {
	for _, p := range podmanPods(t, ctx, device) {
		if p.UID == string(uid) {
			return &p
		}
	}
	return nil
}

func labelNode(t *testing.T, node, key, value string) {
	t.Helper()
	var patch string
	if value == "" {
		patch = fmt.Sprintf(`{"metadata":{"labels":{%q:null}}}`, key)
	} else {
		patch = fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, key, value)
	}
	if _, err := cluster.Client.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("labelling node %s: %v", node, err)
	}
}

// deviceToleration tolerates the taint of device Nodes.
var deviceToleration = corev1.Toleration{Key: "virtual-kubelet.io/provider", Operator: corev1.TolerationOpEqual, Value: "vk-fleet", Effect: corev1.TaintEffectNoSchedule}

func int64p(i int64) *int64 { return &i }

func daemonSet(ns, name string, selector map[string]string, cmd ...string) *appsv1.DaemonSet {
	labels := map[string]string{"app": name}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector:                  selector,
					Tolerations:                   []corev1.Toleration{deviceToleration},
					TerminationGracePeriodSeconds: int64p(2),
					Containers: []corev1.Container{{
						Name: "main", Image: cluster.Image, Command: cmd,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Env:             []corev1.EnvVar{{Name: "GREETING", Value: "hello"}},
					}},
				},
			},
		},
	}
}

func podsOf(ctx context.Context, ns, app string) ([]corev1.Pod, error) {
	l, err := cluster.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func createNamespace(t *testing.T, name string) string {
	t.Helper()
	_, err := cluster.Client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	// The namespace's default service account must exist before pods.
	eventually(t, time.Minute, "default service account", func(ctx context.Context) (bool, string) {
		_, err := cluster.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	return name
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// extraDevice enrolls dev with o and starts its agent; both go when the
// test ends (its Node deleted, which revokes it).
func extraDevice(t *testing.T, dev string, o devcluster.EnrollOptions) {
	t.Helper()
	if err := cluster.EnrollWith(t.Context(), dev, o); err != nil {
		t.Fatal(err)
	}
	if err := cluster.StartAgent(t.Context(), dev); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cluster.StopAgent(dev)
		_ = cluster.Client.CoreV1().Nodes().Delete(context.Background(), dev, metav1.DeleteOptions{})
	})
}
