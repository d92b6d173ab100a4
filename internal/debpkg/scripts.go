package debpkg

// The maintainer scripts. None of them starts the agent: until
// `fleetctl enroll --install` has written the device's credentials and
// enabled the unit there is nothing for it to run as (its unit also has
// ConditionPathExists on the configuration). An upgrade restarts an agent
// that is already running, so that it runs the new binary. As debhelper's,
// they leave systemd alone when it is not running or when dpkg installs
// into another root without chroot (DPKG_ROOT).

const postinst = `#!/bin/sh
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	if [ "$1" = configure ] && [ -n "$2" ]; then
		systemctl try-restart vk-fleet-agent.service >/dev/null 2>&1 || true
	fi
fi
if [ "$1" = configure ] && [ ! -e "${DPKG_ROOT:-}/etc/vk-fleet/agent.json" ]; then
	echo "vk-fleet-agent: enroll this device to start the agent:"
	echo "  fleetctl enroll --server tls://<fleet>:4222 --token <token> --ca ca.crt --install"
fi
exit 0
`

const prerm = `#!/bin/sh
set -e
if [ "$1" = remove ] && [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl disable --now vk-fleet-agent.service >/dev/null 2>&1 || true
fi
exit 0
`

const postrm = `#!/bin/sh
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
`
