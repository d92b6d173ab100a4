package agentinstall

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// Where the agent and its unit live on a device.
const (
	// UnitName is the systemd unit of the agent.
	UnitName = "vk-fleet-agent.service"
	// PackageUnitPath is where the .deb installs the unit.
	PackageUnitPath = "/lib/systemd/system/" + UnitName
	// LocalUnitPath is where `fleetctl enroll --install` writes the unit
	// when the packaged one does not fit (another binary or configuration).
	LocalUnitPath = "/etc/systemd/system/" + UnitName
	// DefaultBinary is where the .deb installs device-agent.
	DefaultBinary = "/usr/bin/device-agent"
	// DefaultConfig is the configuration `fleetctl enroll` writes.
	DefaultConfig = nodeagent.DefaultConfigPath
)

// unitTemplate runs the agent once the device is enrolled: until config
// exists, ConditionPathExists makes starting the unit a no-op, so a package
// may install (and even enable) it before enrollment. Wants=podman.socket
// starts podman's API socket with the agent; the agent tolerates podman
// answering later.
const unitTemplate = `[Unit]
Description=vk-fleet device agent
Documentation=https://github.com/vk-fleet/vk-fleet
Wants=network-online.target podman.socket
After=network-online.target podman.socket
ConditionPathExists=%[2]s

[Service]
ExecStart=%[1]s --config %[2]s
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
`

// Unit returns the systemd unit that runs the agent at binary with the
// configuration file config. Both must be absolute paths without white
// space, quotes, backslashes or specifiers (%), which a unit would read
// differently.
func Unit(binary, config string) ([]byte, error) {
	for _, p := range []string{binary, config} {
		if !filepath.IsAbs(p) || strings.ContainsAny(p, " \t\r\n\"'\\%;$") {
			return nil, fmt.Errorf("%q: %w (it must be absolute, without spaces, quotes, backslashes, %%, ; or $)", p, ErrUnitPath)
		}
	}
	return fmt.Appendf(nil, unitTemplate, filepath.Clean(binary), filepath.Clean(config)), nil
}
