package controlplane

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestPKI(t *testing.T) {
	ca, files, err := writePKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())

	verify := func(t *testing.T, certPEM []byte, usage x509.ExtKeyUsage, host string) *x509.Certificate {
		t.Helper()
		block, _ := pem.Decode(certPEM)
		if block == nil {
			t.Fatal("no pem block")
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("verifying %s for %q: %v", cert.Subject, host, err)
		}
		return cert
	}
	read := func(path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	for _, host := range []string{"127.0.0.1", "localhost", "kubernetes.default.svc", "10.96.0.1"} {
		verify(t, read(files.apiserverCert), x509.ExtKeyUsageServerAuth, host)
	}
	kc := verify(t, read(files.kubeletClientCert), x509.ExtKeyUsageClientAuth, "")
	if kc.Subject.CommonName != "kube-apiserver-kubelet-client" || strings.Join(kc.Subject.Organization, ",") != "system:masters" {
		t.Errorf("kubelet client subject = %s", kc.Subject)
	}
	certPEM, _, err := ca.ClientCert("system:node:dev-1", "system:nodes")
	if err != nil {
		t.Fatal(err)
	}
	nc := verify(t, certPEM, x509.ExtKeyUsageClientAuth, "")
	if nc.Subject.CommonName != "system:node:dev-1" || nc.Subject.Organization[0] != "system:nodes" {
		t.Errorf("node client subject = %s", nc.Subject)
	}
	if time.Until(nc.NotAfter) < 300*24*time.Hour {
		t.Errorf("client certificate expires too soon: %v", nc.NotAfter)
	}
	block, _ := pem.Decode(read(files.serviceAccountKey))
	if block == nil {
		t.Fatal("service-account key: no pem block")
	}
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
		t.Errorf("service-account key is not RSA: %v", err)
	}
}

// TestBuildScriptVersions keeps KubernetesVersion and EtcdVersion, which
// name the cache directory, in step with the build script's defaults.
func TestBuildScriptVersions(t *testing.T) {
	script, err := os.ReadFile(filepath.Join("..", "..", "..", buildScript))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"K8S_VERSION": KubernetesVersion, "ETCD_VERSION": EtcdVersion} {
		m := regexp.MustCompile(name + `=\$\{` + name + `:-([^}]+)\}`).FindSubmatch(script)
		if m == nil {
			t.Errorf("%s default not found in %s", name, buildScript)
			continue
		}
		if got := string(m[1]); got != want {
			t.Errorf("%s: script builds %s, package expects %s", name, got, want)
		}
	}
}

func TestBinDir(t *testing.T) {
	t.Run("no build", func(t *testing.T) {
		t.Setenv(EnvBinDir, "")
		t.Setenv("VKF_CACHE", t.TempDir())
		t.Setenv(EnvNoBuild, "1")
		if _, err := BinDir(); !errors.Is(err, ErrBinariesMissing) {
			t.Errorf("got %v, want ErrBinariesMissing", err)
		}
	})
	t.Run("explicit dir", func(t *testing.T) {
		dir := t.TempDir()
		t.Setenv(EnvBinDir, dir)
		if _, err := BinDir(); !errors.Is(err, ErrBinariesMissing) {
			t.Errorf("empty dir: got %v, want ErrBinariesMissing", err)
		}
		for _, b := range binaries.Programs {
			if err := os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		got, err := BinDir()
		if err != nil || got != dir {
			t.Errorf("got %q, %v; want %q", got, err, dir)
		}
	})
}

func TestProcess(t *testing.T) {
	log := discard()
	t.Run("exit during start quotes the log", func(t *testing.T) {
		logPath := filepath.Join(t.TempDir(), "boom.log")
		p, err := startProcess(log, "boom", "/bin/sh", []string{"-c", "echo listen tcp: address already in use; exit 3"}, logPath)
		if err != nil {
			t.Fatal(err)
		}
		<-p.done
		var exit *exitError
		if err := p.exitErr(); !errors.As(err, &exit) || !exit.addrInUse() || !strings.Contains(err.Error(), "exit status 3") {
			t.Errorf("got %v, want an exitError quoting the log", err)
		}
		if err := p.stop(); err != nil {
			t.Errorf("stopping an exited process: %v", err)
		}
	})
	t.Run("stop terminates the process group", func(t *testing.T) {
		logPath := filepath.Join(t.TempDir(), "sleeper.log")
		// The shell forks sleep; both must go.
		p, err := startProcess(log, "sleeper", "/bin/sh", []string{"-c", "sleep 60 & wait"}, logPath)
		if err != nil {
			t.Fatal(err)
		}
		if p.exitErr() != nil {
			t.Fatal("exited early")
		}
		if err := p.stop(); err != nil {
			t.Fatal(err)
		}
		if err := p.stop(); err != nil {
			t.Errorf("second stop: %v", err)
		}
		if !p.exited() {
			t.Error("not exited after stop")
		}
		if err := syscall.Kill(-p.pid(), 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process group still exists after stop: %v", err)
		}
	})
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestStartRetriesOnPortRace makes the API server's port busy in the first
// attempt and expects Start to succeed with new ports.
func TestStartRetriesOnPortRace(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real control plane; skipped with -short")
	}
	bin, err := BinDir()
	if err != nil {
		if os.Getenv("VKF_REQUIRE_CONTROLPLANE") == "1" {
			t.Fatal(err)
		}
		t.Skipf("control-plane binaries not available, skipping: %v", err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	calls := 0
	pickPorts = func(n int) ([]int, error) {
		calls++
		ports, err := freePorts(n)
		if err == nil && calls == 1 {
			ports[2] = busy.Addr().(*net.TCPAddr).Port // the API server's
		}
		return ports, err
	}
	t.Cleanup(func() { pickPorts = freePorts })

	dir := t.TempDir()
	cp, err := Start(t.Context(), Config{
		BinDir: bin,
		Dir:    dir,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		// Skips minting a token per controller: ~5s faster to start.
		ExtraControllerManagerArgs: []string{"--use-service-account-credentials=false"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Stop() })
	if calls != 2 {
		t.Errorf("picked ports %d times, want 2", calls)
	}
	if _, err := os.Stat(filepath.Join(dir, "kube-apiserver.attempt-1.log")); err != nil {
		t.Errorf("log of the failed attempt not kept: %v", err)
	}
	if err := cp.Stop(); err != nil {
		t.Error(err)
	}
}
