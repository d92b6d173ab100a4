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

	"github.com/vk-fleet/vk-fleet/registry"
	"github.com/vk-fleet/vk-fleet/zitadel/zitadeltest"
)

// A device enrolled with `fleetctl enroll --zitadel` gets a machine user
// created through Zitadel's API and connects with that user's tokens. The
// provider is restarted for this (with Zitadel configured), which also shows
// that a provider restart keeps every device's containers running.
func TestZitadelDeviceEnrollsAndConnects(t *testing.T) {
	needCluster(t)
	z := zitadeltest.New(t)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "client-secret")
	adminFile := filepath.Join(dir, "admin-token")
	for f, v := range map[string]string{secretFile: z.APIClientSecret, adminFile: z.AdminToken} {
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A pod that runs across the provider's restart with new flags.
	ns := createNamespace(t, "zitadel-restart")
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), sleeper(ns, "bystander", devA), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bystander := *waitRunning(t, ns, "bystander")
	before := runsOf(t, []corev1.Pod{bystander})
	cluster.StopProvider()
	restart := func(extra ...string) {
		if err := cluster.StartProvider(context.Background(), extra...); err != nil {
			t.Fatal(err)
		}
	}
	restart("--zitadel-issuer", z.Issuer, "--zitadel-client-id", z.APIClientID,
		"--zitadel-client-secret-file", secretFile, "--zitadel-project-id", z.ProjectID)
	t.Cleanup(func() {
		cluster.StopProvider()
		restart()
	})

	const name = "pi-zitadel"
	tok := createToken(t, "--ttl", "10m")
	root := cluster.DeviceRoot(name)
	out, err := cluster.Fleetctl(t.Context(), "enroll", "--server", cluster.NATSURL, "--token", tok, "--name", name,
		"--ca", cluster.CAFile(), "--root", root, "--state-dir", filepath.Join(dir, "state"), "--podman-url", cluster.Podman.URI,
		"--zitadel", z.Issuer, "--zitadel-admin-token-file", adminFile, "--zitadel-project-id", z.ProjectID)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	n, err := cluster.Client.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	userID := n.Annotations[registry.AnnotationZitadelUser]
	if userID == "" || n.Annotations[registry.AnnotationNKey] != "" {
		t.Fatalf("node annotations = %v, want a Zitadel user and no nkey", n.Annotations)
	}
	if _, ok := z.User(userID); !ok {
		t.Fatalf("machine user %s was not created in Zitadel", userID)
	}
	key := filepath.Join(root, "etc/vk-fleet/zitadel-key.json")
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("zitadel key file: %v", err)
	}

	if err := cluster.StartAgent(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cluster.StopAgent(name)
		_, _ = cluster.Fleetctl(context.Background(), "revoke", name)
	})
	eventually(t, time.Minute, name+" Ready", func(ctx context.Context) (bool, string) {
		n, err := cluster.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return nodeReady(n), fmt.Sprint(n.Status.Conditions)
	})
	b, _ := os.ReadFile(cluster.Agent(name).Log)
	if strings.Contains(string(b), z.AdminToken) {
		t.Error("agent log contains the admin token")
	}
	// The provider restart left devA's container alone.
	if after := runsOf(t, []corev1.Pod{bystander}); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("devA's container changed across a provider restart: %v → %v", before, after)
	}
	_ = cluster.Client.CoreV1().Pods(ns).Delete(t.Context(), "bystander", metav1.DeleteOptions{})
}
