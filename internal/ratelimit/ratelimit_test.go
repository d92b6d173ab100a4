package ratelimit

import (
	"context"
	"testing"
	"time"

	"k8s.io/client-go/util/flowcontrol"
)

var _ flowcontrol.RateLimiter = (*Limiter)(nil)

// The rate grows with the devices served, and shrinks back.
func TestLimitGrowsWithTheFleet(t *testing.T) {
	l := New(5, 10)
	n := 0
	for l.TryAccept() {
		n++
	}
	if n != 10 {
		t.Fatalf("burst for no device: %d, want 10", n)
	}
	// At 5 a second, 100 more requests need 20 s: Wait refuses at once
	// what its context's deadline would not allow.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := l.Wait(ctx); err == nil {
		for range 99 {
			if err = l.Wait(ctx); err != nil {
				break
			}
		}
		if err == nil {
			t.Fatal("100 requests in 1 s passed a limit of 5 a second")
		}
	}

	l.SetDevices(5000)
	if got, want := l.QPS(), float32(5+0.3*5000); got != want {
		t.Fatalf("QPS for 5,000 devices: %v, want %v", got, want)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 100 {
		if err := l.Wait(ctx); err != nil {
			t.Fatalf("request %d of 100 within 5 s for 5,000 devices: %v", i, err)
		}
	}
	l.SetDevices(0)
	if got := l.QPS(); got != 5 {
		t.Fatalf("QPS with no device again: %v, want 5", got)
	}
}
