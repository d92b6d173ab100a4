package agentinstall_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vk-fleet/vk-fleet/nodeagent/agentinstall"
)

func TestUnit(t *testing.T) {
	unit, err := agentinstall.Unit("/usr/bin/device-agent", "/etc/vk-fleet/agent.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ExecStart=/usr/bin/device-agent --config /etc/vk-fleet/agent.json\n",
		// Installed before enrollment, it must not start without credentials.
		"ConditionPathExists=/etc/vk-fleet/agent.json\n",
		"Wants=network-online.target podman.socket\n",
		"WantedBy=multi-user.target\n",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	for _, bad := range []string{"device-agent", "/opt/my agent", "/opt/a%h", `/opt/a"b`, "/opt/a;b"} {
		if _, err := agentinstall.Unit(bad, "/etc/vk-fleet/agent.json"); !errors.Is(err, agentinstall.ErrUnitPath) {
			t.Errorf("Unit(%q): err %v, want ErrUnitPath", bad, err)
		}
	}
}

// fakeAgent writes a script that answers `version --json` with answer.
func fakeAgent(t *testing.T, answer string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "device-agent")
	script := "#!/bin/sh\n[ \"$1 $2\" = 'version --json' ] || exit 2\necho '" + answer + "'\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheck(t *testing.T) {
	t.Run("an agent with podman passes", func(t *testing.T) {
		info, err := agentinstall.Check(t.Context(), fakeAgent(t, `{"version":"v1.2.3","podman":true,"os":"linux","arch":"arm64"}`))
		if err != nil || info.Version != "v1.2.3" || !info.Podman || info.Arch != "arm64" {
			t.Fatalf("Check = %+v, %v", info, err)
		}
	})
	t.Run("an agent without podman is refused", func(t *testing.T) {
		_, err := agentinstall.Check(t.Context(), fakeAgent(t, `{"version":"v1.2.3","podman":false}`))
		if !errors.Is(err, agentinstall.ErrNoPodman) || !strings.Contains(err.Error(), "-tags 'remote") {
			t.Fatalf("err = %v, want ErrNoPodman saying how to build it", err)
		}
	})
	t.Run("a missing agent is refused", func(t *testing.T) {
		if _, err := agentinstall.Check(t.Context(), filepath.Join(t.TempDir(), "nope")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("err = %v, want ErrNotExist", err)
		}
	})
	t.Run("an agent that cannot answer is refused", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "device-agent")
		if err := os.WriteFile(p, []byte("#!/bin/sh\necho 'unknown command \"version\"' >&2\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := agentinstall.Check(t.Context(), p); err == nil || !strings.Contains(err.Error(), "unknown command") {
			t.Fatalf("err = %v, want the agent's own message", err)
		}
	})
}
