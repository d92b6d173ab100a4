package podmantest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// busyboxPath is where Debian's busybox-static installs its binary.
const busyboxPath = "/bin/busybox"

// passwd and group give the test image a root and a nobody user.
const (
	passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	group  = "root:x:0:\nnogroup:x:65534:\n"
)

// BuildBusyboxImage imports a tiny image named ref into the podman storage
// that the containers.conf at conf selects: /bin/busybox with a symlink in
// /bin for every applet (sh, sleep, httpd, echo, cat, wget, nc, ...), an
// /etc/passwd with root and nobody, PATH set and CMD ["sh"], no entrypoint.
// It does nothing when ref already exists. It is safe to call concurrently
// from several processes: a lock file in os.TempDir() serialises builds.
func BuildBusyboxImage(ctx context.Context, conf, ref string) error {
	unlock, err := lockFile(ctx, filepath.Join(os.TempDir(), "vkf-podmantest-image.lock"))
	if err != nil {
		return err
	}
	defer unlock()

	if err := podmanCmd(ctx, conf, "image", "exists", ref).Run(); err == nil {
		return nil
	}

	dir, err := os.MkdirTemp("", "vkf-busybox-")
	if err != nil {
		return fmt.Errorf("creating build dir: %w", err)
	}
	defer os.RemoveAll(dir)
	tarPath := filepath.Join(dir, "rootfs.tar")
	if err := writeRootfsTar(ctx, tarPath); err != nil {
		return err
	}
	_, err = runPodman(ctx, conf, "import",
		"--change", "ENV PATH=/bin:/usr/bin:/sbin:/usr/sbin",
		"--change", `CMD ["sh"]`,
		"--message", "vk-fleet busybox test image",
		tarPath, ref)
	if err != nil {
		return fmt.Errorf("importing %s: %w", ref, err)
	}
	return nil
}

// writeRootfsTar writes the busybox root file system as a tar to path.
func writeRootfsTar(ctx context.Context, path string) error {
	applets, err := BusyboxApplets(ctx)
	if err != nil {
		return err
	}
	bin, err := os.ReadFile(busyboxPath)
	if err != nil {
		return fmt.Errorf("reading busybox (install busybox-static): %w", err)
	}

	fs := NewRootfs()
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "root", "var", "var/www", "usr", "usr/bin"} {
		fs.Dir(d, 0o755)
	}
	fs.Dir("tmp", 0o1777)
	fs.File("bin/busybox", 0o755, bin)
	fs.File("etc/passwd", 0o644, []byte(passwd))
	fs.File("etc/group", 0o644, []byte(group))
	for _, a := range applets {
		if a != "busybox" {
			fs.Symlink("bin/"+a, "busybox")
		}
	}
	return fs.WriteFile(path)
}

// BusyboxApplets lists the applets of the installed busybox.
func BusyboxApplets(ctx context.Context) ([]string, error) {
	out, err := exec.CommandContext(ctx, busyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets (install busybox-static): %w", err)
	}
	var applets []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		a := strings.TrimSpace(sc.Text())
		if a != "" && !strings.Contains(a, "/") {
			applets = append(applets, a)
		}
	}
	if len(applets) == 0 {
		return nil, fmt.Errorf("busybox --list printed no applets")
	}
	return applets, nil
}

// lockFile takes an exclusive flock on path, polling until ctx ends, and
// returns the function that releases it.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if err != syscall.EWOULDBLOCK && err != syscall.EINTR {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, ctx.Err())
		case <-tick.C:
		}
	}
}
