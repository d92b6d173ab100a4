package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/vk-fleet/vk-fleet/registry"
	"github.com/vk-fleet/vk-fleet/test/framework/devcluster"
)

// runCmd starts the cluster, runs the command after "--" against it and
// returns the command's exit code.
func runCmd(ctx context.Context, args []string) (int, error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for the cluster's state and logs (required; keep it short)")
	bin := fs.String("bin", "", "directory holding agnhost and nnp, which the test images are built from (required)")
	devices := fs.String("devices", "conf-1,conf-2", "comma-separated device names")
	if err := fs.Parse(args); err != nil {
		return 0, err
	}
	command := fs.Args()
	if *dir == "" || *bin == "" || len(command) == 0 {
		return 0, errors.New("usage: conformance run -dir D -bin DIR -- command [args]")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	names := strings.Split(*devices, ",")

	start := time.Now()
	c, err := devcluster.Start(ctx, devcluster.Config{Dir: *dir, Devices: names, Logger: log})
	if err != nil {
		return 0, fmt.Errorf("starting the dev cluster: %w", err)
	}
	defer c.Stop()
	if err := buildImages(ctx, log, c.Podman.Conf, *bin); err != nil {
		return 0, err
	}
	if err := c.WaitNodesReady(ctx, 2*time.Minute); err != nil {
		return 0, err
	}
	for _, n := range names {
		if err := untaint(ctx, c, n); err != nil {
			return 0, err
		}
	}
	log.Info("conformance cluster ready", "took", time.Since(start).Round(time.Second),
		"kubeconfig", c.CP.Kubeconfig, "devices", names)

	cmd := exec.CommandContext(ctx, command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.CP.Kubeconfig)
	// Interrupted: let ginkgo report what ran so far.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = time.Minute
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exit):
		return exit.ExitCode(), nil
	default:
		return 0, fmt.Errorf("running %s: %w", command[0], err)
	}
}

// untaint removes vk-fleet's NoSchedule taint from the device Node name.
// The conformance specs create pods without tolerations; on a cluster made
// for running them, the device Nodes take any pod. vk-fleet sets the taint
// when it registers the device (registry) and never puts it back: its
// status patches do not touch the Node's spec.
func untaint(ctx context.Context, c *devcluster.Cluster, name string) error {
	nodes := c.Client.CoreV1().Nodes()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := nodes.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		var keep []corev1.Taint
		for _, t := range n.Spec.Taints {
			if t.Key != registry.TaintKey {
				keep = append(keep, t)
			}
		}
		n.Spec.Taints = keep
		_, err = nodes.Update(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("removing the vk-fleet taint of node %s: %w", name, err)
	}
	return nil
}
