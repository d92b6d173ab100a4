// Package memtune sets a process's Go garbage-collector defaults, leaving
// whatever the operator chose in GOGC or GOMEMLIMIT alone.
package memtune

import (
	"os"
	"runtime/debug"
)

// Defaults sets the collector's target percentage to gcPercent unless the
// GOGC environment variable is set, and the soft memory limit to limit
// bytes unless GOMEMLIMIT is set (a limit of 0 or less leaves the
// runtime's default: none). The Go runtime reads both variables itself.
func Defaults(gcPercent int, limit int64) {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(gcPercent)
	}
	if _, ok := os.LookupEnv("GOMEMLIMIT"); !ok && limit > 0 {
		debug.SetMemoryLimit(limit)
	}
}
