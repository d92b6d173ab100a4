package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/nodeagent"
	"github.com/vk-fleet/vk-fleet/test/framework/devcluster"
)

// Scenario a: devices show up as Ready Nodes with labels, taint, nodeInfo
// and capacity.
func TestDevicesAreReadyNodes(t *testing.T) {
	needCluster(t)
	if err := cluster.WaitNodesReady(t.Context(), 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{devA, devB} {
		n, err := cluster.Client.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for k, want := range map[string]string{
			"type": "virtual-kubelet", "kubernetes.io/os": "linux",
			"kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name,
		} {
			if got := n.Labels[k]; got != want {
				t.Errorf("node %s label %s = %q, want %q", name, k, got, want)
			}
		}
		found := false
		for _, taint := range n.Spec.Taints {
			if taint.Key == "virtual-kubelet.io/provider" && taint.Value == "vk-fleet" && taint.Effect == corev1.TaintEffectNoSchedule {
				found = true
			}
		}
		if !found {
			t.Errorf("node %s lacks the device taint: %v", name, n.Spec.Taints)
		}
		info := n.Status.NodeInfo
		if info.Architecture != "amd64" || info.OperatingSystem != "linux" || info.KernelVersion == "" || info.OSImage == "" {
			t.Errorf("node %s nodeInfo incomplete: %+v", name, info)
		}
		if len(info.ContainerRuntimeVersion) < len("podman://4") || info.ContainerRuntimeVersion[:9] != "podman://" {
			t.Errorf("node %s containerRuntimeVersion = %q, want podman://<version>", name, info.ContainerRuntimeVersion)
		}
		if info.KubeletVersion == "" {
			t.Errorf("node %s has no kubeletVersion", name)
		}
		cpu, mem, pods := n.Status.Capacity.Cpu(), n.Status.Capacity.Memory(), n.Status.Capacity.Pods()
		if cpu.IsZero() || mem.IsZero() || pods.IsZero() {
			t.Errorf("node %s capacity incomplete: %v", name, n.Status.Capacity)
		}
		if len(n.Status.Addresses) == 0 {
			t.Errorf("node %s has no addresses", name)
		}
	}
}

// Scenarios b, c and d: a DaemonSet with a nodeSelector runs on the
// matching device only; relabelling removes the pod and its container;
// deleting the DaemonSet removes every container.
func TestDaemonSetFollowsNodeSelector(t *testing.T) {
	needCluster(t)
	if err := cluster.WaitNodesReady(t.Context(), 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	ns := createNamespace(t, "ds-selector")
	labelNode(t, devA, "room", "kitchen")
	t.Cleanup(func() { labelNode(t, devA, "room", "") })

	ds := daemonSet(ns, "sleeper", map[string]string{"room": "kitchen"}, "sleep", "3600")
	if _, err := cluster.Client.AppsV1().DaemonSets(ns).Create(t.Context(), ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// b: Running on devA only, and really running in podman.
	var pod corev1.Pod
	eventually(t, 2*time.Minute, "a Running pod on "+devA, func(ctx context.Context) (bool, string) {
		pods, err := podsOf(ctx, ns, "sleeper")
		if err != nil || len(pods) != 1 {
			return false, fmt.Sprintf("%d pods, err %v", len(pods), err)
		}
		pod = pods[0]
		return pod.Spec.NodeName == devA && pod.Status.Phase == corev1.PodRunning,
			fmt.Sprintf("pod %s on %q phase %s reason %q", pod.Name, pod.Spec.NodeName, pod.Status.Phase, pod.Status.Reason)
	})
	if cs := pod.Status.ContainerStatuses; len(cs) != 1 || cs[0].State.Running == nil || !cs[0].Ready || cs[0].ContainerID == "" {
		t.Errorf("container status = %+v, want one running, ready container with an ID", cs)
	}
	if pod.Status.StartTime == nil || pod.Status.HostIP == "" {
		t.Errorf("pod status lacks startTime or hostIP: %+v", pod.Status)
	}
	p := podmanPod(t, t.Context(), devA, pod.UID)
	if p == nil || len(p.Containers) != 1 || p.Containers[0].State != nodeagent.ContainerRunning {
		t.Fatalf("podman pod for %s = %+v, want one running container", pod.UID, p)
	}
	if got := podmanPods(t, t.Context(), devB); len(got) != 0 {
		t.Errorf("device %s runs %d pods, want none", devB, len(got))
	}
	// DaemonSet status comes from the Pod status.
	eventually(t, time.Minute, "DaemonSet ready", func(ctx context.Context) (bool, string) {
		d, err := cluster.Client.AppsV1().DaemonSets(ns).Get(ctx, "sleeper", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return d.Status.NumberReady == 1 && d.Status.DesiredNumberScheduled == 1, fmt.Sprintf("%+v", d.Status)
	})

	// c: relabel → pod deleted, container gone from podman.
	labelNode(t, devA, "room", "")
	eventually(t, 2*time.Minute, "the pod to be deleted and its container removed", func(ctx context.Context) (bool, string) {
		_, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		gone := apierrors.IsNotFound(err)
		inPodman := podmanPod(t, ctx, devA, pod.UID) != nil
		if gone && inPodman {
			t.Errorf("pod object %s is gone while its podman pod still exists", pod.Name)
		}
		return gone && !inPodman, fmt.Sprintf("pod gone=%v in podman=%v", gone, inPodman)
	})

	// d: relabel, wait for the pod, delete the DaemonSet → every container gone.
	labelNode(t, devA, "room", "kitchen")
	eventually(t, 2*time.Minute, "the pod back on "+devA, func(ctx context.Context) (bool, string) {
		pods, err := podsOf(ctx, ns, "sleeper")
		if err != nil || len(pods) != 1 {
			return false, fmt.Sprintf("%d pods, err %v", len(pods), err)
		}
		return pods[0].Status.Phase == corev1.PodRunning, string(pods[0].Status.Phase)
	})
	policy := metav1.DeletePropagationForeground
	if err := cluster.Client.AppsV1().DaemonSets(ns).Delete(t.Context(), "sleeper", metav1.DeleteOptions{PropagationPolicy: &policy}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "every container of the DaemonSet removed", func(ctx context.Context) (bool, string) {
		pods, err := podsOf(ctx, ns, "sleeper")
		inPodman := len(podmanPods(t, ctx, devA))
		return err == nil && len(pods) == 0 && inPodman == 0, fmt.Sprintf("%d pods, %d podman pods", len(pods), inPodman)
	})
}

// Scenario e: a container that exits 3 with restartPolicy Never gives a
// Failed pod whose containerStatus shows exit code 3.
func TestExitCodeWithRestartNever(t *testing.T) {
	needCluster(t)
	ns := createNamespace(t, "exit-code")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "exit3"},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": devB},
			Tolerations:                   []corev1.Toleration{deviceToleration},
			TerminationGracePeriodSeconds: int64p(1),
			Containers: []corev1.Container{{
				Name: "main", Image: cluster.Image, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{"sh", "-c", "echo bye; exit 3"},
			}},
		},
	}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "the pod to fail with exit code 3", func(ctx context.Context) (bool, string) {
		p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "exit3", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		cs := p.Status.ContainerStatuses
		if p.Status.Phase != corev1.PodFailed || len(cs) != 1 || cs[0].State.Terminated == nil {
			return false, fmt.Sprintf("phase %s statuses %+v", p.Status.Phase, cs)
		}
		if got := cs[0].State.Terminated.ExitCode; got != 3 {
			t.Fatalf("exit code = %d, want 3", got)
		}
		if cs[0].RestartCount != 0 {
			t.Fatalf("restartCount = %d, want 0 with restartPolicy Never", cs[0].RestartCount)
		}
		return true, ""
	})
	if err := cluster.Client.CoreV1().Pods(ns).Delete(t.Context(), "exit3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the failed pod's container removed", func(ctx context.Context) (bool, string) {
		n := len(podmanPods(t, ctx, devB))
		return n == 0, fmt.Sprintf("%d podman pods", n)
	})
}

