package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vk-fleet/vk-fleet/nodeagent"
	"github.com/vk-fleet/vk-fleet/test/framework/podmantest"
)

// containerRun identifies one run of one container: a restart or a
// re-creation changes it.
type containerRun struct {
	ID        string
	StartedAt time.Time
}

// runsOf returns the container runs of the given pods, from podman.
func runsOf(t *testing.T, pods []corev1.Pod) map[string]containerRun {
	t.Helper()
	out := map[string]containerRun{}
	for _, p := range pods {
		ps := podmanPod(t, t.Context(), p.Spec.NodeName, p.UID)
		if ps == nil {
			t.Fatalf("pod %s has no podman pod on %s", p.Name, p.Spec.NodeName)
		}
		for _, c := range ps.Containers {
			if c.State != nodeagent.ContainerRunning {
				t.Fatalf("container %s of %s is %s", c.Name, p.Name, c.State)
			}
			out[string(p.UID)+"/"+c.Name] = containerRun{c.ID, c.StartedAt}
		}
	}
	return out
}

// runningOn waits until the DaemonSet app has one Running pod on each of
// the nodes, and returns them.
func runningOn(t *testing.T, ns, app string, nodes ...string) []corev1.Pod {
	t.Helper()
	var out []corev1.Pod
	eventually(t, 3*time.Minute, fmt.Sprintf("%s Running on %v", app, nodes), func(ctx context.Context) (bool, string) {
		pods, err := podsOf(ctx, ns, app)
		if err != nil {
			return false, err.Error()
		}
		on := map[string]bool{}
		var seen []string
		for _, p := range pods {
			seen = append(seen, p.Spec.NodeName+":"+string(p.Status.Phase))
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				on[p.Spec.NodeName] = true
			}
		}
		for _, n := range nodes {
			if !on[n] {
				return false, strings.Join(seen, " ")
			}
		}
		out = pods
		return len(pods) == len(nodes), strings.Join(seen, " ")
	})
	return out
}

// assertUntouched fails t if a container run changed, a pod was recreated
// or restarted, or any was marked Failed.
func assertUntouched(t *testing.T, ns, app string, before []corev1.Pod, runs map[string]containerRun, when string) {
	t.Helper()
	after := runningOn(t, ns, app, nodesOf(before)...)
	uids := map[types.UID]bool{}
	for _, p := range before {
		uids[p.UID] = true
	}
	for _, p := range after {
		if !uids[p.UID] {
			t.Errorf("%s: pod %s was recreated (new UID %s)", when, p.Name, p.UID)
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.RestartCount != 0 {
				t.Errorf("%s: %s/%s restartCount %d", when, p.Name, cs.Name, cs.RestartCount)
			}
		}
	}
	now := runsOf(t, after)
	for k, r := range runs {
		if now[k] != r {
			t.Errorf("%s: container %s was restarted or recreated: %+v → %+v", when, k, r, now[k])
		}
	}
}

func nodesOf(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Spec.NodeName)
	}
	return out
}

// readInContainer returns the content of path inside the pod's container.
func readInContainer(t *testing.T, p corev1.Pod, path string) string {
	t.Helper()
	ps := podmanPod(t, t.Context(), p.Spec.NodeName, p.UID)
	if ps == nil || len(ps.Containers) == 0 {
		t.Fatalf("no podman pod for %s", p.Name)
	}
	cmd := exec.CommandContext(t.Context(), "podman", "exec", ps.Containers[0].ID, "cat", path)
	cmd.Env = podmantest.Env(cluster.Podman.Conf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "error: " + err.Error() + ": " + string(out)
	}
	return string(out)
}

