// Package podman runs the pods of one device in podman, through podman's
// REST API (the libpod service), and implements nodeagent.Runtime.
//
// Each workload becomes one podman pod whose containers share the pod's
// network namespace. The pod and every container carry the labels of
// nodeagent (device, pod UID, namespace, name, container, spec hash); a
// Runtime only ever lists, watches and removes objects labelled with its own
// device, so several agents may share one podman service.
//
// Usage:
//
//	rt, err := podman.New(ctx, "unix:///run/podman/podman.sock", "pi-kitchen",
//		podman.WithStateDir("/var/lib/vk-fleet/pi-kitchen"),
//		podman.WithLogger(logger))
//	if err != nil { ... }
//	err = rt.CreatePod(ctx, workload, specHash)
//	pods, err := rt.ListPods(ctx)
//
// Build with the tags `remote containers_image_openpgp exclude_graphdriver_btrfs`
// (CGO_ENABLED=0 works).
package podman
