// Command fleetctl is vk-fleet's operator CLI: admins create enrollment
// tokens, list and revoke devices. It also has `fleetctl enroll`
// (nodeagent/enrollcmd), which registers a device and installs the agent's
// configuration; on devices that command comes with device-agent, which
// runs as fleetctl under that name, without the operator commands'
// Kubernetes client.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "fleetctl:", err)
		os.Exit(1)
	}
}
