package main

import (
	"bytes"
	"encoding/json"
	"runtime"
	"testing"

	"github.com/vk-fleet/vk-fleet/internal/version"
	"github.com/vk-fleet/vk-fleet/nodeagent/agentinstall"
	"github.com/vk-fleet/vk-fleet/nodeagent/podman"
)

// TestVersionJSON: `fleetctl enroll --install` reads this answer to refuse
// an agent built without the podman tags.
func TestVersionJSON(t *testing.T) {
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs(agentinstall.VersionArgs)
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	var info agentinstall.Info
	if err := json.Unmarshal(out.Bytes(), &info); err != nil {
		t.Fatalf("%v: %s", err, out.Bytes())
	}
	want := agentinstall.Info{Version: version.Version, Podman: podman.Available, OS: runtime.GOOS, Arch: runtime.GOARCH}
	if info != want {
		t.Fatalf("version --json = %+v, want %+v", info, want)
	}
}
