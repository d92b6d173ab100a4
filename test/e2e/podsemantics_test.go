package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func podCondition(p *corev1.Pod, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

// Init containers run in order before the app, a native sidecar starts
// first and keeps running; readiness follows the probes (the Pod's Ready
// condition with them), and a failed liveness probe restarts the container
// — all on the device, in podman.
func TestInitContainersSidecarsAndProbes(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "initprobes")
	always := corev1.ContainerRestartPolicyAlways
	pod := sleeper(ns, "app", devA)
	pod.Spec.Volumes = []corev1.Volume{{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	mount := []corev1.VolumeMount{{Name: "work", MountPath: "/work"}}
	pod.Spec.InitContainers = []corev1.Container{
		{Name: "setup", Image: cluster.Image, Command: []string{"sh", "-c", "echo one >> /work/order"}, VolumeMounts: mount},
		{Name: "proxy", Image: cluster.Image, RestartPolicy: &always, VolumeMounts: mount,
			Command:      []string{"sh", "-c", "echo proxy >> /work/order; mkdir -p /p && echo up > /p/up && exec httpd -f -p 8081 -h /p"},
			StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8081)}}, PeriodSeconds: 1}},
		{Name: "check", Image: cluster.Image, Command: []string{"sh", "-c", "echo two >> /work/order"}, VolumeMounts: mount},
	}
	pod.Spec.Containers = []corev1.Container{
		{Name: "web", Image: cluster.Image, VolumeMounts: mount,
			Command: []string{"sh", "-c", "mkdir -p /www && cp /work/order /www/order && exec httpd -f -p 8080 -h /www"},
			Ports:   []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/order", Port: intstr.FromString("http")}},
				PeriodSeconds: 1}},
		// The exec probes' timeout (default 1 s) also covers the agent's
		// podman calls: on a machine busy with the whole suite, listing
		// containers once took longer, and the liveness probe restarted
		// the gate before the test could exec into it.
		{Name: "gate", Image: cluster.Image, Command: []string{"sh", "-c", "rm -f /tmp/die; exec sleep 3600"},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-f", "/tmp/ready"}}}, PeriodSeconds: 1, TimeoutSeconds: 5},
			LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "test ! -f /tmp/die"}}},
				PeriodSeconds: 1, FailureThreshold: 2, TimeoutSeconds: 5}},
	}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	get := func(ctx context.Context) (*corev1.Pod, error) {
		return cluster.Client.CoreV1().Pods(ns).Get(ctx, "app", metav1.GetOptions{})
	}
	eventually(t, 2*time.Minute, "inits done, web ready, gate running but not ready", func(ctx context.Context) (bool, string) {
		p, err := get(ctx)
		if err != nil || len(p.Status.InitContainerStatuses) != 3 || len(p.Status.ContainerStatuses) != 2 {
			return false, fmt.Sprint(err, p.Status)
		}
		is, cs := p.Status.InitContainerStatuses, p.Status.ContainerStatuses
		ok := is[0].State.Terminated != nil && is[0].State.Terminated.ExitCode == 0 &&
			is[1].State.Running != nil && is[1].Started != nil && *is[1].Started &&
			is[2].State.Terminated != nil && is[2].State.Terminated.ExitCode == 0 &&
			cs[0].Ready && cs[1].State.Running != nil && !cs[1].Ready &&
			podCondition(p, corev1.PodInitialized) == corev1.ConditionTrue && podCondition(p, corev1.PodReady) == corev1.ConditionFalse
		return ok, fmt.Sprintf("init %+v\ncontainers %+v\nconditions %+v", is, cs, p.Status.Conditions)
	})
	if out, errOut, code := kubectl(t, t.Context(), "", "exec", "-n", ns, "app", "-c", "web", "--", "cat", "/www/order"); code != 0 || out != "one\nproxy\ntwo\n" {
		t.Errorf("the init containers ran in the order %q (stderr %q), want one, proxy, two", out, errOut)
	}
	if _, errOut, code := kubectl(t, t.Context(), "", "exec", "-n", ns, "app", "-c", "gate", "--", "touch", "/tmp/ready"); code != 0 {
		t.Fatalf("kubectl exec touch: %s", errOut)
	}
	eventually(t, time.Minute, "the Pod Ready once the gate's readiness probe passes", func(ctx context.Context) (bool, string) {
		p, err := get(ctx)
		if err != nil {
			return false, err.Error()
		}
		return podCondition(p, corev1.PodReady) == corev1.ConditionTrue, fmt.Sprintf("%+v", p.Status.Conditions)
	})
	if _, errOut, code := kubectl(t, t.Context(), "", "exec", "-n", ns, "app", "-c", "gate", "--", "touch", "/tmp/die"); code != 0 {
		t.Fatalf("kubectl exec touch: %s", errOut)
	}
	eventually(t, 2*time.Minute, "the gate restarted by its liveness probe", func(ctx context.Context) (bool, string) {
		p, err := get(ctx)
		if err != nil {
			return false, err.Error()
		}
		cs := p.Status.ContainerStatuses[1]
		return cs.RestartCount >= 1 && cs.State.Running != nil, fmt.Sprintf("%+v", cs)
	})
	// The other containers were left alone.
	p, err := get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if n := p.Status.ContainerStatuses[0].RestartCount + p.Status.InitContainerStatuses[1].RestartCount; n != 0 {
		t.Errorf("web and the sidecar restarted %d times", n)
	}
}

