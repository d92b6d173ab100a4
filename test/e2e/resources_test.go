package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/test/framework/devcluster"
	"github.com/vk-fleet/vk-fleet/test/framework/podmantest"
)

// nodeConditionOf returns n's condition t.
func nodeConditionOf(n *corev1.Node, t corev1.NodeConditionType) corev1.NodeCondition {
	for _, c := range n.Status.Conditions {
		if c.Type == t {
			return c
		}
	}
	return corev1.NodeCondition{Type: t, Status: corev1.ConditionUnknown}
}

// A device Node holds back vk-fleet's --system-reserved (default
// cpu=100m,memory=256Mi) and the agent's hard eviction thresholds
// (memory.available<100Mi, nodefs.available<10%) from its allocatable, as
// a kubelet does, and its pressure conditions are False with kubelet's
// reasons and messages.
func TestNodeAllocatableAndPressureConditions(t *testing.T) {
	needCluster(t)
	t.Parallel()
	var n *corev1.Node
	eventually(t, time.Minute, devA+" Ready", func(ctx context.Context) (bool, string) {
		var err error
		n, err = cluster.Client.CoreV1().Nodes().Get(ctx, devA, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return nodeReady(n), fmt.Sprint(n.Status.Conditions)
	})
	diff := func(name corev1.ResourceName) resource.Quantity {
		c, a := n.Status.Capacity[name], n.Status.Allocatable[name]
		c.Sub(a)
		return c
	}
	if d := diff(corev1.ResourceCPU); d.Cmp(resource.MustParse("100m")) != 0 {
		t.Errorf("cpu: capacity %s - allocatable %s = %s, want 100m", n.Status.Capacity.Cpu(), n.Status.Allocatable.Cpu(), d.String())
	}
	if d := diff(corev1.ResourceMemory); d.Value() != (256+100)<<20 {
		t.Errorf("memory: capacity %s - allocatable %s = %d bytes, want 256Mi + 100Mi", n.Status.Capacity.Memory(), n.Status.Allocatable.Memory(), d.Value())
	}
	capStorage := n.Status.Capacity[corev1.ResourceEphemeralStorage]
	if capStorage.Value() <= 0 {
		t.Errorf("no ephemeral-storage capacity: %v", n.Status.Capacity)
	} else if d := diff(corev1.ResourceEphemeralStorage); d.Value() != int64(float64(capStorage.Value())*10/100) {
		t.Errorf("ephemeral-storage: capacity - allocatable = %d, want 10%% of %d", d.Value(), capStorage.Value())
	}
	for typ, want := range map[corev1.NodeConditionType][2]string{
		corev1.NodeMemoryPressure: {"KubeletHasSufficientMemory", "kubelet has sufficient memory available"},
		corev1.NodeDiskPressure:   {"KubeletHasNoDiskPressure", "kubelet has no disk pressure"},
		corev1.NodePIDPressure:    {"KubeletHasSufficientPID", "kubelet has sufficient PID available"},
	} {
		if c := nodeConditionOf(n, typ); c.Status != corev1.ConditionFalse || c.Reason != want[0] || c.Message != want[1] {
			t.Errorf("%s: %s %s %q, want False %s %q", typ, c.Status, c.Reason, c.Message, want[0], want[1])
		}
	}
	for _, taint := range n.Spec.Taints {
		if strings.HasSuffix(taint.Key, "-pressure") {
			t.Errorf("pressure taint on a device without pressure: %v", taint)
		}
	}
}

// Requests and limits reach the container's cgroups as kubelet sets them:
// the memory limit, a CFS quota from the CPU limit and CPU shares from the
// request (milliCPU*1024/1000).
func TestResourcesInTheContainer(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "resources")
	pod := sleeper(ns, "limited", devA)
	pod.Spec.Containers[0].Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("48Mi")},
	}
	besteffort := sleeper(ns, "besteffort", devA)
	for _, p := range []*corev1.Pod{pod, besteffort} {
		if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitRunning(t, ns, "limited")
	waitRunning(t, ns, "besteffort")
	// cgroup v1 (this machine): the container sees its own cgroup's files.
	read := func(name, file string) string {
		t.Helper()
		for _, dir := range []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"} {
			if !strings.HasPrefix(file, "memory.") && strings.HasSuffix(dir, "memory") {
				continue
			}
			out, _, code := kubectl(t, t.Context(), "", "exec", "-n", ns, name, "--", "cat", dir+"/"+file)
			if code == 0 {
				return strings.TrimSpace(out)
			}
		}
		t.Errorf("%s: no cgroup file %s", name, file)
		return ""
	}
	if got := read("limited", "memory.limit_in_bytes"); got != fmt.Sprint(48<<20) {
		t.Errorf("memory.limit_in_bytes = %s, want %d", got, 48<<20)
	}
	if got := read("limited", "cpu.cfs_quota_us"); got != "50000" {
		t.Errorf("cpu.cfs_quota_us = %s, want 50000 (500m of a 100ms period)", got)
	}
	if got := read("limited", "cpu.cfs_period_us"); got != "100000" {
		t.Errorf("cpu.cfs_period_us = %s, want 100000", got)
	}
	if got := read("limited", "cpu.shares"); got != "256" {
		t.Errorf("cpu.shares = %s, want 256 (250m)", got)
	}
	if got := read("besteffort", "cpu.shares"); got != "2" {
		t.Errorf("best-effort cpu.shares = %s, want kubelet's minimum 2", got)
	}
	if got := read("besteffort", "cpu.cfs_quota_us"); got != "-1" {
		t.Errorf("best-effort cpu.cfs_quota_us = %s, want -1 (no limit)", got)
	}
}

