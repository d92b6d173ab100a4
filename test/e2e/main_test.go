// Package e2e holds vk-fleet's end-to-end tests: a real control plane
// (kube-apiserver, etcd, controller-manager, scheduler built from the Go
// module proxy), the real vk-fleet and device-agent binaries, a real NATS
// server (embedded in vk-fleet) and real podman.
//
// They run with `go test -tags 'remote containers_image_openpgp
// exclude_graphdriver_btrfs' ./test/e2e/`; hack/test.sh is the full suite.
package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/nodeagent/podman"
	"github.com/vk-fleet/vk-fleet/test/framework/devcluster"
)

// Devices of the shared cluster.
const (
	devA = "pi-kitchen"
	devB = "pi-garage"
)

// cluster is the dev cluster the tests share; nil when skipReason says why
// the tests cannot run here.
var (
	cluster    *devcluster.Cluster
	skipReason string
)

// needCluster skips t, saying why, when this machine or build cannot run
// the e2e tests.
func needCluster(t *testing.T) {
	t.Helper()
	if cluster == nil {
		t.Skip(skipReason)
	}
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

// skipAll runs every test, each of which skips saying reason, and reports
// the package as `go test` shows "[no tests to run]", not a plain "ok".
// VKF_REQUIRE_E2E=1 (CI) turns it into a failure.
func skipAll(m *testing.M, reason string) int {
	if os.Getenv("VKF_REQUIRE_E2E") == "1" {
		fmt.Println("e2e: required (VKF_REQUIRE_E2E=1) but cannot run:", reason)
		return 1
	}
	skipReason = reason
	code := m.Run()
	fmt.Fprintln(os.Stderr, "e2e: every test skipped:", reason)
	fmt.Fprintln(os.Stderr, "testing: warning: no tests to run")
	return code
}

func run(m *testing.M) int {
	if !podman.Available {
		return skipAll(m, "built without the podman build tags; run hack/test.sh (or go test -tags 'remote containers_image_openpgp exclude_graphdriver_btrfs')")
	}
	if _, err := exec.LookPath("podman"); err != nil {
		return skipAll(m, "podman is not installed (hack/test.sh installs it)")
	}

	dir, err := os.MkdirTemp("", "vkf-e2e-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	start := time.Now()
	cluster, err = devcluster.Start(ctx, devcluster.Config{Dir: dir, Devices: []string{devA, devB}, Logger: log, PrivateRegistry: true})
	if err != nil {
		fmt.Println("e2e: starting cluster:", err)
		return 1
	}
	log.Info("e2e cluster started", "dir", dir, "took", time.Since(start).Round(time.Millisecond))
	code := m.Run()
	cluster.Stop()
	if code == 0 && os.Getenv("VKF_KEEP_E2E") == "" {
		os.RemoveAll(dir)
	} else {
		fmt.Println("e2e: logs kept in", dir)
	}
	return code
}
