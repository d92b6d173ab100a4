// Package deptest checks that the device-side packages stay free of heavy
// dependencies: the wire contract and the agent must never import
// Kubernetes or nats-server (tailscale's tstest/deptest idea).
package deptest

import (
	"os/exec"
	"strings"
	"testing"
)

const tags = "remote containers_image_openpgp exclude_graphdriver_btrfs"

func TestDeviceSideDependencies(t *testing.T) {
	forbidden := []string{"k8s.io/", "github.com/nats-io/nats-server", "github.com/virtual-kubelet/"}
	for _, pkg := range []string{
		"github.com/vk-fleet/vk-fleet/bridge",
		"github.com/vk-fleet/vk-fleet/nodeagent",
		"github.com/vk-fleet/vk-fleet/nodeagent/podman",
		"github.com/vk-fleet/vk-fleet/cmd/device-agent",
		"github.com/vk-fleet/vk-fleet/zitadel/devicetoken",
	} {
		out, err := exec.Command("go", "list", "-tags", tags, "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s imports %s", pkg, dep)
				}
			}
		}
	}
	// The contract itself imports nothing outside the standard library.
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "github.com/vk-fleet/vk-fleet/bridge").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep != "github.com/vk-fleet/vk-fleet/bridge" {
			t.Errorf("bridge imports non-standard package %s", dep)
		}
	}
}
