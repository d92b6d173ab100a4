// Command demo runs the vk-fleet demo: a local control plane, vk-fleet, two
// device-agents on podman, and examples/daemonset.yaml, which runs on one of
// the two devices. Start it with hack/demo.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/test/framework/devcluster"
)

func main() {
	keep := flag.Bool("keep", false, "keep the cluster running until interrupted")
	dir := flag.String("dir", "", "directory for the cluster's state and logs (default: a new temporary directory)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir string, keep bool) error {
	start := time.Now()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "vkf-demo-"); err != nil {
			return err
		}
	}
	c, err := devcluster.Start(ctx, devcluster.Config{Dir: dir, Devices: []string{"pi-kitchen", "pi-garage"}, Logger: log})
	if err != nil {
		return err
	}
	defer c.Stop()
	if err := c.WaitNodesReady(ctx, 2*time.Minute); err != nil {
		return err
	}
	step := func(args ...string) error {
		fmt.Printf("\n$ kubectl %s\n", strings.Join(args, " "))
		out, err := c.CP.Kubectl(ctx, args...)
		fmt.Print(string(out))
		return err
	}
	if err := step("label", "node", "pi-kitchen", "room=kitchen"); err != nil {
		return err
	}
	if err := step("apply", "-f", "examples/daemonset.yaml"); err != nil {
		return err
	}
	log.Info("waiting for the DaemonSet to be ready")
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for {
		ds, err := c.Client.AppsV1().DaemonSets("default").Get(wctx, "kitchen-web", metav1.GetOptions{})
		if err == nil && ds.Status.DesiredNumberScheduled == 1 && ds.Status.NumberReady == 1 {
			break
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("waiting for DaemonSet kitchen-web: %w", wctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	for _, args := range [][]string{
		{"get", "nodes", "-o", "wide"},
		{"get", "pods", "-o", "wide"},
		{"get", "daemonset", "kitchen-web"},
	} {
		if err := step(args...); err != nil {
			return err
		}
	}
	fmt.Println("\n$ curl http://127.0.0.1:18080/   # served by the container on pi-kitchen")
	// Running is not listening yet: give httpd a moment.
	var body []byte
	for deadline := time.Now().Add(15 * time.Second); ; {
		var resp *http.Response
		if resp, err = http.Get("http://127.0.0.1:18080/"); err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // polling with a deadline
	}
	if err != nil {
		fmt.Println("error:", err)
	} else {
		fmt.Print(string(body))
	}
	// The log comes from the device over NATS, through vk-fleet's kubelet API.
	if err := step("logs", "daemonset/kitchen-web"); err != nil {
		return err
	}
	fmt.Printf("\ndemo ready in %s; state and logs in %s\n", time.Since(start).Round(time.Second), dir)
	if keep {
		fmt.Printf("cluster keeps running; try:\n  export KUBECONFIG=%s\n  %s/kubectl get nodes\nCtrl-C stops it.\n", c.CP.Kubeconfig, os.Getenv("VKF_CONTROLPLANE_BIN"))
		<-ctx.Done()
	}
	return nil
}
