package nodeagent

import (
	"errors"
	"fmt"
	"sync"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// validWorkload reports whether w, read at the key of pod uid, is one the
// agent can act on. A malformed workload is never stored: the agent keeps
// running what it had.
func validWorkload(w *bridge.Workload, uid string) error {
	if w.UID != uid {
		return fmt.Errorf("uid %q at the key of pod %q", w.UID, uid)
	}
	if w.Namespace == "" || w.Name == "" {
		return errors.New("no namespace or name")
	}
	if len(w.Containers) == 0 {
		return errors.New("no containers")
	}
	seen := map[string]bool{}
	for _, c := range w.Containers {
		if c.Name == "" || c.Image == "" {
			return errors.New("a container without a name or image")
		}
		if seen[c.Name] {
			return fmt.Errorf("container %q twice", c.Name)
		}
		seen[c.Name] = true
	}
	return nil
}

// rejections counts messages the agent refused, by kind.
type rejections struct {
	mu sync.Mutex
	n  map[string]uint64
}

func (r *rejections) add(kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]uint64{}
	}
	r.n[kind]++
}

func (r *rejections) snapshot() map[string]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]uint64, len(r.n))
	for k, v := range r.n {
		out[k] = v
	}
	return out
}

// rejected logs and counts a message the agent refuses.
func (a *Agent) rejected(kind, key string, err error) {
	a.rejects.add(kind)
	a.log.Warn("rejecting malformed "+kind, "key", key, "err", err)
}

// Rejected returns how many messages the agent refused, by kind
// ("workload", "index").
func (a *Agent) Rejected() map[string]uint64 { return a.rejects.snapshot() }
