package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/registry"
	"github.com/vk-fleet/vk-fleet/test/framework/devcluster"
	"github.com/vk-fleet/vk-fleet/test/framework/podmantest"
)

// On a Pi, podman.socket may come up after the agent. The agent must start
// anyway, report the missing runtime on its Node, keep its pods' desired
// state, and run them once podman answers.
func TestAgentStartsBeforePodman(t *testing.T) {
	needCluster(t)
	const dev = "pi-lateboot"
	ctx := t.Context()
	// A short directory: the socket path must stay below 108 bytes.
	dir, err := os.MkdirTemp("", "vkf-late-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	extraDevice(t, dev, devcluster.EnrollOptions{PodmanURI: "unix://" + dir + "/podman.sock"})

	eventually(t, time.Minute, dev+" reporting that podman is unavailable", func(ctx context.Context) (bool, string) {
		n, err := cluster.Client.CoreV1().Nodes().Get(ctx, dev, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionFalse && c.Reason == "ContainerRuntimeUnavailable" &&
					strings.Contains(c.Message, "podman"), fmt.Sprintf("%s %s: %s", c.Status, c.Reason, c.Message)
			}
		}
		return false, "no Ready condition"
	})

	ns := createNamespace(t, "bootorder")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "early"},
		Spec: corev1.PodSpec{
			NodeName:                      dev,
			Tolerations:                   []corev1.Toleration{{Key: registry.TaintKey, Operator: corev1.TolerationOpExists}},
			Containers:                    []corev1.Container{{Name: "main", Image: cluster.Image, Command: []string{"sleep", "3600"}}},
			TerminationGracePeriodSeconds: int64p(1),
		},
	}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The agent keeps running without podman (it used to exit at once).
	eventually(t, time.Minute, "the agent to store the pod while podman is down", func(ctx context.Context) (bool, string) {
		if cluster.Agent(dev).Exited() {
			t.Fatalf("agent exited without podman:\n%s", cluster.Agent(dev).Tail(20))
		}
		tail := cluster.Agent(dev).Tail(200)
		return strings.Contains(tail, "workload received"), "agent log does not show the workload yet"
	})

	svc, err := podmantest.StartService(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		svc.Stop()
		rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		podmantest.Reset(rctx, svc.Conf)
	})
	if err := podmantest.BuildBusyboxImage(ctx, svc.Conf, cluster.Image); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "the pod Running and "+dev+" Ready once podman is up", func(ctx context.Context) (bool, string) {
		p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "early", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		n, err := cluster.Client.CoreV1().Nodes().Get(ctx, dev, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning && nodeReady(n), fmt.Sprintf("pod %s, node ready %v", p.Status.Phase, nodeReady(n))
	})
	if err := cluster.Client.CoreV1().Pods(ns).Delete(ctx, "early", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}
