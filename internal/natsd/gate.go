package natsd

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/vk-fleet/vk-fleet/internal/metrics"
)

// A fleet reconnecting at once (its uplink restored, vk-fleet restarted)
// brings thousands of TLS handshakes in the same second. Each handshake
// the server starts takes CPU from the connections already through theirs
// and waiting for the auth callout: at 5,000 devices reconnecting at once,
// the callout's answers came too late for 1,427 of them (the server gives
// the callout 15 s), and each of those devices did its handshake again.
// The gate starts a handshake only while the connections in a handshake
// and those waiting for the callout are fewer than its limit, in the order
// they came; one that waited too long is refused before any cryptography,
// and the device tries again a moment later.

// maxHold is the longest a handshake keeps its place at the gate. A
// handshake a device's CPU allows takes well under a second; one that
// takes longer goes on, but no longer counts. 512 clients stalling their
// handshakes would otherwise close the gate to every device for the
// server's whole TLS timeout.
const maxHold = 3 * time.Second

// ErrBusy refuses a handshake that waited longer than the gate allows.
var ErrBusy = errors.New("too many connections being set up; try again")

// HandshakeGate admits TLS handshakes of new client connections while the
// work they lead to keeps up. Create it with NewHandshakeGate.
type HandshakeGate struct {
	limit   int
	maxWait time.Duration
	// hold bounds how long a handshake keeps its place: a client that
	// stalls its handshake (the server's TLS timeout closes it after
	// 15 s) must not keep devices out that long.
	hold time.Duration

	mu          sync.Mutex
	handshaking int
	busy        func() int // connections waiting for the auth callout
	waiters     list.List  // of *gateWaiter, first come first
}

type gateWaiter struct {
	ctx      context.Context
	admitted chan struct{}
}

// NewHandshakeGate returns a gate that lets at most limit connections be
// in their handshake or waiting for the callout, and refuses a handshake
// that waited maxWait for its turn (less than the server's TLS timeout,
// which counts the wait).
func NewHandshakeGate(limit int, maxWait time.Duration) *HandshakeGate {
	return &HandshakeGate{limit: max(limit, 1), maxWait: maxWait, hold: maxHold}
}

// SetBusy sets how the gate counts connections through their handshake
// that wait for the auth callout. Call Kick whenever that count falls.
func (g *HandshakeGate) SetBusy(busy func() int) {
	g.mu.Lock()
	g.busy = busy
	g.mu.Unlock()
}

// Admit returns nil when the handshake whose context is ctx may start, or
// an error when it waited too long or ctx ended first. The place it takes
// is freed when ctx ends (crypto/tls ends it with the handshake), or after
// maxHold.
func (g *HandshakeGate) Admit(ctx context.Context) error {
	g.mu.Lock()
	if g.waiters.Len() == 0 && g.roomLocked() {
		g.admitLocked(ctx)
		g.mu.Unlock()
		return nil
	}
	w := &gateWaiter{ctx: ctx, admitted: make(chan struct{})}
	el := g.waiters.PushBack(w)
	g.mu.Unlock()
	metrics.NATSHandshakesWaited.Inc()

	t := time.NewTimer(g.maxWait)
	defer t.Stop()
	var err error
	select {
	case <-w.admitted:
		return nil
	case <-t.C:
		err = ErrBusy
	case <-ctx.Done():
		err = ctx.Err()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-w.admitted:
		return nil // admitted as the wait ended
	default:
	}
	g.waiters.Remove(el)
	metrics.NATSHandshakesRefused.Inc()
	return err
}

// Handshaking returns the number of handshakes holding a place at the
// gate.
func (g *HandshakeGate) Handshaking() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.handshaking
}

// Kick admits waiting handshakes while there is room: call it when a
// connection's callout request was answered or dropped.
func (g *HandshakeGate) Kick() {
	g.mu.Lock()
	g.kickLocked()
	g.mu.Unlock()
}

func (g *HandshakeGate) roomLocked() bool {
	n := g.handshaking
	if g.busy != nil {
		n += g.busy()
	}
	return n < g.limit
}

func (g *HandshakeGate) admitLocked(ctx context.Context) {
	g.handshaking++
	var once sync.Once
	free := func() { once.Do(g.handshakeDone) }
	t := time.AfterFunc(g.hold, free)
	context.AfterFunc(ctx, func() {
		t.Stop()
		free()
	})
}

func (g *HandshakeGate) handshakeDone() {
	g.mu.Lock()
	g.handshaking--
	g.kickLocked()
	g.mu.Unlock()
}

func (g *HandshakeGate) kickLocked() {
	for g.waiters.Len() > 0 && g.roomLocked() {
		w := g.waiters.Remove(g.waiters.Front()).(*gateWaiter)
		g.admitLocked(w.ctx)
		close(w.admitted)
	}
}
