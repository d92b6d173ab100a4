package memtune

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"
)

// gcPercent reads the collector's target (without setting it, which
// would race with Run).
func gcPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// waitGC polls until the collector's target is want.
func waitGC(t *testing.T, want int, why string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for gcPercent() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: gc percent %d, want %d", why, gcPercent(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBurstRaisesTheTargetWhileBusyAndRestoresIt(t *testing.T) {
	old := debug.SetGCPercent(50)
	t.Cleanup(func() { debug.SetGCPercent(old) })

	var busy atomic.Bool
	var asked atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Burst{Rest: 50, Percent: 100, Every: 10 * time.Millisecond, Quiet: 100 * time.Millisecond,
			Busy: func() bool { asked.Add(1); return busy.Load() }}.Run(ctx)
	}()

	// Not busy: the resting target stays.
	for asked.Load() < 5 {
		time.Sleep(time.Millisecond)
	}
	if got := gcPercent(); got != 50 {
		t.Fatalf("not busy: gc percent %d, want 50", got)
	}
	busy.Store(true)
	waitGC(t, 100, "busy")
	// Still busy after the quiet time: still raised.
	time.Sleep(200 * time.Millisecond)
	if got := gcPercent(); got != 100 {
		t.Fatalf("busy for longer than the quiet time: gc percent %d, want 100", got)
	}
	busy.Store(false)
	waitGC(t, 50, "quiet")
	// A second burst.
	busy.Store(true)
	waitGC(t, 100, "busy again")
	// Ending mid-burst leaves the resting target.
	cancel()
	<-done
	if got := gcPercent(); got != 50 {
		t.Fatalf("after Run: gc percent %d, want 50", got)
	}
}

func TestBurstYieldsToTheEnvironment(t *testing.T) {
	old := debug.SetGCPercent(50)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	t.Setenv("GOGC", "50")

	var asked atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	Burst{Rest: 50, Percent: 100, Every: time.Millisecond, Quiet: time.Second,
		Busy: func() bool { asked.Add(1); return true }}.Run(ctx)
	if got := gcPercent(); got != 50 {
		t.Errorf("GOGC set: gc percent %d, want the environment's 50", got)
	}
	if asked.Load() != 0 {
		t.Errorf("GOGC set: Busy asked %d times, want never", asked.Load())
	}
}
