package memtune

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestDefaultsYieldToTheEnvironment(t *testing.T) {
	gc := debug.SetGCPercent(100)
	lim := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(gc)
		debug.SetMemoryLimit(lim)
	})

	Defaults(50, 32<<20)
	if got := debug.SetGCPercent(-1); got != 50 {
		t.Errorf("GOGC unset: gc percent %d, want 50", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 32<<20 {
		t.Errorf("GOMEMLIMIT unset: limit %d, want %d", got, 32<<20)
	}

	debug.SetGCPercent(100)
	debug.SetMemoryLimit(math.MaxInt64)
	t.Setenv("GOGC", "100")
	t.Setenv("GOMEMLIMIT", "off")
	Defaults(50, 32<<20)
	if got := debug.SetGCPercent(-1); got != 100 {
		t.Errorf("GOGC set: gc percent %d, want the environment's 100", got)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("GOMEMLIMIT set: limit %d, want the environment's (none)", got)
	}
}

func TestNoLimitLeavesTheRuntimeDefault(t *testing.T) {
	lim := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetMemoryLimit(lim) })
	Defaults(debug.SetGCPercent(-1), 0)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("limit %d, want none", got)
	}
}
