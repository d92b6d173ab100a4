package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vk-fleet/vk-fleet/test/framework/podmantest"
)

// The upstream test images, as `e2e.test --list-images` names them, and
// what stands in for each here (no registry is reachable). Every one is
// built from programs on this machine: Debian's busybox-static and agnhost
// from k8s.io/kubernetes/test/images/agnhost at the suite's own version.
//
// An image the selected specs use but this table lacks fails those specs
// with an image pull error, in plain sight in docs/conformance.md.
var images = []imageSpec{
	{
		// registry.k8s.io/e2e-test-images/agnhost: alpine + agnhost. Here
		// busybox + agnhost: sh, nc, wget and friends as the specs use them
		// from the image; the user and group the supplemental-groups specs
		// expect; /uploads for netexec; agnhost-2 for the entrypoint specs.
		Ref: "registry.k8s.io/e2e-test-images/agnhost:2.66.1", Agnhost: true, Busybox: true,
		Entrypoint: `["/agnhost"]`, Cmd: `["pause"]`,
	},
	{
		// The previous agnhost, used by a few upgrade-style specs.
		Ref: "registry.k8s.io/e2e-test-images/agnhost:2.55", Agnhost: true, Busybox: true,
		Entrypoint: `["/agnhost"]`, Cmd: `["pause"]`,
	},
	{
		// registry.k8s.io/e2e-test-images/busybox is busybox with CMD sh.
		Ref: "registry.k8s.io/e2e-test-images/busybox:1.37.0-2", Busybox: true, Cmd: `["sh"]`,
	},
	{
		Ref: "registry.k8s.io/e2e-test-images/busybox:1.36.1-1", Busybox: true, Cmd: `["sh"]`,
	},
	{
		// registry.k8s.io/pause: a process that sleeps until signalled;
		// agnhost's pause subcommand is exactly that.
		Ref: "registry.k8s.io/pause:3.10.2", Agnhost: true,
		Entrypoint: `["/agnhost", "pause"]`,
	},
	{
		// registry.k8s.io/e2e-test-images/nginx (and the newer one): an
		// HTTP server on port 80 serving a page. agnhost test-webserver
		// serves files on 80 the same way. The specs that use nginx (rolling
		// updates, readiness) only need a server that answers on 80.
		Ref: "registry.k8s.io/e2e-test-images/nginx:1.27.0-2", Agnhost: true, Busybox: true,
		Entrypoint: `["/agnhost", "test-webserver"]`,
	},
	{
		Ref: "registry.k8s.io/e2e-test-images/nginx:1.28.0-2", Agnhost: true, Busybox: true,
		Entrypoint: `["/agnhost", "test-webserver"]`,
	},
	{
		// registry.k8s.io/e2e-test-images/nonewprivs: busybox with the
		// setuid program nnp, which prints its effective uid.
		Ref: "registry.k8s.io/e2e-test-images/nonewprivs:1.4", Busybox: true, Nnp: true, Cmd: `["nnp"]`,
	},
	{
		// registry.k8s.io/e2e-test-images/kitten: the agnhost image plus
		// test/images/kitten/html (kitten.jpg, data.json), copied here
		// from that directory of the suite's own module. The image volume
		// spec also reads the upstream base's /etc/os-release, Alpine's:
		// the stand-in's says what it is.
		Ref: "registry.k8s.io/e2e-test-images/kitten:1.8", Agnhost: true, Busybox: true, Kitten: true,
		Entrypoint: `["/agnhost"]`, Cmd: `["test-webserver"]`,
	},
	{
		// registry.k8s.io/e2e-test-images/nonroot: busybox whose default
		// user is 1234.
		Ref: "registry.k8s.io/e2e-test-images/nonroot:1.5", Busybox: true, User: "1234", Cmd: `["sh"]`,
	},
}

// imageSpec describes a test image built from local programs.
type imageSpec struct {
	Ref        string
	Agnhost    bool   // /agnhost and /agnhost-2
	Busybox    bool   // /bin/busybox and its applets
	Nnp        bool   // /usr/local/bin/nnp, setuid root
	Kitten     bool   // /kitten.jpg, /data.json and an /etc/os-release
	Entrypoint string // JSON array, or empty
	Cmd        string // JSON array, or empty
	User       string
}

