package enrollcmd

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependenciesStayLean: device-agent links this package (it is the
// device's fleetctl), so it must not bring the operator's dependencies.
func TestDependenciesStayLean(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go command not available")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/vk-fleet/vk-fleet/nodeagent/enrollcmd").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	prefixes := []string{"k8s.io/", "github.com/nats-io/nats-server", "github.com/virtual-kubelet/", "github.com/zitadel/zitadel-go"}
	// The server-side packages; zitadel/devicetoken and zitadel/keyfile
	// are the agent's own.
	packages := []string{"github.com/vk-fleet/vk-fleet/registry", "github.com/vk-fleet/vk-fleet/callout", "github.com/vk-fleet/vk-fleet/zitadel"}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range prefixes {
			if strings.HasPrefix(dep, f) {
				t.Errorf("enrollcmd imports %s", dep)
			}
		}
		for _, p := range packages {
			if dep == p {
				t.Errorf("enrollcmd imports %s", dep)
			}
		}
	}
}
