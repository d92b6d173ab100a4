package natsd

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// waiting returns how many handshakes wait at g.
func (g *HandshakeGate) waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiters.Len()
}

// admitAsync starts Admit(ctx) and returns where its result arrives, once
// the handshake waits (want waiters in all).
func admitAsync(t *testing.T, g *HandshakeGate, ctx context.Context, want int) <-chan error {
	t.Helper()
	res := make(chan error, 1)
	go func() { res <- g.Admit(ctx) }()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for g.waiting() < want {
		select {
		case <-deadline.C:
			t.Fatalf("%d handshakes wait, want %d", g.waiting(), want)
		case <-tick.C:
		}
	}
	return res
}

func admitted(t *testing.T, res <-chan error, what string) {
	t.Helper()
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s was not admitted", what)
	}
}

// Handshakes are admitted in the order they came, each as a place frees.
func TestGateAdmitsInOrder(t *testing.T) {
	g := NewHandshakeGate(1, time.Minute)
	first, endFirst := context.WithCancel(context.Background())
	if err := g.Admit(first); err != nil {
		t.Fatal(err)
	}
	a, endA := context.WithCancel(context.Background())
	defer endA()
	b, endB := context.WithCancel(context.Background())
	defer endB()
	resA := admitAsync(t, g, a, 1)
	resB := admitAsync(t, g, b, 2)

	endFirst() // its handshake is over
	admitted(t, resA, "the first waiting handshake")
	if n := g.waiting(); n != 1 {
		t.Fatalf("%d handshakes wait after one was admitted, want 1", n)
	}
	endA()
	admitted(t, resB, "the second waiting handshake")
}

// Connections waiting for the callout count against the limit, and the
// callout's answers let the next handshakes in.
func TestGateCountsTheCalloutsBacklog(t *testing.T) {
	g := NewHandshakeGate(2, time.Minute)
	var pending atomic.Int64
	pending.Store(2)
	g.SetBusy(func() int { return int(pending.Load()) })
	ctx, end := context.WithCancel(context.Background())
	defer end()
	res := admitAsync(t, g, ctx, 1)
	pending.Store(1)
	g.Kick()
	admitted(t, res, "a handshake once the callout answered")
}

// A handshake that waits longer than the gate allows is refused, and its
// place in the queue is given up.
func TestGateRefusesALongWait(t *testing.T) {
	g := NewHandshakeGate(1, 10*time.Millisecond)
	if err := g.Admit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := g.Admit(context.Background()); !errors.Is(err, ErrBusy) {
		t.Fatalf("a handshake that waited too long: %v, want ErrBusy", err)
	}
	if n := g.waiting(); n != 0 {
		t.Fatalf("%d refused handshakes still wait", n)
	}
}

// A client that stalls its handshake keeps its place only so long: the
// next handshake is admitted while the stalled one goes on.
func TestGateFreesAStalledHandshakesPlace(t *testing.T) {
	g := NewHandshakeGate(1, time.Minute)
	g.hold = 50 * time.Millisecond
	if err := g.Admit(context.Background()); err != nil { // never ends
		t.Fatal(err)
	}
	ctx, end := context.WithCancel(context.Background())
	defer end()
	res := make(chan error, 1)
	go func() { res <- g.Admit(ctx) }()
	admitted(t, res, "a handshake behind a stalled one")
}
