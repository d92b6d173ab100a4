// Command device-agent is the vk-fleet daemon on a device: it runs the
// device's pods with podman, keeps them running while offline, and reports
// their status over NATS.
//
// It is also the device's fleetctl: started as "fleetctl" (the
// vk-fleet-agent package links /usr/bin/fleetctl to it), or as
// `device-agent fleetctl …`, it runs `fleetctl enroll` and answers the
// operator's commands with a pointer to the full fleetctl. One binary
// keeps what a device stores small: the full fleetctl links a Kubernetes
// client that the device never needs.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

// fleetctlName is the name under which device-agent runs as fleetctl.
const fleetctlName = "fleetctl"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	name, cmd := "device-agent", newRootCommand()
	if filepath.Base(os.Args[0]) == fleetctlName {
		name, cmd = fleetctlName, newFleetctlCommand()
	}
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}
