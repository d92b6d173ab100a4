package enrollcmd

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/nodeagent/agentinstall"
)

// closedAddr returns a NATS URL where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "nats://" + addr
}

// enrollInstall runs `fleetctl enroll --install` below a fresh --root with
// the agent at agent (copied to /usr/bin/device-agent below the root).
func enrollInstall(t *testing.T, agent string) (root string, out string, err error) {
	t.Helper()
	root = t.TempDir()
	b, err := os.ReadFile(agent)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(root, agentinstall.DefaultBinary)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := NewCommand()
	var buf bytes.Buffer
	cmd.SetOut(&buf)
	cmd.SetErr(&buf)
	cmd.SetArgs([]string{"--server", closedAddr(t), "--token", "abcdef.0123456789abcdef", "--name", "pi-test",
		"--root", root, "--install", "--timeout", "2s"})
	err = cmd.ExecuteContext(t.Context())
	return root, buf.String(), err
}

// TestEnrollInstallRefusesUntaggedAgent builds device-agent the way a plain
// `go build ./cmd/device-agent` does (no podman build tags) and checks that
// `fleetctl enroll --install` refuses it before enrolling anything.
func TestEnrollInstallRefusesUntaggedAgent(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go is not on PATH")
	}
	agent := filepath.Join(t.TempDir(), "device-agent")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", agent, "github.com/vk-fleet/vk-fleet/cmd/device-agent")
	build.Env = append(os.Environ(), "GOFLAGS=", "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building an untagged device-agent: %v\n%s", err, b)
	}
	if b, err := exec.CommandContext(t.Context(), agent, "version").Output(); err != nil || !strings.Contains(string(b), "podman support: no") {
		t.Errorf("untagged device-agent version: %v\n%s", err, b)
	}

	root, out, err := enrollInstall(t, agent)
	if !errors.Is(err, agentinstall.ErrNoPodman) {
		t.Fatalf("enroll --install with an untagged agent: err %v, want ErrNoPodman; output %q", err, out)
	}
	// Refused before anything happened: no key, no configuration, no unit.
	for _, p := range []string{"etc/vk-fleet", agentinstall.LocalUnitPath} {
		if _, err := os.Stat(filepath.Join(root, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists after a refused enrollment (%v)", p, err)
		}
	}
}

// TestEnrollInstallChecksAgent: an agent that can run pods passes the check
// (enrollment then fails only because no server answers); one for another
// architecture does not.
func TestEnrollInstallChecksAgent(t *testing.T) {
	fake := func(t *testing.T, arch string) string {
		p := filepath.Join(t.TempDir(), "device-agent")
		answer := `{"version":"v9.9.9","podman":true,"os":"` + runtime.GOOS + `","arch":"` + arch + `"}`
		if err := os.WriteFile(p, []byte("#!/bin/sh\necho '"+answer+"'\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("a podman agent passes", func(t *testing.T) {
		_, out, err := enrollInstall(t, fake(t, runtime.GOARCH))
		if err == nil || !strings.Contains(err.Error(), "connecting to") {
			t.Fatalf("err %v, want a connection error after the check passed; output %q", err, out)
		}
	})
	t.Run("another architecture is refused", func(t *testing.T) {
		_, out, err := enrollInstall(t, fake(t, "mips"))
		if err == nil || !strings.Contains(err.Error(), "built for "+runtime.GOOS+"/mips") {
			t.Fatalf("err %v, want an architecture refusal; output %q", err, out)
		}
	})
	t.Run("a missing agent is refused", func(t *testing.T) {
		o := &Options{Server: closedAddr(t), Token: "abcdef.0123456789abcdef", Name: "pi-test",
			Root: t.TempDir(), Install: true, AgentBinary: "/usr/bin/device-agent", Timeout: time.Second}
		if err := o.Run(t.Context(), &bytes.Buffer{}); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("err %v, want ErrNotExist", err)
		}
	})
}
