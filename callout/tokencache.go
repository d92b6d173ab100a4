package callout

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"
)

// tokenCacheTTL is how long the callout trusts a token it checked: a fleet
// enrolling at once presents one token a thousand times in seconds. Only a
// genuine token is remembered, by a hash of it; what an enrollment may do
// with it (uses, expiry, revocation) is decided afresh when it enrolls.
const tokenCacheTTL = 2 * time.Second

// cachedTokens remembers, briefly, the tokens Tokens found genuine.
type cachedTokens struct {
	Tokens
	now func() time.Time

	mu   sync.Mutex
	good map[[32]byte]goodToken
}

type goodToken struct {
	id    string
	until time.Time
}

func newCachedTokens(t Tokens) *cachedTokens {
	return &cachedTokens{Tokens: t, now: time.Now, good: map[[32]byte]goodToken{}}
}

func (c *cachedTokens) CheckEnrollmentToken(ctx context.Context, raw string) (string, error) {
	key := sha256.Sum256([]byte(raw))
	now := c.now()
	c.mu.Lock()
	g, ok := c.good[key]
	c.mu.Unlock()
	if ok && now.Before(g.until) {
		return g.id, nil
	}
	id, err := c.Tokens.CheckEnrollmentToken(ctx, raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, g := range c.good {
		if !now.Before(g.until) {
			delete(c.good, k)
		}
	}
	if err == nil {
		c.good[key] = goodToken{id: id, until: now.Add(tokenCacheTTL)}
	} else {
		delete(c.good, key)
	}
	return id, err
}
