package debpkg_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/internal/debpkg"
	"github.com/vk-fleet/vk-fleet/nodeagent/agentinstall"
)

func TestDebianVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":                      "1.2.3",
		"v1.2.3-rc.1":                 "1.2.3~rc.1",
		"v1.2.3-4-gabcdef0":           "1.2.3+4.gabcdef0",
		"v1.2.3-4-gabcdef0-dirty":     "1.2.3+4.gabcdef0.dirty",
		"v0.1.0-dev-0-gabcdef0-dirty": "0.1.0~dev+0.gabcdef0.dirty",
		"1.2.3_x":                     "1.2.3.x",
	} {
		if got, err := debpkg.DebianVersion(in); err != nil || got != want {
			t.Errorf("DebianVersion(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := debpkg.DebianVersion("dev"); err == nil {
		t.Error("DebianVersion(dev) succeeded; a Debian version starts with a digit")
	}
	if name, err := debpkg.FileName("v1.2.3", "arm"); err != nil || name != "vk-fleet-agent_1.2.3_armhf.deb" {
		t.Errorf("FileName(v1.2.3, arm) = %q, %v", name, err)
	}
	if _, err := debpkg.FileName("v1.2.3", "riscv64"); !errors.Is(err, debpkg.ErrUnsupportedArch) {
		t.Errorf("FileName for riscv64: %v, want ErrUnsupportedArch", err)
	}
}

// binaries returns a directory with device-agent: $VKF_BIN_DIR (hack/test.sh
// builds it with the podman tags), else a fresh build.
func binaries(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("VKF_BIN_DIR"); d != "" {
		return d
	}
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), "go", "build", "-tags", "remote containers_image_openpgp exclude_graphdriver_btrfs",
		"-o", dir+"/", "github.com/vk-fleet/vk-fleet/cmd/device-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building binaries: %v\n%s", err, b)
	}
	return dir
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

// TestPackage builds the amd64 package and inspects it with dpkg: files and
// modes, control fields, maintainer scripts, an installation into a root
// directory, the unit (systemd-analyze verify) and a removal.
func TestPackage(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb is not installed (apt-get install dpkg)")
	}
	bin := binaries(t)
	dir := t.TempDir()
	const version = "v1.2.3-4-gabcdef0"
	name, err := debpkg.FileName(version, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	deb := filepath.Join(dir, name)
	f, err := os.Create(deb)
	if err != nil {
		t.Fatal(err)
	}
	err = debpkg.Build(f, debpkg.Config{Version: version, GOARCH: "amd64", AgentBinary: filepath.Join(bin, "device-agent")})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(deb); err == nil {
		t.Logf("%s: %d bytes", name, fi.Size())
	}

	t.Run("control", func(t *testing.T) {
		fields := run(t, "dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Depends")
		want := "Package: vk-fleet-agent\nVersion: 1.2.3+4.gabcdef0\nArchitecture: amd64\nDepends: podman, catatonit\n"
		if fields != want {
			t.Errorf("control fields:\n%s\nwant:\n%s", fields, want)
		}
	})
	t.Run("files and modes", func(t *testing.T) {
		listing := run(t, "dpkg-deb", "-c", deb)
		got := map[string]string{}
		for line := range strings.Lines(listing) {
			f := strings.Fields(line)
			switch {
			case len(f) == 6 && !strings.HasSuffix(f[5], "/"):
				got[f[5]] = f[0] + " " + f[1]
			case len(f) == 8 && f[6] == "->":
				got[f[5]] = f[0][:1] + " " + f[1] + " -> " + f[7]
			}
		}
		// The device's fleetctl is device-agent: no second binary.
		want := map[string]string{
			"./usr/bin/device-agent":                      "-rwxr-xr-x root/root",
			"./usr/bin/fleetctl":                          "l root/root -> device-agent",
			"./lib/systemd/system/vk-fleet-agent.service": "-rw-r--r-- root/root",
		}
		if len(got) != len(want) {
			t.Errorf("package files:\n%s", listing)
		}
		for p, m := range want {
			if got[p] != m {
				t.Errorf("%s: %q, want %q", p, got[p], m)
			}
		}
	})
	t.Run("maintainer scripts do not start the agent", func(t *testing.T) {
		ctrl := filepath.Join(t.TempDir(), "DEBIAN")
		run(t, "dpkg-deb", "-e", deb, ctrl)
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			p := filepath.Join(ctrl, s)
			fi, err := os.Stat(p)
			if err != nil || fi.Mode().Perm()&0o111 == 0 {
				t.Errorf("%s: %v, mode %v; want an executable script", s, err, fi.Mode())
				continue
			}
			run(t, "sh", "-n", p)
			b, _ := os.ReadFile(p)
			for _, bad := range []string{"systemctl start", "systemctl enable", "systemctl restart"} {
				if strings.Contains(string(b), bad) {
					t.Errorf("%s runs %q: the agent must start only after enrollment:\n%s", s, bad, b)
				}
			}
		}
	})

	t.Run("install into a root, verify the unit, remove", func(t *testing.T) {
		if _, err := exec.LookPath("dpkg"); err != nil {
			t.Skip("dpkg is not installed")
		}
		root := t.TempDir()
		for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
			if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
			if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		// podman and catatonit are not in this root: --force-depends. The
		// scripts run without chroot, with DPKG_ROOT set, as in a
		// debootstrap-like image build.
		dpkg := []string{"--root=" + root, "--force-script-chrootless", "--force-depends", "--log=/dev/null"}
		out := run(t, "dpkg", append(dpkg, "-i", deb)...)
		if !strings.Contains(out, "fleetctl enroll") {
			t.Errorf("postinst does not say how to enroll:\n%s", out)
		}
		if status := run(t, "dpkg", "--root="+root, "-s", "vk-fleet-agent"); !strings.Contains(status, "Status: install ok installed") {
			t.Errorf("dpkg -s:\n%s", status)
		}
		unit, err := os.ReadFile(filepath.Join(root, agentinstall.PackageUnitPath))
		if err != nil {
			t.Fatal(err)
		}
		// The package's unit is the one `fleetctl enroll --install` writes
		// for the default paths: enroll then uses the packaged one.
		if want, _ := agentinstall.Unit(agentinstall.DefaultBinary, agentinstall.DefaultConfig); !bytes.Equal(unit, want) {
			t.Errorf("packaged unit:\n%s\nwant:\n%s", unit, want)
		}
		agent := filepath.Join(root, agentinstall.DefaultBinary)
		if info, err := agentinstall.Check(t.Context(), agent); err != nil {
			t.Errorf("installed device-agent: %v", err)
		} else {
			t.Logf("installed device-agent: %+v", info)
		}
		verifyUnit(t, root)
		checkFleetctl(t, filepath.Join(root, debpkg.FleetctlPath))

		run(t, "dpkg", append(dpkg, "-r", "vk-fleet-agent")...)
		for _, p := range []string{agentinstall.DefaultBinary, debpkg.FleetctlPath, agentinstall.PackageUnitPath} {
			if _, err := os.Lstat(filepath.Join(root, p)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s is left after dpkg -r (%v)", p, err)
			}
		}
	})
}

