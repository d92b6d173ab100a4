package e2e

import (
	"archive/tar"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/test/framework/podmantest"
)

// grpcImage builds testdata/grpchealth into a one-file image in the
// cluster's podman and returns its name.
func grpcImage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "grpchealth")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./testdata/grpchealth")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the gRPC health server: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dir, "rootfs.tar")
	f, err := os.Create(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	if err := tw.WriteHeader(&tar.Header{Name: "grpchealth", Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	const image = "localhost/vkf-grpchealth:e2e"
	imp := exec.CommandContext(t.Context(), "podman", "import", "--change", "ENTRYPOINT [\"/grpchealth\"]", tarPath, image)
	imp.Env = podmantest.Env(cluster.Podman.Conf)
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("podman import: %v\n%s", err, out)
	}
	return image
}

// gRPC probes speak grpc.health.v1 to the container, on the device: a
// SERVING service makes it ready, a NOT_SERVING liveness check restarts it.
func TestGRPCProbesOnTheDevice(t *testing.T) {
	needCluster(t)
	t.Parallel()
	image := grpcImage(t)
	ns := createNamespace(t, "grpcprobe")
	svc := func(s string) *string { return &s }
	grpcProbe := func(service string, failures int32) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9090, Service: svc(service)}},
			PeriodSeconds: 1, FailureThreshold: failures}
	}
	ready := sleeper(ns, "ready", devA)
	ready.Spec.Containers[0].Image, ready.Spec.Containers[0].Command = image, nil
	ready.Spec.Containers[0].ImagePullPolicy = corev1.PullNever
	ready.Spec.Containers[0].ReadinessProbe = grpcProbe("up", 3)
	dying := ready.DeepCopy()
	dying.Name = "dying"
	dying.Spec.Containers[0].ReadinessProbe = nil
	dying.Spec.Containers[0].LivenessProbe = grpcProbe("down", 1)
	for _, p := range []*corev1.Pod{ready, dying} {
		if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 2*time.Minute, "the SERVING pod Ready, the NOT_SERVING one restarted", func(ctx context.Context) (bool, string) {
		r, err1 := cluster.Client.CoreV1().Pods(ns).Get(ctx, "ready", metav1.GetOptions{})
		d, err2 := cluster.Client.CoreV1().Pods(ns).Get(ctx, "dying", metav1.GetOptions{})
		if err1 != nil || err2 != nil || len(d.Status.ContainerStatuses) == 0 {
			return false, fmt.Sprint(err1, err2)
		}
		return podCondition(r, corev1.PodReady) == corev1.ConditionTrue && d.Status.ContainerStatuses[0].RestartCount >= 1,
			fmt.Sprintf("ready: %v; dying: %+v", r.Status.Conditions, d.Status.ContainerStatuses[0])
	})
}
