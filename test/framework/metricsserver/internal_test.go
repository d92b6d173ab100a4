package metricsserver

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestBuildScriptVersion keeps Version, which names the cache directory,
// in step with the build script's default.
func TestBuildScriptVersion(t *testing.T) {
	script, err := os.ReadFile(filepath.Join("..", "..", "..", buildScript))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`METRICS_SERVER_VERSION=\$\{METRICS_SERVER_VERSION:-([^}]+)\}`).FindSubmatch(script)
	if m == nil {
		t.Fatalf("METRICS_SERVER_VERSION default not found in %s", buildScript)
	}
	if got := string(m[1]); got != Version {
		t.Errorf("script builds %s, package expects %s", got, Version)
	}
}

func TestBinDir(t *testing.T) {
	t.Run("no build", func(t *testing.T) {
		t.Setenv(EnvBinDir, "")
		t.Setenv("VKF_CACHE", t.TempDir())
		t.Setenv(EnvNoBuild, "1")
		if _, err := BinDir(); !errors.Is(err, ErrBinaryMissing) {
			t.Errorf("got %v, want ErrBinaryMissing", err)
		}
	})
	t.Run("explicit dir", func(t *testing.T) {
		dir := t.TempDir()
		t.Setenv(EnvBinDir, dir)
		if _, err := BinDir(); !errors.Is(err, ErrBinaryMissing) {
			t.Errorf("empty dir: got %v, want ErrBinaryMissing", err)
		}
		if err := os.WriteFile(filepath.Join(dir, binary), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		got, err := BinDir()
		if err != nil || got != dir {
			t.Errorf("got %q, %v; want %q", got, err, dir)
		}
	})
	t.Run("cache dir", func(t *testing.T) {
		cache := t.TempDir()
		t.Setenv(EnvBinDir, "")
		t.Setenv("VKF_CACHE", cache)
		t.Setenv(EnvNoBuild, "1")
		dir := filepath.Join(cache, "metrics-server-"+Version, "bin")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, binary), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		got, err := BinDir()
		if err != nil || got != dir {
			t.Errorf("got %q, %v; want %q", got, err, dir)
		}
	})
}
