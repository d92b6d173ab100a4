// Command vk-fleet is the vk-fleet provider: it serves many edge devices as
// Kubernetes Nodes through virtual-kubelet, talking to them over NATS.
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
		fmt.Fprintln(os.Stderr, "vk-fleet:", err)
		os.Exit(1)
	}
}