// checkFleetctl runs the installed fleetctl (the link to device-agent): it
// enrolls, with every flag of the operator's `fleetctl enroll`, and sends
// the operator's commands to the full fleetctl.
func checkFleetctl(t *testing.T, fleetctl string) {
	t.Helper()
	if out := run(t, fleetctl, "version"); !strings.HasPrefix(out, "fleetctl ") {
		t.Errorf("fleetctl version: %q", out)
	}
	help := run(t, fleetctl, "enroll", "--help")
	for _, flag := range []string{"--server", "--token-file", "--install", "--root", "--agent-binary", "--zitadel-admin-token-file"} {
		if !strings.Contains(help, flag) {
			t.Errorf("fleetctl enroll --help lacks %s:\n%s", flag, help)
		}
	}
	// Enrolling gets as far as the server, which is not there.
	cmd := exec.CommandContext(t.Context(), fleetctl, "enroll", "--server", "nats://127.0.0.1:1", "--token", "abcdef.0123456789abcdef",
		"--name", "pi-test", "--root", t.TempDir(), "--timeout", "2s")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "connecting to nats://127.0.0.1:1") {
		t.Errorf("fleetctl enroll without a server: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"token", "create", "--ttl", "1h"}, {"devices"}, {"revoke", "pi-1"}, {"ca"}} {
		out, err := exec.CommandContext(t.Context(), fleetctl, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "operator command of the full fleetctl") {
			t.Errorf("fleetctl %s on the device: %v\n%s; want a failure pointing to the full fleetctl", strings.Join(args, " "), err, out)
		}
	}
}

// verifyUnit runs `systemd-analyze verify --root` on the unit installed in
// root, with the host's own system units copied beside it (the targets it
// names) — and checks that it fails once the agent is gone, so that it
// really looked at ExecStart in root.
func verifyUnit(t *testing.T, root string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze is not installed (apt-get install systemd): unit not verified")
		return
	}
	units := filepath.Join(root, "usr/lib/systemd/system")
	if err := os.MkdirAll(filepath.Dir(units), 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "cp", "-a", "/lib/systemd/system/", units)
	verify := func() ([]byte, error) {
		return exec.CommandContext(t.Context(), "systemd-analyze", "verify", "--root="+root, agentinstall.PackageUnitPath).CombinedOutput()
	}
	if out, err := verify(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	agent := filepath.Join(root, agentinstall.DefaultBinary)
	if err := os.Rename(agent, agent+".away"); err != nil {
		t.Fatal(err)
	}
	if out, err := verify(); err == nil || !bytes.Contains(out, []byte("device-agent")) {
		t.Errorf("systemd-analyze verify without the agent: %v\n%s; want a failure naming it", err, out)
	}
	if err := os.Rename(agent+".away", agent); err != nil {
		t.Fatal(err)
	}
}
