package provider

import (
	"context"
	"log/slog"
	"sync"

	"github.com/vk-fleet/vk-fleet/internal/metrics"
)

// rejections counts messages the provider refused, by kind.
type rejections struct {
	mu sync.Mutex
	n  map[string]uint64
}

// rejected logs and counts a message the provider refuses: malformed,
// oversized, or not the reporting device's to send.
func (p *Provider) rejected(kind, where string, err error) {
	p.rejects.mu.Lock()
	if p.rejects.n == nil {
		p.rejects.n = map[string]uint64{}
	}
	p.rejects.n[kind]++
	p.rejects.mu.Unlock()
	metrics.RejectedMessages.WithLabelValues(kind).Inc()
	p.log.LogAttrs(context.Background(), slog.LevelWarn, "rejecting "+kind, slog.String("where", where), slog.Any("err", err))
}

// Rejected returns how many messages the provider refused, by kind
// ("heartbeat", "status").
func (p *Provider) Rejected() map[string]uint64 {
	p.rejects.mu.Lock()
	defer p.rejects.mu.Unlock()
	out := make(map[string]uint64, len(p.rejects.n))
	for k, v := range p.rejects.n {
		out[k] = v
	}
	return out
}
