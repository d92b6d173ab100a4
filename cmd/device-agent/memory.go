package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/vk-fleet/vk-fleet/internal/memtune"
)

// The agent's memory settings. A Pi has little memory to spare, and the
// agent needs little (about 1 MB of live heap with 10 pods, measured); the
// Go runtime's defaults, made for servers, leave most of its resident
// memory to headroom and to what only start-up used.
const (
	// agentGOGC lets the heap grow by half its live size between
	// collections instead of doubling it (measured: 1 MB less resident,
	// for a collection every few seconds of a 1-2 MB heap).
	agentGOGC = 50
	// agentMemoryLimit is a soft limit on the Go runtime's memory, about
	// three times what the agent uses with 10 pods: near it the collector
	// works harder instead of letting a burst grow the heap. It is no
	// hard cap: the agent goes over it rather than fail.
	agentMemoryLimit = 32 << 20
	// startupRelease is how long after start the agent gives back what
	// only start-up needed.
	startupRelease = 30 * time.Second
)

// tuneMemory applies agentGOGC and agentMemoryLimit unless the GOGC or
// GOMEMLIMIT environment variables (read by the Go runtime itself) are
// set.
func tuneMemory() { memtune.Defaults(agentGOGC, agentMemoryLimit) }

// releaseStartupMemory waits startupRelease (or until ctx ends), then
// returns to the operating system the heap that start-up freed and the
// pages of the executable that only start-up touched: the init functions
// of the agent's ~800 packages are spread over the whole binary, so that
// after start-up nearly all of it is mapped, while the running agent uses
// about half. Only clean, read-only pages of the executable are dropped;
// those the agent uses again are mapped back from the page cache on their
// next use.
func releaseStartupMemory(ctx context.Context, log *slog.Logger) {
	t := time.NewTimer(startupRelease)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return
	case <-t.C:
	}
	before := residentBytes()
	debug.FreeOSMemory()
	dropped, err := dropExecutablePages()
	if err != nil {
		log.Debug("releasing the executable's start-up pages", "err", err)
	}
	log.Info("start-up memory released", "rss_before", before, "rss_after", residentBytes(), "executable_dropped", dropped)
}
