package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/test/framework/controlplane"
)

// kubectl logs works on a device pod, through the real API server, which
// reaches vk-fleet's kubelet API (its serving certificate verified, its
// client certificate checked), which reaches the device over NATS.
func TestKubectlLogs(t *testing.T) {
	needCluster(t)
	ns := createNamespace(t, "logs")
	pod := sleeper(ns, "talker", devA)
	pod.Spec.Containers[0].Command = []string{"sh", "-c", "echo first; echo second; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ns, "talker")
	logs := func(args ...string) (string, error) {
		out, err := cluster.CP.Kubectl(t.Context(), append([]string{"logs", "-n", ns, "talker"}, args...)...)
		return string(out), err
	}

	out, err := logs()
	if err != nil || !strings.HasPrefix(out, "first\nsecond\n") {
		t.Fatalf("kubectl logs: %q, %v", out, err)
	}
	if out, err := logs("--tail=1"); err != nil || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "tick ") {
		t.Errorf("kubectl logs --tail=1: %q, %v", out, err)
	}
	if out, err := logs("--limit-bytes=6"); err != nil || out != "first\n" {
		t.Errorf("kubectl logs --limit-bytes=6: %q, %v", out, err)
	}
	if out, err := logs("--timestamps", "--tail=1"); err != nil || !strings.Contains(out, "T") || !strings.Contains(out, "tick") {
		t.Errorf("kubectl logs --timestamps: %q, %v", out, err)
	}
	if out, err := logs("-c", "nosuch"); err == nil {
		t.Errorf("kubectl logs -c nosuch succeeded: %q", out)
	}

	// -f streams: lines written after the command started arrive.
	bin, err := controlplane.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	follow := exec.CommandContext(ctx, filepath.Join(bin, "kubectl"), "--kubeconfig="+cluster.CP.Kubeconfig, "logs", "-f", "--tail=1", "-n", ns, "talker")
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var seen []string
	for len(seen) < 10 && sc.Scan() {
		seen = append(seen, sc.Text())
	}
	cancel()
	_ = follow.Wait()
	if len(seen) < 10 {
		t.Fatalf("kubectl logs -f delivered %d lines: %v", len(seen), seen)
	}
	for _, l := range seen {
		if !strings.HasPrefix(l, "tick ") {
			t.Fatalf("kubectl logs -f delivered %q", l)
		}
	}
	_ = cluster.Client.CoreV1().Pods(ns).Delete(t.Context(), "talker", metav1.DeleteOptions{})
}

// vk-fleet's kubelet endpoint is as well protected as a kubelet's: an
// anonymous caller is refused (401), an authenticated one without
// nodes/proxy too (403).
func TestKubeletAPIRefusesStrangers(t *testing.T) {
	needCluster(t)
	url := "https://127.0.0.1:" + strconv.Itoa(cluster.KubeletPort) + "/containerLogs/kube-system/none/none"
	get := func(certs []tls.Certificate) int {
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, //nolint:gosec // the caller's identity is under test, not the server's
			Certificates:       certs,
		}}}
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(nil); code != http.StatusUnauthorized {
		t.Errorf("anonymous caller: %d, want 401", code)
	}
	cfg, err := cluster.CP.ClientRESTConfig("nobody")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(cfg.TLSClientConfig.CertData, cfg.TLSClientConfig.KeyData)
	if err != nil {
		t.Fatal(err)
	}
	if code := get([]tls.Certificate{cert}); code != http.StatusForbidden {
		t.Errorf("authenticated caller without nodes/proxy: %d, want 403", code)
	}
}
