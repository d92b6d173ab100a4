// Command device-agent is the vk-fleet daemon on a device: it runs the
// device's pods with podman, keeps them running while offline, and reports
// their status over NATS.
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
		fmt.Fprintln(os.Stderr, "device-agent:", err)
		os.Exit(1)
	}
}
