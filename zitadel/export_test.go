package zitadel

import "time"

// SetClock replaces the Introspector's clock (cache expiry tests).
func SetClock(i *Introspector, now func() time.Time) { i.now = now }

// CacheLen reports how many results the Introspector holds.
func CacheLen(i *Introspector) int { return i.cache.len() }
