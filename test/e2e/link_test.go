package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/vk-fleet/vk-fleet/nodeagent"
	"github.com/vk-fleet/vk-fleet/test/framework/devcluster"
	"github.com/vk-fleet/vk-fleet/test/framework/netcut"
	"github.com/vk-fleet/vk-fleet/test/framework/podmantest"
)

func podmanCLI(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "podman", args...)
	cmd.Env = podmantest.Env(cluster.Podman.Conf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("podman %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func nodeCondition(ctx context.Context, node string) (corev1.ConditionStatus, string) {
	n, err := cluster.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return "", err.Error()
	}
	return devcluster.NodeReady(n), ""
}

// A device's uplink goes down for longer than the Node grace period. Its
// containers keep running, its Node turns NotReady/Unknown, its DaemonSet
// pod stays bound. While it is away the device reboots (every container
// stopped, the agent restarted without NATS) and restores its pods from its
// own store; a pod is deleted and the DaemonSet's image changed twice. When
// the link returns the Node is Ready, the deleted pod's containers are
// gone, and the DaemonSet runs the latest image, created once.
func TestLinkDownLongerThanTheGracePeriod(t *testing.T) {
	needCluster(t)
	const dev = "pi-flaky"
	ctx := t.Context()
	link, err := netcut.Listen(strings.TrimPrefix(cluster.NATSURL, "tls://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	extraDevice(t, dev, devcluster.EnrollOptions{NATSURL: "tls://" + link.Addr(), Labels: []string{"link-test=yes"}})
	for _, tag := range []string{"v2", "v3"} {
		podmanCLI(t, "tag", cluster.Image, strings.TrimSuffix(cluster.Image, ":v1")+":"+tag)
	}

	ns := createNamespace(t, "link-down")
	if _, err := cluster.Client.AppsV1().DaemonSets(ns).Create(ctx, daemonSet(ns, "edge", map[string]string{"link-test": "yes"}, "sleep", "3600"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(ctx, sleeper(ns, "doomed", dev), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	edge := runningOn(t, ns, "edge", dev)[0]
	doomed := waitRunning(t, ns, "doomed")

	link.Cut()
	cut := time.Now()
	eventually(t, 2*time.Minute, dev+" NotReady or Unknown", func(ctx context.Context) (bool, string) {
		s, msg := nodeCondition(ctx, dev)
		return s != "" && s != corev1.ConditionTrue, string(s) + msg
	})
	t.Logf("Node NotReady %s after the link was cut", time.Since(cut).Round(time.Second))
	for _, p := range []corev1.Pod{edge, *doomed} {
		ps := podmanPod(t, ctx, dev, p.UID)
		if ps == nil || ps.Containers[0].State != nodeagent.ContainerRunning {
			t.Fatalf("%s stopped while the link is down: %+v", p.Name, ps)
		}
		cur, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil || cur.UID != p.UID || cur.Spec.NodeName != dev {
			t.Fatalf("%s not bound to %s any more: %v", p.Name, dev, err)
		}
	}

	// A reboot while offline: every container stopped, the agent restarted
	// with no NATS. It restores its pods from its own store.
	cluster.StopAgent(dev)
	for _, id := range strings.Fields(podmanCLI(t, "pod", "ps", "-q", "--filter", "label="+nodeagent.LabelDevice+"="+dev)) {
		podmanCLI(t, "pod", "stop", "-t", "1", id)
	}
	booted := time.Now()
	if err := cluster.StartAgent(ctx, dev); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "every pod running again without NATS", func(ctx context.Context) (bool, string) {
		var seen []string
		all := true
		for _, uid := range []types.UID{edge.UID, doomed.UID} {
			ps := podmanPod(t, ctx, dev, uid)
			if ps == nil || len(ps.Containers) == 0 || ps.Containers[0].State != nodeagent.ContainerRunning {
				all = false
			}
			seen = append(seen, fmt.Sprintf("%+v", ps))
		}
		return all, strings.Join(seen, "; ")
	})
	t.Logf("reboot while offline: agent start → all pods running in %s", time.Since(booted).Round(100*time.Millisecond))

	// Changes while away: a pod deleted, the DaemonSet's image changed twice.
	if err := cluster.Client.CoreV1().Pods(ns).Delete(ctx, "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"v2", "v3"} {
		// The DaemonSet controller writes the object's status meanwhile: retry a conflict, as kubectl edit would.
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			ds, err := cluster.Client.AppsV1().DaemonSets(ns).Get(ctx, "edge", metav1.GetOptions{})
			if err != nil {
				return err
			}
			ds.Spec.Template.Spec.Containers[0].Image = strings.TrimSuffix(cluster.Image, ":v1") + ":" + tag
			_, err = cluster.Client.AppsV1().DaemonSets(ns).Update(ctx, ds, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	link.Restore()
	back := time.Now()
	eventually(t, 2*time.Minute, dev+" Ready again", func(ctx context.Context) (bool, string) {
		s, msg := nodeCondition(ctx, dev)
		return s == corev1.ConditionTrue, string(s) + msg
	})
	t.Logf("Node Ready %s after the link returned", time.Since(back).Round(time.Second))
	eventually(t, 3*time.Minute, "the deleted pod gone and the DaemonSet on v3", func(ctx context.Context) (bool, string) {
		_, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "doomed", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return false, "doomed still there"
		}
		pods, err := podsOf(ctx, ns, "edge")
		if err != nil || len(pods) != 1 {
			return false, fmt.Sprint(len(pods), " edge pods ", err)
		}
		p := pods[0]
		return p.Status.Phase == corev1.PodRunning && strings.HasSuffix(p.Spec.Containers[0].Image, ":v3") && p.DeletionTimestamp == nil,
			fmt.Sprintf("%s %s %s", p.Name, p.Spec.Containers[0].Image, p.Status.Phase)
	})
	if ps := podmanPod(t, ctx, dev, doomed.UID); ps != nil {
		t.Errorf("the deleted pod's containers still exist: %+v", ps)
	}
	if ps := podmanPod(t, ctx, dev, edge.UID); ps != nil {
		t.Errorf("the replaced DaemonSet pod's containers still exist: %+v", ps)
	}
	pods, _ := podsOf(ctx, ns, "edge")
	if ps := podmanPod(t, ctx, dev, pods[0].UID); ps == nil || len(ps.Containers) != 1 || !strings.HasSuffix(ps.Containers[0].Image, ":v3") {
		t.Errorf("the DaemonSet's new pod on the device: %+v", ps)
	}
	if err := cluster.Client.AppsV1().DaemonSets(ns).Delete(ctx, "edge", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "the DaemonSet's pods gone", func(ctx context.Context) (bool, string) {
		pods, _ := podsOf(ctx, ns, "edge")
		return len(pods) == 0, fmt.Sprint(len(pods))
	})
}