// A container that exceeds its memory limit is killed by the kernel and
// ends OOMKilled, as kubectl shows it for a kubelet.
func TestMemoryLimitOOMKilled(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "oom")
	pod := sleeper(ns, "hog", devA)
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	c := &pod.Spec.Containers[0]
	c.Command = []string{"sh", "-c", oomScript}
	c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("20Mi")}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var reason string
	eventually(t, 2*time.Minute, "hog killed", func(ctx context.Context) (bool, string) {
		p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "hog", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if len(p.Status.ContainerStatuses) == 0 {
			return false, string(p.Status.Phase)
		}
		st := p.Status.ContainerStatuses[0].State
		if st.Terminated == nil {
			return false, fmt.Sprintf("%s %+v", p.Status.Phase, st)
		}
		reason = st.Terminated.Reason
		return st.Terminated.ExitCode == 137 && p.Status.Phase == corev1.PodFailed,
			fmt.Sprintf("%s: %s exit %d", p.Status.Phase, st.Terminated.Reason, st.Terminated.ExitCode)
	})
	if reason != "OOMKilled" {
		if podmanReportsOOM(t) {
			t.Errorf("terminated with reason %s, want OOMKilled", reason)
		} else {
			t.Logf("reason %s: podman on this machine does not report OOM kills (conmon cannot watch the container's memory cgroup)", reason)
		}
	}
}

// podmanReportsOOM reports whether podman itself, on this machine, says
// OOMKilled for a container the kernel killed at its memory limit: podman
// learns it from conmon, which on cgroup v1 watches memory.oom_control of
// the container's cgroup — and some sandboxes hide it.
func podmanReportsOOM(t *testing.T) bool {
	name := "oom-probe-" + strings.ToLower(rand.Text()[:8])
	cmd := exec.CommandContext(t.Context(), "podman", "run", "--name", name, "--memory", "20m", cluster.Image,
		"sh", "-c", oomScript)
	cmd.Env = podmantest.Env(cluster.Podman.Conf)
	_ = cmd.Run() // exits 137
	t.Cleanup(func() {
		rm := exec.Command("podman", "rm", "-f", name)
		rm.Env = podmantest.Env(cluster.Podman.Conf)
		_ = rm.Run()
	})
	return podmanCLI(t, "inspect", name, "--format", "{{.State.OOMKilled}}") == "true"
}

