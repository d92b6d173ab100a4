package callout

import (
	"context"
	"strings"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// ConnInspector reports on a live client connection; the embedded server
// implements it. Without one, duplicates are not detected.
type ConnInspector interface {
	// Conn returns the connection's name and when it last sent or
	// received anything; false when it is gone.
	Conn(serverID string, cid uint64) (name string, lastActivity time.Time, ok bool)
}

// duplicateWindow is how recently a device's other connection must have
// been active to count as alive: two and a half default heartbeats (10s).
const duplicateWindow = 25 * time.Second

// instanceOf returns the instance a connection name carries, or "".
func instanceOf(name string) string {
	_, inst, ok := strings.Cut(name, bridge.InstanceTag)
	if !ok {
		return ""
	}
	return strings.TrimSpace(inst)
}

// duplicate reports whether another agent instance of device is connected
// and alive, in which case the new connection (of instance inst) is
// refused: one identity never runs on two machines at once. A connection of
// the same instance (a reconnect after a blip, while the server still holds
// the old one) or one that has gone quiet is replaced: it is disconnected.
func (s *Service) duplicate(ctx context.Context, device, inst string) (string, bool) {
	if s.cfg.Conns == nil || inst == "" {
		return "", false
	}
	s.mu.Lock()
	refs := make([]clientRef, 0, len(s.conns[device]))
	for ref := range s.conns[device] {
		refs = append(refs, ref)
	}
	s.mu.Unlock()
	for _, ref := range refs {
		name, last, ok := s.cfg.Conns.Conn(ref.Server, ref.CID)
		if !ok {
			s.untrack(device, ref)
			continue
		}
		other := instanceOf(name)
		if other != "" && other != inst && time.Since(last) < duplicateWindow {
			return other, true
		}
		if s.cfg.Kicker != nil {
			_ = s.cfg.Kicker.Kick(ctx, ref.Server, ref.CID)
			s.untrack(device, ref)
		}
	}
	return "", false
}

func (s *Service) untrack(device string, ref clientRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns[device], ref)
	if len(s.conns[device]) == 0 {
		delete(s.conns, device)
	}
}
