package callout

import (
	"context"
	"errors"
	"testing"
	"time"
)

type countingTokens struct {
	calls int
	valid map[string]string
}

func (c *countingTokens) CheckEnrollmentToken(_ context.Context, raw string) (string, error) {
	c.calls++
	if id, ok := c.valid[raw]; ok {
		return id, nil
	}
	return "", errors.New("token invalid")
}

// A genuine token is looked up once per tokenCacheTTL, however many devices
// present it; a wrong one every time; a token deleted is refused once the
// TTL has passed.
func TestTokenChecksAreCachedBriefly(t *testing.T) {
	inner := &countingTokens{valid: map[string]string{"abcdef.0123456789abcdef": "abcdef"}}
	c := newCachedTokens(inner)
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	for range 100 {
		if id, err := c.CheckEnrollmentToken(t.Context(), "abcdef.0123456789abcdef"); err != nil || id != "abcdef" {
			t.Fatalf("genuine token: %q, %v", id, err)
		}
	}
	if inner.calls != 1 {
		t.Errorf("100 checks of one token looked it up %d times", inner.calls)
	}
	for range 3 {
		if _, err := c.CheckEnrollmentToken(t.Context(), "zzzzzz.0123456789abcdef"); err == nil {
			t.Fatal("a wrong token accepted")
		}
	}
	if inner.calls != 4 {
		t.Errorf("wrong tokens were cached: %d lookups", inner.calls)
	}
	delete(inner.valid, "abcdef.0123456789abcdef")
	now = now.Add(tokenCacheTTL)
	if _, err := c.CheckEnrollmentToken(t.Context(), "abcdef.0123456789abcdef"); err == nil {
		t.Error("a deleted token still accepted after the cache's TTL")
	}
}