// buildImages imports every image of the table into the podman storage
// that conf (a containers.conf written by podmantest) selects, unless it
// already exists there. bin holds agnhost and nnp (hack/conformance-build.sh).
func buildImages(ctx context.Context, log *slog.Logger, conf, bin string) error {
	for _, im := range images {
		if podman(ctx, conf, "image", "exists", im.Ref) == nil {
			continue
		}
		start := time.Now()
		if err := buildImage(ctx, conf, bin, im); err != nil {
			return fmt.Errorf("building image %s: %w", im.Ref, err)
		}
		log.Info("test image built", "image", im.Ref, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

func buildImage(ctx context.Context, conf, bin string, im imageSpec) error {
	dir, err := os.MkdirTemp("", "vkf-conf-image-")
	if err != nil {
		return fmt.Errorf("creating build dir: %w", err)
	}
	defer os.RemoveAll(dir)
	tarPath := filepath.Join(dir, "rootfs.tar")
	if err := writeRootfs(ctx, tarPath, im, bin); err != nil {
		return err
	}
	args := []string{"import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if im.Entrypoint != "" {
		args = append(args, "--change", "ENTRYPOINT "+im.Entrypoint)
	}
	if im.Cmd != "" {
		args = append(args, "--change", "CMD "+im.Cmd)
	}
	if im.User != "" {
		args = append(args, "--change", "USER "+im.User)
	}
	args = append(args, "--message", "vk-fleet conformance stand-in for "+im.Ref, tarPath, im.Ref)
	return podman(ctx, conf, args...)
}

// bashStatic is Debian's bash-static. Debian 12's busybox (1.35) ash
// drops environment variables whose names are not shell identifiers
// ("data-1", which Kubernetes allows since 1.34) before running a command;
// the upstream busybox image (1.37) passes them on, as bash does, and
// otherwise behaves as ash (its error messages, which one spec compares
// word for word). So the stand-ins keep both: "sh" found through PATH is
// bash (/usr/local/bin/sh, first in PATH), which the specs that print
// such variables run; /bin/sh, which the specs name when they compare a
// shell's words, is busybox ash. The other busybox applets stay.
const bashStatic = "/bin/bash-static"

// curlShim stands in for the curl of the upstream agnhost image (alpine's)
// in the forms the specs use: curl [-s] [-f] [-g] [-q] [-o FILE]
// [--connect-timeout N] [-m N] URL, over busybox wget.
const curlShim = `#!/bin/sh
# vk-fleet conformance stand-in for curl (busybox wget underneath).
out=- timeout=
while [ $# -gt 0 ]; do
  case $1 in
    -o|--output) out=$2; shift ;;
    --connect-timeout|-m|--max-time) timeout=$2; shift ;;
    -*) ;;
    *) url=$1 ;;
  esac
  shift
done
exec wget -q ${timeout:+-T "$timeout"} -O "$out" "$url"
`

// Users and groups of the images: root, nobody, and agnhost's
// user-defined-in-image (1000) in group-defined-in-image (50000).
const (
	passwd = "root:x:0:0:root:/root:/bin/sh\n" +
		"user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	group = "root:x:0:\nuser-defined-in-image:x:1000:\n" +
		"group-defined-in-image:x:50000:user-defined-in-image\nnogroup:x:65534:\n"
)

// writeRootfs writes the root file system of im as a tar file at path.
func writeRootfs(ctx context.Context, path string, im imageSpec, bin string) error {
	fs := podmantest.NewRootfs()
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "root", "var", "usr", "usr/bin", "usr/local", "usr/local/bin", "home"} {
		fs.Dir(d, 0o755)
	}
	fs.Dir("tmp", 0o1777)
	fs.Add(&tar.Header{Typeflag: tar.TypeDir, Name: "home/user-defined-in-image/", Mode: 0o755, Uid: 1000, Gid: 1000}, nil)
	fs.File("etc/passwd", 0o644, []byte(passwd))
	fs.File("etc/group", 0o644, []byte(group))
	fs.File("etc/hosts", 0o644, []byte("127.0.0.1 localhost\n"))
	if im.Busybox {
		bb, err := os.ReadFile("/bin/busybox")
		if err != nil {
			return fmt.Errorf("reading busybox (install busybox-static): %w", err)
		}
		applets, err := podmantest.BusyboxApplets(ctx)
		if err != nil {
			return err
		}
		sh, err := os.ReadFile(bashStatic)
		if err != nil {
			return fmt.Errorf("reading bash-static (install bash-static): %w", err)
		}
		fs.File("bin/busybox", 0o755, bb)
		fs.File("bin/bash", 0o755, sh)
		for _, a := range applets {
			if a != "busybox" && a != "sh" && a != "bash" {
				fs.Symlink("bin/"+a, "busybox")
			}
		}
		fs.Symlink("bin/sh", "busybox")
		fs.Symlink("usr/local/bin/sh", "/bin/bash")
	}
	if im.Kitten {
		dir, err := kittenDir(ctx)
		if err != nil {
			return err
		}
		for _, name := range []string{"kitten.jpg", "data.json"} {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return fmt.Errorf("reading the kitten image's %s: %w", name, err)
			}
			fs.File(name, 0o644, b)
		}
		fs.File("etc/os-release", 0o644, []byte(`NAME="vk-fleet conformance stand-in for Alpine Linux, the base of the upstream agnhost image"
ID=vkfleet-standin
`))
	}
	if im.Agnhost && im.Busybox {
		fs.File("usr/bin/curl", 0o755, []byte(curlShim))
	}
	if im.Agnhost {
		b, err := os.ReadFile(filepath.Join(bin, "agnhost"))
		if err != nil {
			return fmt.Errorf("reading agnhost: %w", err)
		}
		fs.File("agnhost", 0o755, b)
		fs.Symlink("agnhost-2", "agnhost")
		fs.Dir("uploads", 0o755)
	}
	if im.Nnp {
		b, err := os.ReadFile(filepath.Join(bin, "nnp"))
		if err != nil {
			return fmt.Errorf("reading nnp: %w", err)
		}
		fs.File("usr/local/bin/nnp", 0o4755, b)
	}
	return fs.WriteFile(path)
}

// podman runs podman on the storage that conf selects.
func podman(ctx context.Context, conf string, args ...string) error {
	cmd := exec.CommandContext(ctx, "podman", args...)
	cmd.Env = podmantest.Env(conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// kittenDir is test/images/kitten/html of k8s.io/kubernetes at the suite's
// version ($K8S_VERSION) in the Go module cache, which the e2e.test build
// filled.
func kittenDir(ctx context.Context) (string, error) {
	version := os.Getenv("K8S_VERSION")
	if version == "" {
		return "", fmt.Errorf("K8S_VERSION is not set (hack/conformance.sh sets it)")
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOMODCACHE").Output()
	if err != nil {
		return "", fmt.Errorf("finding the Go module cache: %w", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "k8s.io", "kubernetes@"+version, "test", "images", "kitten", "html"), nil
}
