// Package debpkg builds vk-fleet-agent, the Debian package that puts
// device-agent, fleetctl and the agent's systemd unit on a device:
//
//	f, _ := os.Create(debpkg.FileName("v0.2.0", "arm64"))
//	err := debpkg.Build(f, debpkg.Config{Version: "v0.2.0", GOARCH: "arm64",
//		AgentBinary: "dist/linux-arm64/device-agent"})
//
// The device's fleetctl is device-agent itself: /usr/bin/fleetctl is a link
// to it, and device-agent started under that name enrolls the device. The
// operator's fleetctl, with its Kubernetes client, is not in the package.
// The package does not start the agent: `fleetctl enroll --install` does,
// once the device has its credentials.
package debpkg

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"

	"github.com/vk-fleet/vk-fleet/nodeagent/agentinstall"
)

// Name is the package name.
const Name = "vk-fleet-agent"

// FleetctlPath is where the package installs fleetctl: a link to
// device-agent (FleetctlTarget), which runs as fleetctl under that name.
const FleetctlPath = "/usr/bin/fleetctl"

// FleetctlTarget is what FleetctlPath links to: relative, so that the link
// also works in a root that dpkg installs into (--root, images).
const FleetctlTarget = "device-agent"

// Depends are the packages the agent needs: podman for its API socket
// (podman.socket) and catatonit, from which podman builds the infra
// ("pause") image of every pod locally.
var Depends = []string{"podman", "catatonit"}

// Config says what to package.
type Config struct {
	// Version is the vk-fleet version (v1.2.3, v1.2.3-rc1, or git describe's
	// v1.2.3-4-gabcdef0[-dirty]); DebianVersion turns it into the package's.
	Version string
	// GOARCH of the binaries: amd64, arm64 or arm (built with GOARM=7).
	GOARCH string
	// AgentBinary is the device-agent to install; it is also the
	// device's fleetctl.
	AgentBinary string
	// MTime of the packaged files (default: SOURCE_DATE_EPOCH, else now).
	MTime time.Time
}

// debArch maps GOARCH to Debian's architecture names.
var debArch = map[string]string{"amd64": "amd64", "arm64": "arm64", "arm": "armhf"}

// Arch returns the Debian architecture of goarch ("arm" is armhf: GOARM=7).
func Arch(goarch string) (string, error) {
	a, ok := debArch[goarch]
	if !ok {
		return "", fmt.Errorf("GOARCH %q: %w", goarch, ErrUnsupportedArch)
	}
	return a, nil
}

// ErrUnsupportedArch is returned for an architecture that has no package.
var ErrUnsupportedArch = errors.New("no Debian package for this architecture (amd64, arm64 and arm are)")

var (
	describeRE = regexp.MustCompile(`^(\d+\.\d+\.\d+)(?:-([0-9A-Za-z.]+))??(?:-(\d+)-g([0-9a-f]+))?(-dirty)?$`)
	invalidRE  = regexp.MustCompile(`[^0-9A-Za-z.+~]`)
)

// DebianVersion turns a vk-fleet version into a Debian one that sorts as
// releases do: v1.2.3 → 1.2.3, v1.2.3-rc1 → 1.2.3~rc1 (before 1.2.3), git
// describe's v1.2.3-4-gabcdef0-dirty → 1.2.3+4.gabcdef0.dirty (after it).
func DebianVersion(v string) (string, error) {
	v = strings.TrimPrefix(v, "v")
	m := describeRE.FindStringSubmatch(v)
	if m == nil {
		if v == "" || v[0] < '0' || v[0] > '9' {
			return "", fmt.Errorf("version %q does not start with a number", v)
		}
		return invalidRE.ReplaceAllString(v, "."), nil
	}
	out := m[1]
	if m[2] != "" {
		out += "~" + m[2]
	}
	var meta []string
	if m[3] != "" {
		meta = append(meta, m[3], "g"+m[4])
	}
	if m[5] != "" {
		meta = append(meta, "dirty")
	}
	if len(meta) > 0 {
		out += "+" + strings.Join(meta, ".")
	}
	return out, nil
}

// FileName is the conventional file name of the package of version for
// goarch: vk-fleet-agent_<debian version>_<debian arch>.deb.
func FileName(version, goarch string) (string, error) {
	v, err := DebianVersion(version)
	if err != nil {
		return "", err
	}
	a, err := Arch(goarch)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s_%s_%s.deb", Name, v, a), nil
}

// Build writes the package described by c to w.
func Build(w io.Writer, c Config) error {
	arch, err := Arch(c.GOARCH)
	if err != nil {
		return err
	}
	version, err := DebianVersion(c.Version)
	if err != nil {
		return err
	}
	if _, err := os.Stat(c.AgentBinary); err != nil {
		return fmt.Errorf("packaging: %w", err)
	}
	// nfpm packages files by path: the unit and the scripts are written
	// to a scratch directory first.
	dir, err := os.MkdirTemp("", "vkf-debpkg-")
	if err != nil {
		return fmt.Errorf("creating scratch directory: %w", err)
	}
	defer os.RemoveAll(dir)
	unit, err := agentinstall.Unit(agentinstall.DefaultBinary, agentinstall.DefaultConfig)
	if err != nil {
		return err
	}
	write := func(name string, data []byte) (string, error) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return "", fmt.Errorf("writing %s: %w", name, err)
		}
		return p, nil
	}
	unitFile, err := write(agentinstall.UnitName, unit)
	if err != nil {
		return err
	}
	var scripts nfpm.Scripts
	for _, s := range []struct {
		dst  *string
		name string
		text string
	}{
		{&scripts.PostInstall, "postinst", postinst},
		{&scripts.PreRemove, "prerm", prerm},
		{&scripts.PostRemove, "postrm", postrm},
	} {
		if *s.dst, err = write(s.name, []byte(s.text)); err != nil {
			return err
		}
	}

	mode := func(m os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Mode: m, Owner: "root", Group: "root"}
	}
	info := nfpm.WithDefaults(&nfpm.Info{
		Name:          Name,
		Arch:          arch,
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    "vk-fleet <vk-fleet@users.noreply.github.com>",
		Homepage:      "https://github.com/vk-fleet/vk-fleet",
		License:       "Apache-2.0",
		Description: "vk-fleet device agent: runs this device's Kubernetes pods with podman\n" +
			"device-agent makes this machine a Node of a Kubernetes cluster through vk-fleet\n" +
			"and runs the pods scheduled to it with podman, also while offline. fleetctl\n" +
			"(device-agent under that name) enrolls the device; `fleetctl enroll ... --install`\n" +
			"starts the agent.",
		MTime: c.MTime,
		Overridables: nfpm.Overridables{
			Depends: Depends,
			Contents: files.Contents{
				{Source: c.AgentBinary, Destination: agentinstall.DefaultBinary, FileInfo: mode(0o755)},
				{Source: FleetctlTarget, Destination: FleetctlPath, Type: files.TypeSymlink},
				{Source: unitFile, Destination: agentinstall.PackageUnitPath, FileInfo: mode(0o644)},
			},
			Scripts: scripts,
		},
	})
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return fmt.Errorf("preparing package: %w", err)
	}
	if err := deb.Default.Package(info, w); err != nil {
		return fmt.Errorf("writing package: %w", err)
	}
	return nil
}
