package metricsserver

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Version is the metrics-server release hack/metrics-server-build.sh
// builds by default. It names the cache directory;
// TestBuildScriptVersion keeps it in step with the script.
const Version = "v0.8.0"

// Environment variables read by BinDir.
const (
	// EnvBinDir names a directory holding the metrics-server binary;
	// BinDir then neither looks at the cache nor builds.
	EnvBinDir = "VKF_METRICS_SERVER_BIN"
	// EnvNoBuild, set to "1", makes BinDir fail instead of building. It is
	// the same variable the control plane's BinDir obeys.
	EnvNoBuild = "VKF_NO_BUILD"
)

const (
	binary      = "metrics-server"
	buildScript = "hack/metrics-server-build.sh"
)

// BinDir returns a directory holding the metrics-server binary.
//
// If VKF_METRICS_SERVER_BIN is set, it is that directory. Otherwise it is
// the cache directory of hack/metrics-server-build.sh
// (<cache>/metrics-server-<Version>/bin, next to the control plane's);
// when the binary is missing there, BinDir runs the script (found by
// walking up from the working directory to the module root) under a file
// lock and returns the directory it prints. The build takes a few
// minutes. With VKF_NO_BUILD=1 it returns an error wrapping
// ErrBinaryMissing instead of building.
func BinDir() (string, error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		if err := checkBinary(dir); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvBinDir, dir, err)
		}
		return dir, nil
	}
	cache, err := cacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "metrics-server-"+Version, "bin")
	if checkBinary(dir) == nil {
		return dir, nil
	}
	if os.Getenv(EnvNoBuild) == "1" {
		return "", fmt.Errorf("%s=1 and %w in %s (run %s)", EnvNoBuild, ErrBinaryMissing, dir, buildScript)
	}
	return build(cache)
}

// cacheDir mirrors the script's choice: $VKF_CACHE, else
// $XDG_CACHE_HOME/vk-fleet, else $HOME/.cache/vk-fleet.
func cacheDir() (string, error) {
	if d := os.Getenv("VKF_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "vk-fleet"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("locating cache dir: %w", err)
	}
	return filepath.Join(home, ".cache", "vk-fleet"), nil
}

// build runs the build script while holding an exclusive lock on
// <cache>/metrics-server-build.lock, so concurrent test packages build
// once.
func build(cache string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("creating cache dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cache, "metrics-server-build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("opening build lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("locking build lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing releases it too

	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", filepath.Join(root, buildScript))
	cmd.Dir = root
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("running %s: %w; last lines:\n%s", buildScript, err, lastLines(stderr.Bytes(), logTailLines))
	}
	dir := strings.TrimSpace(stdout.String())
	if i := strings.LastIndexByte(dir, '\n'); i >= 0 {
		dir = dir[i+1:]
	}
	if err := checkBinary(dir); err != nil {
		return "", fmt.Errorf("after %s: %w", buildScript, err)
	}
	return dir, nil
}

// moduleRoot walks up from the working directory to the directory holding
// this module's go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("locating module root: %w", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.Contains(b, []byte("module github.com/vk-fleet/vk-fleet\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("locating module root: no go.mod of github.com/vk-fleet/vk-fleet above the working directory")
		}
		dir = parent
	}
}

// checkBinary reports an error wrapping ErrBinaryMissing unless dir holds
// an executable metrics-server.
func checkBinary(dir string) error {
	fi, err := os.Stat(filepath.Join(dir, binary))
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%w: no executable %s in %s", ErrBinaryMissing, binary, dir)
	}
	return nil
}
