package nodeagent

import (
	"context"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/internal/metrics"
)

// initStartPatience is how long a container started by advanceInit may
// stay listed as created before it is started again.
const initStartPatience = 30 * time.Second

// Kinds of container in a workload.
const (
	kindApp = iota
	kindInit
	kindSidecar
	kindEphemeral
	// kindUnknown: a container the workload does not name (a sidecar of
	// podman's, or one the workload no longer lists): left alone.
	kindUnknown
)

func containerKinds(w *bridge.Workload) map[string]int {
	k := make(map[string]int, len(w.InitContainers)+len(w.Containers))
	for _, c := range w.InitContainers {
		if c.RestartPolicy == bridge.RestartAlways {
			k[c.Name] = kindSidecar
		} else {
			k[c.Name] = kindInit
		}
	}
	for _, c := range w.Containers {
		k[c.Name] = kindApp
	}
	for _, c := range w.EphemeralContainers {
		k[c.Name] = kindEphemeral
	}
	return k
}

// advanceInit starts what a pod's init sequence allows, as a kubelet does:
// each init container after the one before it succeeded (a sidecar: after
// it started and passed its startup probe), and the app containers once
// every init container is done. It starts one init container per pass;
// the container's end wakes the next pass. It reports whether it started
// anything.
func (a *Agent) advanceInit(ctx context.Context, w *bridge.Workload, p *PodState, note *pending) bool {
	if len(w.InitContainers) == 0 {
		return false
	}
	states := make(map[string]*ContainerState, len(p.Containers))
	for i := range p.Containers {
		states[p.Containers[i].Name] = &p.Containers[i]
	}
	if a.initStarts == nil {
		a.initStarts = map[string]time.Time{}
	}
	start := func(name string) bool {
		key := w.UID + "/" + name
		if at, ok := a.initStarts[key]; ok && time.Since(at) < initStartPatience {
			// Started moments ago and still listed as created: podman is
			// still starting it (a loaded device); starting it again would
			// run it twice.
			return false
		}
		a.initStarts[key] = time.Now()
		a.log.Info("starting container", "pod", w.Namespace+"/"+w.Name, "container", name)
		if err := a.rt.StartContainer(ctx, w.UID, name); err != nil {
			metrics.AgentRuntimeErrors.WithLabelValues("start").Inc()
			a.log.Warn("starting container", "pod", w.Namespace+"/"+w.Name, "container", name, "err", err)
			note.waiting[name] = true
			return false
		}
		return true
	}
	for _, c := range p.Containers {
		if c.State != ContainerCreated {
			delete(a.initStarts, w.UID+"/"+c.Name) // started: a later start is a restart
		}
	}
	for i := range w.InitContainers {
		c := &w.InitContainers[i]
		cs := states[c.Name]
		if cs == nil {
			return false
		}
		sidecar := c.RestartPolicy == bridge.RestartAlways
		switch cs.State {
		case ContainerCreated:
			return start(c.Name)
		case ContainerRunning:
			if !sidecar || !a.probes.started(w.UID, c, cs.ID) {
				return false // wait for it to finish, or to start
			}
		case ContainerExited:
			if !sidecar && cs.ExitCode != 0 {
				return false // restartExited restarts it, or the pod fails
			}
		default:
			return false
		}
	}
	acted := false
	for _, c := range w.Containers {
		if cs := states[c.Name]; cs != nil && cs.State == ContainerCreated && cs.StartedAt.IsZero() {
			if start(c.Name) {
				acted = true
			}
		}
	}
	return acted
}