// kubectl shows an init container that keeps failing as a pod does on a
// kubelet: Init:Error with restartPolicy Never, and the Pod fails.
func TestFailingInitContainer(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "initfail")
	pod := sleeper(ns, "broken", devB)
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	pod.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: cluster.Image, Command: []string{"sh", "-c", "exit 4"}}}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "kubectl get pod shows Init:Error", func(ctx context.Context) (bool, string) {
		out, errOut, _ := kubectl(t, ctx, "", "get", "pod", "-n", ns, "broken", "--no-headers")
		p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "broken", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodFailed && strings.Contains(out, "Init:Error"), out + errOut
	})
}

// postStart runs after the container starts (and before it counts as
// started), preStop before SIGTERM when the pod is deleted; termination
// messages come from the terminationMessagePath file or, with
// FallbackToLogsOnError, from the log.
func TestLifecycleHooksAndTerminationMessages(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "hooks")
	dir := t.TempDir()
	hostDir := corev1.HostPathDirectory
	pod := sleeper(ns, "hooked", devB)
	pod.Spec.TerminationGracePeriodSeconds = int64p(20)
	pod.Spec.Volumes = []corev1.Volume{{Name: "out", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &hostDir}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "out", MountPath: "/out"}}
	pod.Spec.Containers[0].Command = []string{"sh", "-c", `trap 'echo term >> /out/log; exit 0' TERM; while true; do sleep 1; done`}
	pod.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{
		PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "echo poststart >> /out/log"}}},
		PreStop:   &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "echo prestop >> /out/log"}}},
	}
	failing := func(name, cmd string, policy corev1.TerminationMessagePolicy) *corev1.Pod {
		p := sleeper(ns, name, devB)
		p.Spec.RestartPolicy = corev1.RestartPolicyNever
		p.Spec.Containers[0].Command = []string{"sh", "-c", cmd}
		p.Spec.Containers[0].TerminationMessagePolicy = policy
		return p
	}
	for _, p := range []*corev1.Pod{pod,
		failing("file", `echo "bye now" > /dev/termination-log; exit 3`, corev1.TerminationMessageReadFile),
		failing("fallback", `echo from-the-log; exit 2`, corev1.TerminationMessageFallbackToLogsOnError),
	} {
		if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	message := func(name, want string) {
		eventually(t, 2*time.Minute, name+"'s termination message", func(ctx context.Context) (bool, string) {
			p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil || len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Terminated == nil {
				return false, fmt.Sprint(err)
			}
			m := p.Status.ContainerStatuses[0].State.Terminated.Message
			return strings.Contains(m, want), fmt.Sprintf("message %q", m)
		})
	}
	message("file", "bye now")
	message("fallback", "from-the-log")

	waitRunning(t, ns, "hooked")
	eventually(t, time.Minute, "postStart ran and the container is ready", func(ctx context.Context) (bool, string) {
		b, _ := os.ReadFile(filepath.Join(dir, "log"))
		p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "hooked", metav1.GetOptions{})
		return err == nil && string(b) == "poststart\n" && podCondition(p, corev1.PodReady) == corev1.ConditionTrue, string(b)
	})
	if err := cluster.Client.CoreV1().Pods(ns).Delete(t.Context(), "hooked", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "preStop ran before SIGTERM", func(context.Context) (bool, string) {
		b, _ := os.ReadFile(filepath.Join(dir, "log"))
		return string(b) == "poststart\nprestop\nterm\n", fmt.Sprintf("%q", b)
	})
}
