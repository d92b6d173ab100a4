package zitadel

import (
	"crypto/sha256"
	"sync"
	"time"
)

// tokenHash is the cache key: a token's SHA-256, never the token itself.
type tokenHash [sha256.Size]byte

func hashToken(token string) tokenHash { return sha256.Sum256([]byte(token)) }

// result is one cached introspection outcome.
type result struct {
	subject string // "" for a negative result
	err     error  // ErrTokenInactive or ErrAudience for negative results
	until   time.Time
}

// resultCache holds introspection results for a short time. Its size is
// bounded: expired entries are swept when it fills, and if that does not
// make room it starts over (it is only a cache).
type resultCache struct {
	mu      sync.Mutex
	entries map[tokenHash]result
	max     int
}

func newResultCache(max int) *resultCache {
	return &resultCache{entries: map[tokenHash]result{}, max: max}
}

func (c *resultCache) get(k tokenHash, now time.Time) (result, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.entries[k]
	if !ok {
		return result{}, false
	}
	if !now.Before(r.until) {
		delete(c.entries, k)
		return result{}, false
	}
	return r, true
}

func (c *resultCache) put(k tokenHash, r result, now time.Time) {
	if !now.Before(r.until) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for h, e := range c.entries {
			if !now.Before(e.until) {
				delete(c.entries, h)
			}
		}
		if len(c.entries) >= c.max {
			clear(c.entries)
		}
	}
	c.entries[k] = r
}

func (c *resultCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