// vk-fleet killed with SIGKILL and restarted — once with its store intact,
// once with its NATS store wiped (what an emptyDir gives a pod), once in the
// middle of a DaemonSet rollout — restarts and recreates no container,
// although meanwhile a Service appeared in the namespace (service-link env)
// and a ConfigMap the pods use was edited. The edit reaches the ConfigMap
// volume in place.
func TestProviderRestartsNeverRestartContainers(t *testing.T) {
	needCluster(t)
	if err := cluster.WaitNodesReady(t.Context(), 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	ns := createNamespace(t, "provider-restart")
	labelNode(t, devA, "restart-test", "yes")
	labelNode(t, devB, "restart-test", "yes")
	t.Cleanup(func() {
		labelNode(t, devA, "restart-test", "")
		labelNode(t, devB, "restart-test", "")
	})
	cms := cluster.Client.CoreV1().ConfigMaps(ns)
	if _, err := cms.Create(t.Context(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "settings"},
		Data:       map[string]string{"colour": "blue"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ds := daemonSet(ns, "steady", map[string]string{"restart-test": "yes"}, "sleep", "3600")
	spec := &ds.Spec.Template.Spec
	spec.Containers[0].Env = append(spec.Containers[0].Env, corev1.EnvVar{Name: "COLOUR", ValueFrom: &corev1.EnvVarSource{
		ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}, Key: "colour"}}})
	spec.Volumes = []corev1.Volume{{Name: "settings", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}}}}
	spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "settings", MountPath: "/etc/settings"}}
	if _, err := cluster.Client.AppsV1().DaemonSets(ns).Create(t.Context(), ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := runningOn(t, ns, "steady", devA, devB)
	runs := runsOf(t, pods)

	// What a re-translation would now see differently.
	if _, err := cluster.Client.CoreV1().Services(ns).Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "newcomer"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80)}}, Selector: map[string]string{"app": "none"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Update(t.Context(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "settings"},
		Data:       map[string]string{"colour": "green"},
	}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Restarts shorter than the grace period must not flap a Node.
	flaps := watchNotReady(t, devA, devB)
	restart := func(wipe bool) {
		t.Helper()
		cluster.Provider.Kill()
		if wipe {
			if err := os.RemoveAll(cluster.NATSStoreDir()); err != nil {
				t.Fatal(err)
			}
		}
		if err := cluster.StartProvider(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := cluster.WaitNodesReady(t.Context(), 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}

	restart(false)
	assertUntouched(t, ns, "steady", pods, runs, "after SIGKILL and restart")
	eventually(t, 2*time.Minute, "the edited ConfigMap in the volume", func(context.Context) (bool, string) {
		got := readInContainer(t, pods[0], "/etc/settings/colour")
		return got == "green", got
	})

	restart(true)
	assertUntouched(t, ns, "steady", pods, runs, "after SIGKILL and a wiped NATS store")

	// In the middle of a rollout.
	if _, err := cluster.Client.AppsV1().DaemonSets(ns).Create(t.Context(), daemonSet(ns, "rollout", map[string]string{"restart-test": "yes"}, "sleep", "3600"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the rollout's pods bound", func(ctx context.Context) (bool, string) {
		ps, err := podsOf(ctx, ns, "rollout")
		return err == nil && len(ps) == 2, fmt.Sprint(len(ps), err)
	})
	restart(false)
	rolled := runningOn(t, ns, "rollout", devA, devB)
	for _, p := range rolled {
		if p.Status.ContainerStatuses[0].RestartCount != 0 {
			t.Errorf("rollout pod %s restarted %d times", p.Name, p.Status.ContainerStatuses[0].RestartCount)
		}
	}
	assertUntouched(t, ns, "steady", pods, runs, "after a restart during a rollout")
	if f := flaps(); len(f) > 0 {
		t.Errorf("Nodes went NotReady during restarts shorter than the grace period: %v", f)
	}
	for _, app := range []string{"steady", "rollout"} {
		if err := cluster.Client.AppsV1().DaemonSets(ns).Delete(t.Context(), app, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 2*time.Minute, "the test's pods gone", func(ctx context.Context) (bool, string) {
		var left []string
		for _, app := range []string{"steady", "rollout"} {
			ps, _ := podsOf(ctx, ns, app)
			for _, p := range ps {
				left = append(left, p.Name)
			}
		}
		return len(left) == 0, strings.Join(left, " ")
	})
}

// watchNotReady polls the nodes until the test ends; the returned function
// lists the times any of them was seen not Ready.
func watchNotReady(t *testing.T, nodes ...string) func() []string {
	var mu sync.Mutex
	var seen []string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			for _, n := range nodes {
				if s, _ := nodeCondition(ctx, n); s != "" && s != corev1.ConditionTrue {
					mu.Lock()
					seen = append(seen, fmt.Sprintf("%s %s at %s", n, s, time.Now().Format("15:04:05")))
					mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}
