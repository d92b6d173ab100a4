// Package podmantest runs a private podman API service and builds a tiny
// busybox image for tests that need a real podman.
//
// A test calls Setup, which skips the test when podman is missing (or fails
// it when VKF_REQUIRE_PODMAN=1), starts `podman system service` on a socket
// of its own and makes sure the test image exists:
//
//	svc, image := podmantest.Setup(t)
//	rt, err := podman.New(ctx, svc.URI, "device-a")
//
// Every service has podman storage of its own (graph and run root under its
// directory, chosen with CONTAINERS_STORAGE_CONF), never the machine's: a
// test suite, a demo cluster and a user's own podman on one machine do not
// see, list or remove each other's containers. The services that Setup
// starts in one test binary share one such storage; call Main from
// TestMain to remove it when the tests end.
package podmantest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// EnvRequire names the environment variable that, set to "1", turns a
// missing podman from a skipped test into a failed one (for CI machines
// that must run the podman tests).
const EnvRequire = "VKF_REQUIRE_PODMAN"

// Image is the reference under which Setup builds the busybox test image.
const Image = "localhost/vkf-busybox:v1"

// confText is the containers.conf that makes podman work on the sandboxed
// test machines (no CAP_SYS_RESOURCE, cgroup v1: crun fails, runc works).
// events_logger = "file" lets the service stream events on machines
// without journald.
const confText = `[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
events_logger = "file"
`

// ContainersConf writes a containers.conf for tests into dir and returns
// its path. Point podman at it with the CONTAINERS_CONF environment
// variable of the podman process only.
func ContainersConf(dir string) (string, error) {
	path := filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(path, []byte(confText), 0o644); err != nil {
		return "", fmt.Errorf("writing containers.conf: %w", err)
	}
	return path, nil
}

// StorageConf writes a storage.conf into dir whose graph root and run root
// are dir/graph and dir/run, and returns its path. Point podman at it with
// the CONTAINERS_STORAGE_CONF environment variable.
func StorageConf(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	text := fmt.Sprintf("[storage]\ndriver = \"overlay\"\ngraphroot = %q\nrunroot = %q\n",
		filepath.Join(abs, "graph"), filepath.Join(abs, "run"))
	path := filepath.Join(abs, "storage.conf")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return "", fmt.Errorf("writing storage.conf: %w", err)
	}
	return path, nil
}

// RegistriesConf writes a registries.conf into dir that lists each of
// insecure ("127.0.0.1:5000") as a registry spoken to over plain HTTP, and
// returns its path. Written beside the containers.conf of a service before
// it starts, it is what the service and Env's podman commands read
// (CONTAINERS_REGISTRIES_CONF); podman reads it once, at start. Only tests
// do this: real devices pull over TLS.
func RegistriesConf(dir string, insecure ...string) (string, error) {
	var b strings.Builder
	b.WriteString("# Written by podmantest: registries of tests, over plain HTTP.\n")
	for _, host := range insecure {
		fmt.Fprintf(&b, "\n[[registry]]\nlocation = %q\ninsecure = true\n", host)
	}
	path := filepath.Join(dir, "registries.conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("writing registries.conf: %w", err)
	}
	return path, nil
}

// Env returns the environment a podman command needs to use the
// containers.conf conf and the storage.conf and registries.conf beside it.
func Env(conf string) []string {
	env := append(os.Environ(), "CONTAINERS_CONF="+conf)
	if s := filepath.Join(filepath.Dir(conf), "storage.conf"); fileExists(s) {
		env = append(env, "CONTAINERS_STORAGE_CONF="+s)
	}
	if s := filepath.Join(filepath.Dir(conf), "registries.conf"); fileExists(s) {
		env = append(env, "CONTAINERS_REGISTRIES_CONF="+s)
	}
	return env
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Require skips t when podman is not installed, or fails t when the
// environment variable EnvRequire is "1".
func Require(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("podman is required (%s=1) but not installed: %v", EnvRequire, err)
		}
		t.Skipf("podman is not installed (set %s=1 to fail instead): %v", EnvRequire, err)
	}
}

// Setup starts a podman service for t and makes sure the busybox test image
// exists. It returns the service and the image reference. The service stops
// when t ends. Setup skips t when podman is missing (see Require).
func Setup(t testing.TB) (*Service, string) {
	t.Helper()
	Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// A socket path must stay below 108 bytes; t.TempDir() can be longer.
	dir, err := os.MkdirTemp("", "vkf-podman-")
	if err != nil {
		t.Fatalf("creating service dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	storage, err := sharedStorage()
	if err != nil {
		t.Fatalf("creating podman storage: %v", err)
	}
	svc, err := StartServiceWithStorage(ctx, dir, storage)
	if err != nil {
		t.Fatalf("starting podman service: %v", err)
	}
	t.Cleanup(func() {
		if err := svc.Stop(); err != nil {
			t.Errorf("stopping podman service: %v", err)
		}
	})
	if err := BuildBusyboxImage(ctx, svc.Conf, Image); err != nil {
		t.Fatalf("building test image: %v", err)
	}
	return svc, Image
}

// podmanCmd builds a podman command that reads the containers.conf at conf.
func podmanCmd(ctx context.Context, conf string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "podman", args...)
	cmd.Env = Env(conf)
	return cmd
}

// runPodman runs podman with args and returns its standard output.
func runPodman(ctx context.Context, conf string, args ...string) ([]byte, error) {
	cmd := podmanCmd(ctx, conf, args...)
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return out, fmt.Errorf("podman %v: %w: %s", args, err, exit.Stderr)
		}
		return out, fmt.Errorf("podman %v: %w", args, err)
	}
	return out, nil
}
