package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/vk-fleet/vk-fleet/callout"
	"github.com/vk-fleet/vk-fleet/internal/natsd"
	"github.com/vk-fleet/vk-fleet/test/framework/devcluster"
)

// `vk-fleet callout`, the auth callout of an external NATS, answers its
// probes and counts its decisions: /readyz once its device cache synced and
// its NATS connection is up, and a refused connection moves
// vkfleet_callout_decisions_total.
func TestStandaloneCalloutIsObservable(t *testing.T) {
	needCluster(t)
	ctx := t.Context()
	dir := t.TempDir()
	keys, err := callout.GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	users := callout.NewEmbeddedUsers()
	srv, err := natsd.Start(ctx, natsd.Config{Listen: "127.0.0.1:-1", StoreDir: filepath.Join(dir, "nats"),
		ConfigText: callout.ServerConfig(keys, users),
		Options:    func(o *server.Options) error { o.AlwaysEnableNonce = true; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)

	seed, err := keys.Issuer.Seed()
	if err != nil {
		t.Fatal(err)
	}
	xseed, err := keys.XKey.Seed()
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kubeconfig, err := cluster.CP.ClientKubeconfig("vk-fleet-callout", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	port, err := devcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	health := "http://127.0.0.1:" + strconv.Itoa(port)
	p, err := devcluster.StartProcess("callout", filepath.Join(dir, "callout.log"), nil, cluster.Binary("vk-fleet"), "callout",
		"--kubeconfig", kubeconfig, "--nats-url", srv.ClientURL(),
		"--nats-user", callout.CalloutUser, "--nats-password-file", write("password", []byte(users.CalloutPassword)),
		"--issuer-seed-file", write("issuer", seed), "--xkey-seed-file", write("xkey", xseed),
		"--health-listen", "127.0.0.1:"+strconv.Itoa(port), "--log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(10 * time.Second) })

	eventually(t, time.Minute, "the callout ready", func(ctx context.Context) (bool, string) {
		for _, path := range []string{"/healthz", "/readyz"} {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, health+path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false, err.Error()
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false, path + ": " + resp.Status
			}
		}
		return true, ""
	})
	before, err := scrape(ctx, health+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	const denied = `vkfleet_callout_decisions_total{kind="unknown",reason="no_credential",result="denied"}`
	if before[`vkfleet_ready`] != 1 {
		t.Errorf("vkfleet_ready = %v on a ready callout", before[`vkfleet_ready`])
	}
	// A connection with no credential is refused, and counted.
	if nc, err := nats.Connect(srv.ClientURL(), nats.NoReconnect(), nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a connection without credentials was let in")
	}
	eventually(t, 30*time.Second, "the refusal counted", func(ctx context.Context) (bool, string) {
		now, err := scrape(ctx, health+"/metrics")
		if err != nil {
			return false, err.Error()
		}
		return now[denied] > before[denied], fmt.Sprintf("%s %v → %v", denied, before[denied], now[denied])
	})
	// NATS gone: not ready.
	srv.Shutdown()
	eventually(t, 30*time.Second, "the callout not ready without NATS", func(ctx context.Context) (bool, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, health+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable, resp.Status
	})
}
