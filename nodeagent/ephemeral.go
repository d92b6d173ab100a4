package nodeagent

import (
	"context"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// EphemeralStarter is a Runtime that can add an ephemeral container
// (kubectl debug) to a running pod without touching its other containers.
type EphemeralStarter interface {
	StartEphemeral(ctx context.Context, w *bridge.Workload, c *bridge.Container) error
}

// ephemeralRetry is how long a failed start of an ephemeral container
// waits before the next try.
const ephemeralRetry = 10 * time.Second

// ephemeralStart is the last attempt to start one ephemeral container.
type ephemeralStart struct {
	at      time.Time
	err     error
	running bool // an attempt is under way
}

// startEphemerals starts, in the background, the ephemeral containers of w
// that its running pod p lacks. An ephemeral container is started once:
// when it has exited it stays so, as with a kubelet.
func (a *Agent) startEphemerals(ctx context.Context, w *bridge.Workload, p *PodState) {
	st, ok := a.rt.(EphemeralStarter)
	if !ok || p == nil || len(w.EphemeralContainers) == 0 {
		return
	}
	have := map[string]bool{}
	for _, c := range p.Containers {
		have[c.Name] = true
	}
	for i := range w.EphemeralContainers {
		c := w.EphemeralContainers[i]
		if have[c.Name] {
			continue
		}
		key := w.UID + "/" + c.Name
		a.mu.Lock()
		last := a.ephemeral[key]
		if last.running || last.err != nil && time.Since(last.at) < ephemeralRetry {
			a.mu.Unlock()
			continue
		}
		a.ephemeral[key] = ephemeralStart{at: time.Now(), running: true}
		a.mu.Unlock()
		wc := *FillFieldRefs(w, hostFieldValues(a.hostIP(), w.HostNetwork))
		c = wc.EphemeralContainers[i]
		go func() {
			err := st.StartEphemeral(ctx, &wc, &c)
			if err != nil {
				a.log.Warn("starting an ephemeral container", "pod", w.Namespace+"/"+w.Name, "container", c.Name, "err", err)
			} else {
				a.log.Info("started an ephemeral container", "pod", w.Namespace+"/"+w.Name, "container", c.Name)
			}
			a.mu.Lock()
			a.ephemeral[key] = ephemeralStart{at: time.Now(), err: err}
			a.mu.Unlock()
			a.markDirty(w.UID)
			a.kick()
		}()
	}
}

// ephemeralError is the error of the last failed start of ephemeral
// container name of pod uid, nil if none.
func (a *Agent) ephemeralError(uid, name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ephemeral[uid+"/"+name].err
}
