package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NATS refuses connections without credentials, even over TLS.
func TestNATSRefusesAnonymousConnections(t *testing.T) {
	needCluster(t)
	nc, err := nats.Connect(cluster.NATSURL, nats.RootCAs(cluster.CAFile()), nats.MaxReconnects(0))
	if err == nil {
		nc.Close()
		t.Fatal("an anonymous connection was accepted")
	}
	if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("anonymous connection failed with %v, want an authorization error", err)
	}
	// Plain TCP without TLS is refused too.
	plain := strings.Replace(cluster.NATSURL, "tls://", "nats://", 1)
	if nc, err := nats.Connect(plain, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a connection without TLS was accepted")
	}
}

func enroll(t *testing.T, token, name string) (string, error) {
	t.Helper()
	return cluster.Fleetctl(t.Context(), "enroll", "--server", cluster.NATSURL, "--token", token, "--name", name,
		"--ca", cluster.CAFile(), "--root", filepath.Join(t.TempDir(), name), "--state-dir", t.TempDir())
}

func createToken(t *testing.T, args ...string) string {
	t.Helper()
	out, err := cluster.Fleetctl(t.Context(), append([]string{"token", "create"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func TestEnrollmentTokenRules(t *testing.T) {
	needCluster(t)
	t.Run("expired token says so", func(t *testing.T) {
		tok := createToken(t, "--ttl", "1s")
		expiry := time.Now().Add(1500 * time.Millisecond)
		eventually(t, 10*time.Second, "the token to expire", func(context.Context) (bool, string) {
			return time.Now().After(expiry), ""
		})
		out, err := enroll(t, tok, "pi-late")
		if err == nil || !strings.Contains(out, "expired") {
			t.Fatalf("enrolling with an expired token: err %v, output %q; want an error saying it expired", err, out)
		}
	})
	t.Run("used-up token says so", func(t *testing.T) {
		tok := createToken(t, "--ttl", "10m", "--uses", "1")
		if out, err := enroll(t, tok, "pi-first"); err != nil {
			t.Fatalf("first enrollment: %v %s", err, out)
		}
		out, err := enroll(t, tok, "pi-second")
		if err == nil || !strings.Contains(out, "no uses left") {
			t.Fatalf("second enrollment with a single-use token: err %v, output %q", err, out)
		}
		if _, err := cluster.Client.CoreV1().Nodes().Get(t.Context(), "pi-second", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("a refused enrollment registered a Node: %v", err)
		}
	})
	t.Run("taken name says so", func(t *testing.T) {
		tok := createToken(t, "--ttl", "10m", "--uses", "2")
		out, err := enroll(t, tok, devA)
		if err == nil || !strings.Contains(out, "already taken") {
			t.Fatalf("enrolling an existing name: err %v, output %q", err, out)
		}
	})
	t.Run("wrong secret is refused", func(t *testing.T) {
		tok := createToken(t, "--ttl", "10m")
		forged := tok[:7] + strings.Repeat("0", 16)
		out, err := enroll(t, forged, "pi-forged")
		if err == nil || !strings.Contains(out, "refused the enrollment token") {
			t.Fatalf("enrolling with a forged secret: err %v, output %q", err, out)
		}
	})
	t.Run("labels become Node labels and the Node waits NotReady", func(t *testing.T) {
		tok := createToken(t, "--ttl", "10m", "--label", "fleet=west")
		root := filepath.Join(t.TempDir(), "root")
		// --install runs the agent below --root to check it can run pods.
		agent, err := os.ReadFile(cluster.Binary("device-agent"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(root, "opt/bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "opt/bin/device-agent"), agent, 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := cluster.Fleetctl(t.Context(), "enroll", "--server", cluster.NATSURL, "--token", tok, "--name", "pi-labelled",
			"--label", "room=attic", "--ca", cluster.CAFile(), "--root", root, "--install", "--agent-binary", "/opt/bin/device-agent")
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		unit, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/vk-fleet-agent.service"))
		if err != nil || !strings.Contains(string(unit), "ExecStart=/opt/bin/device-agent --config "+filepath.Join(root, "etc/vk-fleet/agent.json")) {
			t.Errorf("systemd unit: %v\n%s", err, unit)
		}
		cfg, err := os.ReadFile(filepath.Join(root, "etc/vk-fleet/agent.json"))
		if err != nil || !strings.Contains(string(cfg), `"name": "pi-labelled"`) || strings.Contains(string(cfg), "SU") {
			t.Errorf("agent configuration (must name the device and hold no seed): %v\n%s", err, cfg)
		}
		n, err := cluster.Client.CoreV1().Nodes().Get(t.Context(), "pi-labelled", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n.Labels["fleet"] != "west" || n.Labels["room"] != "attic" {
			t.Errorf("node labels = %v", n.Labels)
		}
		devices, err := cluster.Fleetctl(t.Context(), "devices")
		if err != nil || !strings.Contains(devices, "pi-labelled") || !strings.Contains(devices, "never") {
			t.Errorf("fleetctl devices: %v\n%s", err, devices)
		}
	})
}

func TestRevokedDeviceIsCutOff(t *testing.T) {
	needCluster(t)
	const doomed = "pi-doomed"
	if err := cluster.Enroll(t.Context(), doomed); err != nil {
		t.Fatal(err)
	}
	if err := cluster.StartAgent(t.Context(), doomed); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cluster.StopAgent(doomed) })
	eventually(t, time.Minute, doomed+" Ready", func(ctx context.Context) (bool, string) {
		n, err := cluster.Client.CoreV1().Nodes().Get(ctx, doomed, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return nodeReady(n), fmt.Sprint(n.Status.Conditions)
	})
	logPath := cluster.Agent(doomed).Log
	before, _ := os.ReadFile(logPath)

	start := time.Now()
	if out, err := cluster.Fleetctl(t.Context(), "revoke", doomed); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	eventually(t, 5*time.Second, "the revoked agent to be disconnected", func(context.Context) (bool, string) {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b[len(before):]), "nats disconnected"), ""
	})
	t.Logf("revoked device disconnected %s after fleetctl revoke", time.Since(start).Round(time.Millisecond))
	eventually(t, 30*time.Second, "the revoked agent's reconnect to be refused", func(context.Context) (bool, string) {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(strings.ToLower(string(b[len(before):])), "authorization violation"), ""
	})
	if _, err := cluster.Client.CoreV1().Nodes().Get(t.Context(), doomed, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("revoked device's Node still exists: %v", err)
	}
}

// No token, seed or key appears in any log or command output.
func TestSecretsNeverLogged(t *testing.T) {
	needCluster(t)
	tok := createToken(t, "--ttl", "10m")
	out, _ := enroll(t, tok, devA) // refused: name taken; the output must not echo the token
	_, secret, _ := strings.Cut(tok, ".")
	secrets := []string{secret}
	seeds, _ := filepath.Glob(filepath.Join(cluster.DeviceRoot("*"), "etc/vk-fleet/device.nk"))
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		secrets = append(secrets, strings.TrimSpace(string(b)))
	}
	if len(seeds) < 2 {
		t.Fatalf("found %d device seeds to look for", len(seeds))
	}
	logs := []string{cluster.Provider.Log}
	for _, d := range []string{devA, devB} {
		logs = append(logs, cluster.Agent(d).Log)
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("fleetctl output contains a secret (%.4s…)", s)
		}
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			if strings.Contains(string(b), s) {
				t.Errorf("%s contains a secret (%.4s…)", filepath.Base(l), s)
			}
		}
	}
	for _, s := range seeds {
		fi, err := os.Stat(s)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("device key %s mode = %v, want 0600", s, fi.Mode().Perm())
		}
	}
}
