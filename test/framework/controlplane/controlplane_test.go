package controlplane_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/vk-fleet/vk-fleet/test/framework/controlplane"
)

// binDir returns the control-plane binaries or skips the test, unless
// VKF_REQUIRE_CONTROLPLANE=1 demands them.
func binDir(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real control plane; skipped with -short")
	}
	dir, err := controlplane.BinDir()
	if err != nil {
		if os.Getenv("VKF_REQUIRE_CONTROLPLANE") == "1" {
			t.Fatalf("control-plane binaries required (VKF_REQUIRE_CONTROLPLANE=1): %v", err)
		}
		t.Skipf("control-plane binaries not available, skipping (build them with hack/controlplane-build.sh, "+
			"or set VKF_REQUIRE_CONTROLPLANE=1 to fail): %v", err)
	}
	return dir
}

func TestControlPlane(t *testing.T) {
	bin := binDir(t)
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))

	begin := time.Now()
	cp, err := controlplane.Start(ctx, controlplane.Config{
		BinDir:                 bin,
		Dir:                    t.TempDir(),
		NodeMonitorGracePeriod: 16 * time.Second,
		Logger:                 log,
	})
	if err != nil {
		t.Fatalf("starting control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping control plane: %v", err)
		}
	})
	t.Logf("control plane ready in %v at %s", time.Since(begin).Round(time.Millisecond), cp.APIServerURL)
	for _, p := range cp.Processes() {
		t.Logf("%-24s pid %-7d rss %s", p.Name, p.PID, rss(p.PID))
	}

	client, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("kubectl version reports the server version", func(t *testing.T) {
		out, err := cp.Kubectl(ctx, "version")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "Server Version: v1.37.2") {
			t.Errorf("kubectl version output lacks server v1.37.2:\n%s", out)
		}
	})

	t.Run("daemonset pod is bound to a tainted virtual node", func(t *testing.T) {
		testDaemonSetScheduling(t, client)
	})

	t.Run("client kubeconfig carries its own identity", func(t *testing.T) {
		cfg, err := cp.ClientRESTConfig("vkf-test-user", "vkf-testers")
		if err != nil {
			t.Fatal(err)
		}
		user := kubernetes.NewForConfigOrDie(cfg)
		review, err := user.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := review.Status.UserInfo
		if got.Username != "vkf-test-user" || !slices.Contains(got.Groups, "vkf-testers") {
			t.Errorf("authenticated as %q in %v, want vkf-test-user in vkf-testers", got.Username, got.Groups)
		}
		if _, err := user.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("listing nodes without RBAC grants: got %v, want forbidden", err)
		}
		path, err := cp.ClientKubeconfig("vkf-test-user", "vkf-testers")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cp.Kubectl(ctx, "--kubeconfig="+path, "get", "nodes"); err == nil || !strings.Contains(err.Error(), "forbidden") {
			t.Errorf("kubectl get nodes as vkf-test-user: got %v, want forbidden", err)
		}
	})

	procs := cp.Processes()
	for _, p := range procs {
		t.Logf("after the subtests: %-24s rss %s", p.Name, rss(p.PID))
	}
	if len(procs) != 4 {
		t.Errorf("got %d processes, want 4: %+v", len(procs), procs)
	}
	stopBegin := time.Now()
	if err := cp.Stop(); err != nil {
		t.Fatalf("stopping: %v", err)
	}
	t.Logf("stopped in %v", time.Since(stopBegin).Round(time.Millisecond))
	for _, p := range procs {
		if _, err := os.Stat("/proc/" + strconv.Itoa(p.PID)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s (pid %d) still exists after Stop", p.Name, p.PID)
		}
		if err := syscall.Kill(-p.PID, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process group of %s (pgid %d) still exists after Stop: %v", p.Name, p.PID, err)
		}
	}
	if err := cp.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// testDaemonSetScheduling creates a tainted Node that looks like a
// virtual-kubelet and a DaemonSet selecting it, and waits for the
// DaemonSet controller and the scheduler to bind a pod to the node.
func testDaemonSetScheduling(t *testing.T, client kubernetes.Interface) {
	ctx := t.Context()
	const nodeName = "vkf-test-device"
	labels := map[string]string{"type": "virtual-kubelet", "vk-fleet.io/test": "daemonset"}
	taint := corev1.Taint{Key: "virtual-kubelet.io/provider", Value: "vk-fleet", Effect: corev1.TaintEffectNoSchedule}

	resources := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("4"),
		corev1.ResourceMemory: resource.MustParse("4Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	node, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: labels},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{taint}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating node: %v", err)
	}
	now := metav1.Now()
	node.Status = corev1.NodeStatus{
		Capacity:    resources,
		Allocatable: resources,
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: now, LastTransitionTime: now,
		}},
	}
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("setting node status: %v", err)
	}

	podLabels := map[string]string{"app": "vkf-test-ds"}
	_, err = client.AppsV1().DaemonSets("default").Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "vkf-test-ds"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: podLabels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"vk-fleet.io/test": "daemonset"},
					Tolerations: []corev1.Toleration{{
						Key: taint.Key, Operator: corev1.TolerationOpEqual, Value: taint.Value, Effect: taint.Effect,
					}},
					Containers: []corev1.Container{{Name: "sleep", Image: "busybox", Command: []string{"sleep", "3600"}}},
				},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating daemonset: %v", err)
	}

	begin := time.Now()
	var bound *corev1.Pod
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err := client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=vkf-test-ds"})
		if err != nil {
			return false, err
		}
		for i := range pods.Items {
			if pods.Items[i].Spec.NodeName != "" {
				bound = &pods.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("waiting for a daemonset pod bound to %s: %v", nodeName, err)
	}
	t.Logf("pod %s bound to %s after %v", bound.Name, bound.Spec.NodeName, time.Since(begin).Round(time.Millisecond))
	if bound.Spec.NodeName != nodeName {
		t.Errorf("pod bound to %q, want %q", bound.Spec.NodeName, nodeName)
	}
}

// rss returns the resident set size of pid from /proc.
func rss(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return "?"
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}
