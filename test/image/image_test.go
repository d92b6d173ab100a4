// Package image tests the vk-fleet container image that hack/image.sh
// builds from the Containerfile: offline, in podman storage of its own.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/test/framework/podmantest"
)

const (
	testVersion = "v9.8.7-imagetest"
	testImage   = "localhost/vk-fleet-imagetest:" + testVersion
	nonroot     = "65532:65532"
)

// moduleRoot is the directory holding go.mod above the working directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

// staticBinary returns $VKF_BIN_DIR/vk-fleet if it is statically linked
// (no ELF interpreter), so that hack/image.sh need not build one.
func staticBinary() string {
	d := os.Getenv("VKF_BIN_DIR")
	if d == "" {
		return ""
	}
	p := filepath.Join(d, "vk-fleet")
	f, err := elf.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return ""
		}
	}
	return p
}

func TestImage(t *testing.T) {
	podmantest.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()

	// Storage of its own; a short path for overlay's mount options.
	dir, err := os.MkdirTemp("", "vkf-image-")
	if err != nil {
		t.Fatal(err)
	}
	conf, err := podmantest.ContainersConf(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := podmantest.StorageConf(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := podmantest.Reset(ctx, conf); err != nil {
			t.Logf("resetting podman storage: %v", err)
		}
		os.RemoveAll(dir)
	})
	podman := func(args ...string) (string, error) {
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, "podman", args...)
		cmd.Env = podmantest.Env(conf)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return string(out), errors.Join(err, errors.New(stderr.String()))
		}
		return string(out), nil
	}

	build := exec.CommandContext(ctx, filepath.Join(moduleRoot(t), "hack/image.sh"))
	build.Env = append(podmantest.Env(conf), "VKF_VERSION="+testVersion, "VKF_IMAGE="+testImage)
	binary := staticBinary()
	if binary != "" {
		build.Env = append(build.Env, "VKF_IMAGE_BINARY="+binary)
	}
	var stderr bytes.Buffer
	build.Stderr = &stderr
	start := time.Now()
	out, err := build.Output()
	if err != nil {
		t.Fatalf("hack/image.sh: %v\n%s%s", err, out, stderr.Bytes())
	}
	t.Logf("hack/image.sh built %s in %v (binary: %q, empty: built by the script)", strings.TrimSpace(string(out)), time.Since(start).Round(time.Second), binary)
	if got := strings.TrimSpace(string(out)); got != testImage {
		t.Fatalf("hack/image.sh printed %q, want %q", got, testImage)
	}

	t.Run("runs vk-fleet --version as a non-root user", func(t *testing.T) {
		out, err := podman("run", "--rm", testImage, "--version")
		if err != nil || !strings.HasPrefix(out, "vk-fleet version ") {
			t.Fatalf("podman run %s --version: %v\n%s", testImage, err, out)
		}
		if binary == "" && !strings.Contains(out, testVersion) {
			t.Errorf("version %q is not stamped: %s", testVersion, out)
		}
		user, err := podman("image", "inspect", "--format", "{{.Config.User}}", testImage)
		if err != nil || strings.TrimSpace(user) != nonroot {
			t.Errorf("image user %q (%v), want %s", user, err, nonroot)
		}
		// The user a container of the image runs as, as podman sets it up.
		id, err := podman("create", testImage, "--version")
		if err != nil {
			t.Fatal(err)
		}
		id = strings.TrimSpace(id)
		t.Cleanup(func() { podman("rm", "-f", id) })
		user, err = podman("inspect", "--format", "{{.Config.User}}", id)
		if err != nil || strings.TrimSpace(user) != nonroot {
			t.Errorf("container user %q (%v), want %s", user, err, nonroot)
		}
	})

	t.Run("has no shell", func(t *testing.T) {
		out, err := podman("run", "--rm", "--entrypoint", "/bin/sh", testImage, "-c", "true")
		if err == nil || !strings.Contains(err.Error(), "/bin/sh") {
			t.Errorf("/bin/sh in the image: err %v, output %q; want it not found", err, out)
		}
	})

	t.Run("holds the binary, CA certificates and the user, nothing else", func(t *testing.T) {
		id, err := podman("create", testImage)
		if err != nil {
			t.Fatal(err)
		}
		id = strings.TrimSpace(id)
		t.Cleanup(func() { podman("rm", "-f", id) })
		tarFile := filepath.Join(t.TempDir(), "fs.tar")
		if _, err := podman("export", "-o", tarFile, id); err != nil {
			t.Fatal(err)
		}
		files := tarFiles(t, tarFile)
		for _, want := range []string{"usr/bin/vk-fleet", "etc/ssl/certs/ca-certificates.crt", "etc/passwd", "etc/group"} {
			if files[want] <= 0 {
				t.Errorf("%s is missing or empty (files: %v)", want, files)
			}
		}
		for name := range files {
			base := filepath.Base(name)
			if strings.HasPrefix(name, "bin/") || strings.HasPrefix(name, "sbin/") || base == "sh" || base == "busybox" {
				t.Errorf("image holds %s", name)
			}
		}
		if passwd, _ := podman("run", "--rm", "--entrypoint", "/usr/bin/vk-fleet", testImage, "--help"); !strings.Contains(passwd, "vk-fleet") {
			t.Errorf("vk-fleet --help: %s", passwd)
		}
	})

	t.Run("is small", func(t *testing.T) {
		size, err := podman("image", "inspect", "--format", "{{.Size}}", testImage)
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(size), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("image size: %.1f MiB", float64(n)/(1<<20))
		// The binary plus about 200 KiB of certificates; anything more
		// means a base image crept in.
		const limit = 150 << 20
		if n > limit {
			t.Errorf("image is %d bytes, more than %d", n, limit)
		}
	})
}

// tarFiles returns the regular files in the tar at path and their sizes.
func tarFiles(t *testing.T, path string) map[string]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string]int64{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(filepath.Clean(h.Name), "/")
		if h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeSymlink {
			files[name] = h.Size
		}
	}
}
