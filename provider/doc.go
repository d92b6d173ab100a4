// Package provider is the virtual-kubelet side of vk-fleet: one process
// serves many devices, each as its own Kubernetes Node.
//
// A device becomes Node "<device>" when its first heartbeat arrives. Each
// device gets one virtual-kubelet NodeController and lease, renewed only
// while the device's heartbeats are fresh. One PodController over one shared
// pod informer serves the pods of every device: the Provider dispatches them
// by spec.nodeName, turns each into a bridge.Workload in the workloads KV
// bucket, and turns the devices' bridge.PodStatus reports back into Pod
// status through the PodNotifier callback.
//
// Usage:
//
//	p, _ := provider.New(provider.Config{Client: cs, NATS: nc, NodeAddress: "10.0.0.5"})
//	err := p.Run(ctx)
package provider
