package nodeagent

import (
	"slices"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// FillFieldRefs returns w, or a copy of it whose env variables with a
// FieldRef found in values (bridge.FieldPodIP, …) hold that value. w itself
// is never changed. Variables whose field is not in values are left for a
// later call: the agent fills the host's IPs, the runtime the pod's once
// its sandbox has one.
func FillFieldRefs(w *bridge.Workload, values map[string]string) *bridge.Workload {
	if !hasFieldRef(w, values) {
		return w
	}
	wc := *w
	wc.InitContainers, wc.Containers = fillEnv(w.InitContainers, values), fillEnv(w.Containers, values)
	wc.EphemeralContainers = fillEnv(w.EphemeralContainers, values)
	return &wc
}

func hasFieldRef(w *bridge.Workload, values map[string]string) bool {
	for _, cs := range [][]bridge.Container{w.InitContainers, w.Containers, w.EphemeralContainers} {
		for _, c := range cs {
			for _, e := range c.Env {
				if _, ok := values[e.FieldRef]; ok && e.FieldRef != "" {
					return true
				}
			}
		}
	}
	return false
}

// fillEnv returns a copy of cs with the variables of values filled in.
func fillEnv(cs []bridge.Container, values map[string]string) []bridge.Container {
	if cs == nil {
		return nil
	}
	out := slices.Clone(cs)
	for i := range out {
		out[i].Env = slices.Clone(out[i].Env)
		for j, e := range out[i].Env {
			if v, ok := values[e.FieldRef]; ok && e.FieldRef != "" {
				out[i].Env[j] = bridge.EnvVar{Name: e.Name, Value: v}
			}
		}
	}
	return out
}

// UnfilledFieldRef names a variable of w whose FieldRef is still unfilled,
// as "env NAME (status.podIP)", or "".
func UnfilledFieldRef(w *bridge.Workload) string {
	for _, cs := range [][]bridge.Container{w.InitContainers, w.Containers, w.EphemeralContainers} {
		for _, c := range cs {
			for _, e := range c.Env {
				if e.FieldRef != "" {
					return "container " + c.Name + ": env " + e.Name + " (" + e.FieldRef + ")"
				}
			}
		}
	}
	return ""
}

// hostFieldValues returns the values of the IP fields a pod's env may ask
// for that are known before its sandbox exists: the host's IP, and for a
// pod on the host's network its own (the host's too), as kubelet gives
// them. hostIPs is the host's IP alone, as the pod's status.hostIPs.
func hostFieldValues(hostIP string, hostNetwork bool) map[string]string {
	if hostIP == "" {
		return nil
	}
	v := map[string]string{bridge.FieldHostIP: hostIP, bridge.FieldHostIPs: hostIP}
	if hostNetwork {
		v[bridge.FieldPodIP], v[bridge.FieldPodIPs] = hostIP, hostIP
	}
	return v
}
