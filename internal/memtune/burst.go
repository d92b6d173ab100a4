package memtune

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"time"
)

// Burst is a garbage-collector target for bursts of work: while Busy says
// so, the heap may grow by Percent of its live size between collections
// instead of the resting target's. A process that keeps a small resting
// target to hold its memory down pays for it in collections whenever it
// allocates fast, as a server does when a whole fleet connects at once;
// a burst's garbage is short-lived, so a higher target then costs memory
// only for the burst, and that memory is given back when it ends.
type Burst struct {
	Rest    int           // the resting target (what Defaults set)
	Percent int           // the target while busy
	Every   time.Duration // how often Busy is asked
	Quiet   time.Duration // not busy this long: back to Rest
	// Busy reports whether the process is in a burst. It is called from
	// one goroutine, every Every.
	Busy func() bool
	Log  *slog.Logger
}

// Run applies the burst target until ctx ends, and leaves the resting
// one. It does nothing when the GOGC environment variable is set: the
// operator's choice stands.
func (b Burst) Run(ctx context.Context) {
	if _, ok := os.LookupEnv("GOGC"); ok || b.Busy == nil || b.Percent <= b.Rest {
		return
	}
	t := time.NewTicker(b.Every)
	defer t.Stop()
	var bursting bool
	var lastBusy time.Time
	end := func() {
		debug.SetGCPercent(b.Rest)
		// Give back now what the burst's headroom took, rather than at
		// the background scavenger's pace.
		debug.FreeOSMemory()
		bursting = false
	}
	for {
		select {
		case <-ctx.Done():
			if bursting {
				debug.SetGCPercent(b.Rest)
			}
			return
		case now := <-t.C:
			switch busy := b.Busy(); {
			case busy && !bursting:
				debug.SetGCPercent(b.Percent)
				bursting, lastBusy = true, now
				if b.Log != nil {
					b.Log.Info("burst of work: collector target raised", "gogc", b.Percent)
				}
			case busy:
				lastBusy = now
			case bursting && now.Sub(lastBusy) >= b.Quiet:
				end()
				if b.Log != nil {
					b.Log.Info("burst over: collector target back", "gogc", b.Rest)
				}
			}
		}
	}
}
