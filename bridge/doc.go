// Package bridge defines the wire contract between the vk-fleet provider and
// device agents: message types, NATS subject and JetStream key-value names,
// device-name validation and the protocol version.
//
// It is data only. It must not import Kubernetes, podman or nats-server
// packages, so that the device agent stays small.
//
// The carriers, in short (docs/protocol.md has the full description):
//
//	desired state  KV bucket "vkf-workloads", key "<device>.<podUID>" → Workload    (provider writes, device reads its own prefix)
//	observed state KV bucket "vkf-status",    key "<device>.<podUID>" → PodStatus   (device writes its own prefix, provider reads all)
//	liveness       subject   "vkf.dev.<device>.hb"                    → Heartbeat   (device publishes, provider subscribes)
package bridge