// oomScript keeps 200 MB in a shell variable: far over a 20Mi limit.
const oomScript = `x=$(head -c 200000000 /dev/zero | tr "\0" x); echo survived ${#x}`

// A device whose eviction thresholds are met reports MemoryPressure,
// DiskPressure and PIDPressure with kubelet's reasons, and the node
// lifecycle controller taints its Node as it does a kubelet's; the
// device's own --system-reserved overrides vk-fleet's.
func TestPressureConditionsTrue(t *testing.T) {
	needCluster(t)
	t.Parallel()
	const dev = "pi-pressure"
	if err := cluster.EnrollWith(t.Context(), dev, devcluster.EnrollOptions{}); err != nil {
		t.Fatal(err)
	}
	// Thresholds no device can stay above: every signal's available
	// amount is below 100% of its capacity.
	if err := cluster.StartAgentWith(t.Context(), dev,
		"--eviction-hard", "memory.available<100%,nodefs.available<100%,pid.available<100%",
		"--system-reserved", "cpu=1"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cluster.StopAgent(dev)
		_ = cluster.Client.CoreV1().Nodes().Delete(context.Background(), dev, metav1.DeleteOptions{})
	})
	wantTaints := []string{"node.kubernetes.io/disk-pressure", "node.kubernetes.io/memory-pressure", "node.kubernetes.io/pid-pressure"}
	var n *corev1.Node
	eventually(t, 90*time.Second, dev+" under pressure and tainted", func(ctx context.Context) (bool, string) {
		var err error
		n, err = cluster.Client.CoreV1().Nodes().Get(ctx, dev, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		var taints []string
		for _, tn := range n.Spec.Taints {
			if strings.HasSuffix(tn.Key, "-pressure") && tn.Effect == corev1.TaintEffectNoSchedule {
				taints = append(taints, tn.Key)
			}
		}
		slices.Sort(taints)
		seen := fmt.Sprintf("taints %v; memory %s disk %s pid %s", taints, nodeConditionOf(n, corev1.NodeMemoryPressure).Status,
			nodeConditionOf(n, corev1.NodeDiskPressure).Status, nodeConditionOf(n, corev1.NodePIDPressure).Status)
		return slices.Equal(taints, wantTaints), seen
	})
	for typ, want := range map[corev1.NodeConditionType][2]string{
		corev1.NodeMemoryPressure: {"KubeletHasInsufficientMemory", "kubelet has insufficient memory available"},
		corev1.NodeDiskPressure:   {"KubeletHasDiskPressure", "kubelet has disk pressure"},
		corev1.NodePIDPressure:    {"KubeletHasInsufficientPID", "kubelet has insufficient PID available"},
	} {
		if c := nodeConditionOf(n, typ); c.Status != corev1.ConditionTrue || c.Reason != want[0] || c.Message != want[1] {
			t.Errorf("%s: %s %s %q, want True %s %q", typ, c.Status, c.Reason, c.Message, want[0], want[1])
		}
	}
	// The device reserves a whole CPU; memory and disk are all held back
	// by the thresholds.
	cpu := n.Status.Capacity.Cpu().DeepCopy()
	cpu.Sub(*n.Status.Allocatable.Cpu())
	if cpu.Cmp(resource.MustParse("1")) != 0 {
		t.Errorf("cpu held back: %s, want the device's own 1", cpu.String())
	}
	if m := n.Status.Allocatable.Memory(); !m.IsZero() {
		t.Errorf("allocatable memory %s, want 0", m)
	}
	if s := n.Status.Allocatable.StorageEphemeral(); !s.IsZero() {
		t.Errorf("allocatable ephemeral-storage %s, want 0", s)
	}
	if !nodeReady(n) {
		t.Errorf("%s not Ready under pressure (a kubelet's Node stays Ready)", dev)
	}
}
