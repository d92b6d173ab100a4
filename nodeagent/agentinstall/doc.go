// Package agentinstall provides what installs device-agent as a systemd
// service, shared by `fleetctl enroll --install` and the vk-fleet-agent .deb
// so that the two never drift: the unit itself, and the check that a
// device-agent binary can run pods at all.
//
//	unit, err := agentinstall.Unit(agentinstall.DefaultBinary, agentinstall.DefaultConfig)
//	info, err := agentinstall.Check(ctx, "/usr/bin/device-agent") // ErrNoPodman for an untagged build
package agentinstall
