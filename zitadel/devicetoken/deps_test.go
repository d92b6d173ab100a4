package devicetoken

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependenciesStayLean keeps the device-side token source free of
// Kubernetes, nats-server and gRPC (zitadel-go's API client).
func TestDependenciesStayLean(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go command not available")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/vk-fleet/vk-fleet/zitadel/devicetoken").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"k8s.io/", "github.com/nats-io/nats-server", "github.com/virtual-kubelet/",
		"google.golang.org/grpc", "github.com/zitadel/zitadel-go",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("devicetoken imports %s", dep)
			}
		}
	}
}
