// Package ratelimit paces vk-fleet's requests to the Kubernetes API server
// as a fleet of kubelets paces theirs: one vk-fleet process speaks for
// thousands of Nodes, and each of their leases is renewed every 10 s.
package ratelimit

import (
	"context"
	"sync"

	"golang.org/x/time/rate"
)

// Per device served, on top of the base rate: three times what an idle
// device costs (a lease renewal every 10 s and a Node status every 5
// minutes, 0.1 requests a second), room for its pods' status writes. With
// a fixed 500 requests a second, 5,000 devices' lease renewals alone took
// every request the limit allowed, and a DaemonSet's pod status writes
// waited 3 minutes behind them; at 10,000, the leases could not all be
// renewed in time.
const (
	perDeviceQPS   = 0.3
	perDeviceBurst = 0.6
)

// Limiter is a token bucket whose rate grows with the devices served. It
// implements client-go's flowcontrol.RateLimiter; set it as the REST
// config's RateLimiter, so that every client made from that config shares
// it. Create it with New.
type Limiter struct {
	qps   float64
	burst int

	mu      sync.Mutex
	devices int
	l       *rate.Limiter
}

// New returns a limiter of qps requests a second, bursts of burst, for no
// device yet.
func New(qps float32, burst int) *Limiter {
	return &Limiter{qps: float64(qps), burst: burst, l: rate.NewLimiter(rate.Limit(qps), burst)}
}

// SetDevices sets how many devices this process serves.
func (l *Limiter) SetDevices(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n == l.devices {
		return
	}
	l.devices = n
	l.l.SetLimit(rate.Limit(l.qps + perDeviceQPS*float64(n)))
	l.l.SetBurst(l.burst + int(perDeviceBurst*float64(n)))
}

// TryAccept takes a token if one is available.
func (l *Limiter) TryAccept() bool { return l.l.Allow() }

// Accept waits for a token.
func (l *Limiter) Accept() { _ = l.l.Wait(context.Background()) }

// Wait waits for a token until ctx ends.
func (l *Limiter) Wait(ctx context.Context) error { return l.l.Wait(ctx) }

// QPS returns the current rate.
func (l *Limiter) QPS() float32 { return float32(l.l.Limit()) }

// Stop does nothing: the limiter holds no goroutine.
func (l *Limiter) Stop() {}
