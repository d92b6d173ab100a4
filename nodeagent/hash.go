package nodeagent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// specHash identifies what forces the pod of a workload to be recreated:
// see bridge.RestartHash. A change of anything else in a workload is taken
// up without restarting a container.
func specHash(w *bridge.Workload) string { return bridge.RestartHash(w) }

// sameSpec reports whether the pod p, labelled with its spec hash when it
// was created, runs what w asks for, so that it must not be recreated.
//
// Pods created by agents before RestartHash carry the old hash of the whole
// workload (no "r1-" prefix). Such a pod is adopted when that old hash still
// matches, or when its containers have w's names and images: an agent
// upgrade restarts nothing.
func sameSpec(p *PodState, w *bridge.Workload) bool {
	if p.SpecHash == specHash(w) {
		return true
	}
	if strings.HasPrefix(p.SpecHash, "r") && strings.Contains(p.SpecHash, "-") {
		return false // a current-scheme hash that differs: the spec changed
	}
	if p.SpecHash == legacySpecHash(w) {
		return true
	}
	ephemeral := map[string]bool{}
	for _, c := range w.EphemeralContainers {
		ephemeral[c.Name] = true
	}
	images := make(map[string]string, len(p.Containers))
	for _, c := range p.Containers {
		if !ephemeral[c.Name] {
			images[c.Name] = c.Image
		}
	}
	if len(images) != len(w.Containers) {
		return false
	}
	for _, c := range w.Containers {
		got, ok := images[c.Name]
		if !ok || normalImage(got) != normalImage(c.Image) {
			return false
		}
	}
	return true
}

// legacySpecHash is the spec hash of agents before protocol version 3.
func legacySpecHash(w *bridge.Workload) string {
	c := *w
	c.Generation = 0
	c.TerminationGracePeriodSeconds = nil
	data, _ := json.Marshal(c)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// normalImage spells an image reference as podman reports it:
// "busybox" → "docker.io/library/busybox:latest".
func normalImage(ref string) string {
	name, digest, hasDigest := strings.Cut(ref, "@")
	first, _, hasSlash := strings.Cut(name, "/")
	if !hasSlash || !strings.ContainsAny(first, ".:") && first != "localhost" {
		if !hasSlash {
			name = "library/" + name
		}
		name = "docker.io/" + name
	}
	if i := strings.LastIndex(name, ":"); i < 0 || strings.Contains(name[i:], "/") {
		if !hasDigest {
			name += ":latest"
		}
	}
	if hasDigest {
		return name + "@" + digest
	}
	return name
}
