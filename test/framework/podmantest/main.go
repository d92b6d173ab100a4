package podmantest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var shared struct {
	once sync.Once
	dir  string
	err  error
}

// sharedStorage returns the podman storage directory of this test binary,
// creating it on first use.
func sharedStorage() (string, error) {
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "vkf-storage-")
	})
	return shared.dir, shared.err
}

// Main runs m from the TestMain of a package whose tests all need podman
// and returns the exit code. When podman is missing and not required, each
// test skips saying why, and Main reports the package the way `go test`
// shows as "[no tests to run]" rather than a plain "ok". Afterwards it
// removes the storage the package's services shared.
func Main(m *testing.M) int {
	code := m.Run()
	if _, err := exec.LookPath("podman"); err != nil && os.Getenv(EnvRequire) != "1" {
		fmt.Fprintln(os.Stderr, "podman tests skipped: podman is not installed")
		fmt.Fprintln(os.Stderr, "testing: warning: no tests to run")
	}
	removeSharedStorage()
	return code
}

// removeSharedStorage resets and deletes this binary's shared storage.
func removeSharedStorage() {
	if shared.dir != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// Both files land in shared.dir, where Env looks for storage.conf.
		_, err := ContainersConf(shared.dir)
		if err == nil {
			if _, err = StorageConf(shared.dir); err == nil {
				err = Reset(ctx, filepath.Join(shared.dir, "containers.conf"))
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "podmantest: resetting shared storage:", err)
		} else {
			os.RemoveAll(shared.dir)
		}
	}
}