// Scenario f: a stopped agent makes its Node NotReady/Unknown within the
// grace period; started again, the Node is Ready and the container that
// kept running was not restarted.
func TestAgentOutageKeepsContainers(t *testing.T) {
	needCluster(t)
	if err := cluster.WaitNodesReady(t.Context(), 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	ns := createNamespace(t, "outage")
	labelNode(t, devB, "room", "garage")
	t.Cleanup(func() { labelNode(t, devB, "room", "") })
	ds := daemonSet(ns, "survivor", map[string]string{"room": "garage"}, "sleep", "3600")
	if _, err := cluster.Client.AppsV1().DaemonSets(ns).Create(t.Context(), ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	eventually(t, 2*time.Minute, "a Running pod on "+devB, func(ctx context.Context) (bool, string) {
		pods, err := podsOf(ctx, ns, "survivor")
		if err != nil || len(pods) != 1 {
			return false, fmt.Sprintf("%d pods, err %v", len(pods), err)
		}
		pod = pods[0]
		return pod.Status.Phase == corev1.PodRunning, string(pod.Status.Phase)
	})
	before := podmanPod(t, t.Context(), devB, pod.UID)
	if before == nil || len(before.Containers) != 1 {
		t.Fatalf("podman pod = %+v", before)
	}

	stopped := time.Now()
	cluster.StopAgent(devB)
	grace := 20*time.Second + 15*time.Second // node-monitor-grace-period + the monitor's period and slack
	eventually(t, grace+30*time.Second, devB+" NotReady or Unknown", func(ctx context.Context) (bool, string) {
		n, err := cluster.Client.CoreV1().Nodes().Get(ctx, devB, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		s := devcluster.NodeReady(n)
		return s != corev1.ConditionTrue, string(s)
	})
	if took := time.Since(stopped); took > grace {
		t.Errorf("node went NotReady after %s, want within %s", took, grace)
	}
	// The container keeps running while the agent is away.
	if p := podmanPod(t, t.Context(), devB, pod.UID); p == nil || p.Containers[0].State != nodeagent.ContainerRunning {
		t.Fatalf("container stopped while the agent was away: %+v", p)
	}

	if err := cluster.StartAgent(t.Context(), devB); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, devB+" Ready again", func(ctx context.Context) (bool, string) {
		n, err := cluster.Client.CoreV1().Nodes().Get(ctx, devB, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		s := devcluster.NodeReady(n)
		return s == corev1.ConditionTrue, string(s)
	})
	after := podmanPod(t, t.Context(), devB, pod.UID)
	if after == nil || after.Containers[0].ID != before.Containers[0].ID || !after.Containers[0].StartedAt.Equal(before.Containers[0].StartedAt) {
		t.Fatalf("container was restarted: before %+v after %+v", before.Containers, after)
	}
	p, err := cluster.Client.CoreV1().Pods(ns).Get(t.Context(), pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("pod lost across the outage: %v", err)
	}
	if p.UID != pod.UID || p.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("pod recreated or restarted: uid %s→%s restarts %d", pod.UID, p.UID, p.Status.ContainerStatuses[0].RestartCount)
	}
	if err := cluster.Client.AppsV1().DaemonSets(ns).Delete(t.Context(), "survivor", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "the survivor's containers removed", func(ctx context.Context) (bool, string) {
		n := len(podmanPods(t, ctx, devB))
		return n == 0, fmt.Sprintf("%d podman pods", n)
	})
}
