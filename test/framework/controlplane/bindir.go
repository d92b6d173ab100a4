package controlplane

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

// Versions of the binaries that hack/controlplane-build.sh builds by
// default. They name the cache directory; TestBuildScriptVersions keeps
// them in step with the script.
const (
	KubernetesVersion = "v1.37.2"
	EtcdVersion       = "v3.6.16"
)

// Environment variables read by BinDir.
const (
	// EnvBinDir names a directory holding the binaries; BinDir then
	// neither looks at the cache nor builds.
	EnvBinDir = "VKF_CONTROLPLANE_BIN"
	// EnvNoBuild, set to "1", makes BinDir fail instead of building.
	EnvNoBuild = "VKF_NO_BUILD"
)

// binaries are the programs Config.BinDir must contain.
var binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"}

const buildScript = "hack/controlplane-build.sh"

// BinDir returns a directory holding etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and kubectl.
//
// If VKF_CONTROLPLANE_BIN is set, it is that directory. Otherwise it is
// the cache directory of hack/controlplane-build.sh; when binaries are
// missing there, BinDir runs the script (found by walking up from the
// working directory to the module root) under a file lock and returns the
// directory it prints. The build takes 5-10 minutes. With VKF_NO_BUILD=1
// it returns an error wrapping ErrBinariesMissing instead of building.
func BinDir() (string, error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		if err := checkBinaries(dir); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvBinDir, dir, err)
		}
		return dir, nil
	}
	cache, err := cacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "controlplane-"+KubernetesVersion+"-etcd-"+EtcdVersion, "bin")
	if checkBinaries(dir) == nil {
		return dir, nil
	}
	if os.Getenv(EnvNoBuild) == "1" {
		return "", fmt.Errorf("%s=1 and %w in %s (run %s)", EnvNoBuild, ErrBinariesMissing, dir, buildScript)
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
// <cache>/controlplane-build.lock, so concurrent test packages build once.
func build(cache string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("creating cache dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cache, "controlplane-build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
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
	if err := checkBinaries(dir); err != nil {
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

// checkBinaries reports an error wrapping ErrBinariesMissing unless dir
// holds every executable the control plane runs.
func checkBinaries(dir string) error {
	var missing []string
	for _, b := range binaries {
		fi, err := os.Stat(filepath.Join(dir, b))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s not in %s", ErrBinariesMissing, strings.Join(missing, ", "), dir)
	}
	return nil
}
