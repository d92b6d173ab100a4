// Command conformance runs the upstream Kubernetes conformance specs
// against device Nodes and writes docs/conformance.md. hack/conformance.sh
// builds what it needs and calls it twice:
//
//	conformance run -dir D -bin DIR -- <command>   # a dev cluster, then <command> against it
//	conformance report -junit J -exclusions F -out docs/conformance.md
//
// run starts a dev cluster (test/framework/devcluster: control plane,
// vk-fleet, device-agents on podman with storage of their own), builds the
// test images into that podman storage, removes the vk-fleet taint from
// the device Nodes (the specs set no tolerations), runs <command> with
// KUBECONFIG set, and stops everything it started.
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
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: conformance run|report [flags]")
		os.Exit(2)
	}
	var err error
	code := 0
	switch os.Args[1] {
	case "run":
		code, err = runCmd(ctx, os.Args[2:])
	case "report":
		err = reportCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (run or report)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
	os.Exit(code)
}
