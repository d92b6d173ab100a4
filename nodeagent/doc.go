// Package nodeagent provides the device side of vk-fleet: a reconcile loop
// between the workloads the provider wants on this device and the pods a
// container Runtime runs.
//
// Desired state arrives from the JetStream KV bucket bridge.WorkloadsBucket
// and is persisted in a local Store before it is acted on, so the device keeps
// running its pods while the link is down, after an agent restart and after
// a reboot while offline. Observed state goes back as bridge.PodStatus in
// bridge.StatusBucket, written on every change; a Heartbeat with the device's
// Inventory is published at a fixed interval.
//
// Usage:
//
//	rt, _ := podman.New(ctx, "unix:///run/podman/podman.sock", "pi-1")
//	a, _ := nodeagent.New(nodeagent.Config{Device: "pi-1", StateDir: "/var/lib/vk-fleet"}, rt, nc)
//	err := a.Run(ctx)
package nodeagent
