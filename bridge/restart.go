package bridge

import (
	"crypto/sha256"
	"encoding/hex"
)

// RestartHash identifies what forces a workload's containers to be
// recreated, and nothing else. Devices label what they run with it and
// recreate a pod only when it changes.
//
// For one pod UID, Kubernetes lets only the images of a pod's containers
// change (the rest of a pod spec is immutable), so the hash covers each
// container's name and image, in order. Everything else a Workload carries
// is applied when a container is next created, never by restarting one:
// env resolved from ConfigMaps, Secrets and Services (as a kubelet does),
// ConfigMap and Secret volume contents (updated in place), and whatever a
// newer provider translates differently from the same pod. That is what
// keeps a provider restart or upgrade, or a re-published bucket, from
// restarting a single container.
//
// The value starts with "r1-"; a future scheme gets a new prefix, so a
// device can tell an older label from a changed spec.
func RestartHash(w *Workload) string {
	h := sha256.New()
	for _, c := range w.Containers {
		h.Write([]byte(c.Name))
		h.Write([]byte{0})
		h.Write([]byte(c.Image))
		h.Write([]byte{0})
	}
	// Init containers count only when there are some, so that the hash of
	// every pod without them is what it was before v6.
	for _, c := range w.InitContainers {
		h.Write([]byte("init\x00" + c.Name + "\x00" + c.Image + "\x00"))
	}
	return "r1-" + hex.EncodeToString(h.Sum(nil)[:8])
}
