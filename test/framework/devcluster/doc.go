// Package devcluster starts a whole vk-fleet installation on one machine for
// the e2e tests and the demo: a real control plane (internal/controlplane), a
// podman service (internal/podmantest), the vk-fleet provider with its
// embedded NATS server, and device-agent processes, all on loopback ports in
// one directory, and stops every process it started by PID.
//
// Usage:
//
//	c, err := devcluster.Start(ctx, devcluster.Config{Dir: dir, Devices: []string{"pi-1", "pi-2"}})
//	defer c.Stop()
//	c.WaitNodesReady(ctx, 2*time.Minute)
package devcluster
