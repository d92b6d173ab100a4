package agentinstall

import "errors"

// Sentinel errors of the package.
var (
	// ErrNoPodman means the device-agent binary was built without the
	// podman build tags: it starts, but can never run a pod.
	ErrNoPodman = errors.New("device-agent was built without podman support")
	// ErrUnitPath means a path cannot be written into a systemd unit as is.
	ErrUnitPath = errors.New("path cannot be used in a systemd unit")
)
