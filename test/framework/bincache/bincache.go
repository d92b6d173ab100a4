// Package bincache finds the programs that tests build once from the Go
// module proxy (the control plane, metrics-server): in a directory an
// environment variable names, in the cache of the hack/ script that builds
// them, or by running that script under a file lock, so that concurrent
// test packages build once.
package bincache

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vk-fleet/vk-fleet/test/framework/childproc"
)

// EnvNoBuild, set to "1", makes Set.Dir fail instead of building.
const EnvNoBuild = "VKF_NO_BUILD"

// Set describes the programs one build script provides.
type Set struct {
	// Name names the build lock, <cache>/<Name>-build.lock.
	Name string
	// EnvDir names a directory holding the programs; Dir then neither
	// looks at the cache nor builds.
	EnvDir string
	// CacheSubdir is where the script puts them below the cache directory.
	CacheSubdir string
	// Script is the build script, relative to the module root; it prints
	// the directory holding the programs as its last line.
	Script string
	// Programs must all be executable files of the directory.
	Programs []string
	// Missing is the error that errors about missing programs wrap.
	Missing error
}

// Dir returns the directory holding the programs: $EnvDir, or the
// script's cache directory, running the script there when programs are
// missing (unless VKF_NO_BUILD=1).
func (s Set) Dir() (string, error) {
	if dir := os.Getenv(s.EnvDir); dir != "" {
		if err := s.Check(dir); err != nil {
			return "", fmt.Errorf("%s=%s: %w", s.EnvDir, dir, err)
		}
		return dir, nil
	}
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, s.CacheSubdir)
	if s.Check(dir) == nil {
		return dir, nil
	}
	if os.Getenv(EnvNoBuild) == "1" {
		return "", fmt.Errorf("%s=1 and %w in %s (run %s)", EnvNoBuild, s.Missing, dir, s.Script)
	}
	return s.build(cache)
}

// CacheDir mirrors the scripts' choice: $VKF_CACHE, else
// $XDG_CACHE_HOME/vk-fleet, else $HOME/.cache/vk-fleet.
func CacheDir() (string, error) {
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

// build runs the script while holding an exclusive lock on
// <cache>/<Name>-build.lock.
func (s Set) build(cache string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("creating cache dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cache, s.Name+"-build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("opening build lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("locking build lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing releases it too

	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", filepath.Join(root, s.Script))
	cmd.Dir = root
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("running %s: %w; last lines:\n%s", s.Script, err, childproc.LastLines(stderr.Bytes(), 20))
	}
	dir := strings.TrimSpace(stdout.String())
	if i := strings.LastIndexByte(dir, '\n'); i >= 0 {
		dir = dir[i+1:]
	}
	if err := s.Check(dir); err != nil {
		return "", fmt.Errorf("after %s: %w", s.Script, err)
	}
	return dir, nil
}

// ModuleRoot walks up from the working directory to the directory holding
// this module's go.mod.
func ModuleRoot() (string, error) {
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

// Check reports an error wrapping Missing unless dir holds every program
// as an executable file.
func (s Set) Check(dir string) error {
	var missing []string
	for _, b := range s.Programs {
		fi, err := os.Stat(filepath.Join(dir, b))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s not in %s", s.Missing, strings.Join(missing, ", "), dir)
	}
	return nil
}
