package zitadel_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/callout"
	"github.com/vk-fleet/vk-fleet/zitadel"
	"github.com/vk-fleet/vk-fleet/zitadel/devicetoken"
	"github.com/vk-fleet/vk-fleet/zitadel/keyfile"
	"github.com/vk-fleet/vk-fleet/zitadel/zitadeltest"
)

var _ callout.Introspector = (*zitadel.Introspector)(nil)

// syncBuffer collects log output from concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func debugLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// deviceToken gets a token for the machine user the way a device does.
func deviceToken(t *testing.T, z *zitadeltest.Server, keyJSON []byte, opts ...devicetoken.Option) string {
	t.Helper()
	opts = append([]devicetoken.Option{devicetoken.WithInsecure(), devicetoken.WithProjectID(z.ProjectID)}, opts...)
	ts, err := devicetoken.NewTokenSource(testContext(t), z.Issuer, keyJSON, opts...)
	if err != nil {
		t.Fatalf("NewTokenSource: %v", err)
	}
	tok, err := ts.Token(testContext(t))
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	return tok
}

func newIntrospector(t *testing.T, z *zitadeltest.Server, mod func(*zitadel.IntrospectorConfig)) *zitadel.Introspector {
	t.Helper()
	cfg := zitadel.IntrospectorConfig{Issuer: z.Issuer, Insecure: true, KeyJSON: z.APIKeyJSON, Audience: z.ProjectID}
	if mod != nil {
		mod(&cfg)
	}
	in, err := zitadel.NewIntrospector(testContext(t), cfg)
	if err != nil {
		t.Fatalf("NewIntrospector: %v", err)
	}
	return in
}

// assertNoSecret fails if any secret occurs in text.
func assertNoSecret(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s contains a secret: %q", what, text)
		}
	}
}

func TestIntrospectDeviceTokenUntilUserDeactivated(t *testing.T) {
	z := zitadeltest.New(t)
	userID, keyJSON := z.AddMachineUser(t, "dev1")
	key, err := keyfile.Parse(keyJSON)
	if err != nil {
		t.Fatal(err)
	}
	tok := deviceToken(t, z, keyJSON)

	var logs syncBuffer
	in := newIntrospector(t, z, func(c *zitadel.IntrospectorConfig) { c.Logger = debugLogger(&logs) })
	sub, err := in.Introspect(testContext(t), tok)
	if err != nil {
		t.Fatalf("Introspect: %v", err)
	}
	if sub != userID {
		t.Fatalf("subject = %q, want machine user %q", sub, userID)
	}

	z.Deactivate(t, userID)

	// Within its TTL the cached answer stands (the callout's bounded
	// revocation delay)...
	if sub, err := in.Introspect(testContext(t), tok); err != nil || sub != userID {
		t.Fatalf("cached Introspect = %q, %v; want %q", sub, err, userID)
	}
	// ...but a new introspection of the same token is refused.
	fresh := newIntrospector(t, z, func(c *zitadel.IntrospectorConfig) {
		c.Logger = debugLogger(&logs)
		c.CacheTTL = -1
	})
	_, err = fresh.Introspect(testContext(t), tok)
	if !errors.Is(err, zitadel.ErrTokenInactive) {
		t.Fatalf("Introspect after deactivation: err = %v, want ErrTokenInactive", err)
	}
	assertNoSecret(t, "error", err.Error(), tok, key.Key, z.APIClientSecret)

	// A deactivated user gets no new token either.
	ts, err := devicetoken.NewTokenSource(testContext(t), z.Issuer, keyJSON, devicetoken.WithInsecure(), devicetoken.WithProjectID(z.ProjectID))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Token(testContext(t)); err == nil {
		t.Fatal("deactivated user obtained a new token")
	} else {
		assertNoSecret(t, "token error", err.Error(), key.Key)
	}

	if !strings.Contains(logs.String(), "token_sha256=") {
		t.Errorf("expected debug lines naming tokens by fingerprint, got:\n%s", logs.String())
	}
	assertNoSecret(t, "log", logs.String(), tok, key.Key, z.APIClientSecret)
}

func TestIntrospectRefusesGarbage(t *testing.T) {
	z := zitadeltest.New(t)
	var logs syncBuffer
	in := newIntrospector(t, z, func(c *zitadel.IntrospectorConfig) { c.Logger = debugLogger(&logs) })
	for _, tok := range []string{
		"garbage-token-0123456789",
		"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", // JWT-shaped, unsigned
	} {
		_, err := in.Introspect(testContext(t), tok)
		if !errors.Is(err, zitadel.ErrTokenInactive) {
			t.Errorf("Introspect(%q): err = %v, want ErrTokenInactive", tok, err)
			continue
		}
		assertNoSecret(t, "error", err.Error(), tok)
		assertNoSecret(t, "log", logs.String(), tok)
	}
	for _, tok := range []string{"", strings.Repeat("a", zitadel.MaxTokenLength+1)} {
		if _, err := in.Introspect(testContext(t), tok); !errors.Is(err, zitadel.ErrTokenMalformed) {
			t.Errorf("Introspect(len %d): err = %v, want ErrTokenMalformed", len(tok), err)
		}
	}
}

func TestIntrospectWithClientSecret(t *testing.T) {
	z := zitadeltest.New(t)
	userID, keyJSON := z.AddMachineUser(t, "dev1")
	tok := deviceToken(t, z, keyJSON)
	in := newIntrospector(t, z, func(c *zitadel.IntrospectorConfig) {
		c.KeyJSON, c.ClientID, c.ClientSecret = nil, z.APIClientID, z.APIClientSecret
	})
	if sub, err := in.Introspect(testContext(t), tok); err != nil || sub != userID {
		t.Fatalf("Introspect = %q, %v; want %q", sub, err, userID)
	}

	wrong := newIntrospector(t, z, func(c *zitadel.IntrospectorConfig) {
		c.KeyJSON, c.ClientID, c.ClientSecret = nil, z.APIClientID, "wrong-secret-4711"
	})
	_, err := wrong.Introspect(testContext(t), tok)
	if err == nil || errors.Is(err, zitadel.ErrTokenInactive) {
		t.Fatalf("Introspect with a wrong API secret: err = %v, want an authentication failure", err)
	}
	assertNoSecret(t, "error", err.Error(), tok, "wrong-secret-4711")
}

func TestIntrospectRequiresProjectAudience(t *testing.T) {
	z := zitadeltest.New(t)
	_, keyJSON := z.AddMachineUser(t, "dev1")
	// Without the project scope the token is not meant for the API app.
	ts, err := devicetoken.NewTokenSource(testContext(t), z.Issuer, keyJSON, devicetoken.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Token(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	in := newIntrospector(t, z, nil)
	if _, err := in.Introspect(testContext(t), tok); !errors.Is(err, zitadel.ErrTokenInactive) {
		t.Fatalf("Introspect without project audience: err = %v, want ErrTokenInactive", err)
	}

	// A token for the project, checked against another audience.
	tok = deviceToken(t, z, keyJSON)
	other := newIntrospector(t, z, func(c *zitadel.IntrospectorConfig) { c.Audience = "some-other-project" })
	if _, err := other.Introspect(testContext(t), tok); !errors.Is(err, zitadel.ErrAudience) {
		t.Fatalf("Introspect with another audience: err = %v, want ErrAudience", err)
	}
}

// countingTransport counts introspection requests and can fail them.
type countingTransport struct {
	introspections atomic.Int64
	fail           atomic.Bool
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, zitadeltest.IntrospectionPath) {
		c.introspections.Add(1)
		if c.fail.Load() {
			// A transport error that quotes the request body (the token).
			body, _ := io.ReadAll(r.Body)
			return nil, fmt.Errorf("connection reset while sending %s", body)
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestIntrospectCache(t *testing.T) {
	z := zitadeltest.New(t)
	userID, keyJSON := z.AddMachineUser(t, "dev1")
	tok := deviceToken(t, z, keyJSON)

	newCached := func(t *testing.T, mod func(*zitadel.IntrospectorConfig)) (*zitadel.Introspector, *countingTransport, *fakeClock) {
		rt := &countingTransport{}
		in := newIntrospector(t, z, func(c *zitadel.IntrospectorConfig) {
			c.HTTPClient = &http.Client{Transport: rt}
			if mod != nil {
				mod(c)
			}
		})
		clock := &fakeClock{now: time.Now()}
		zitadel.SetClock(in, clock.Now)
		return in, rt, clock
	}
	introspect := func(t *testing.T, in *zitadel.Introspector, tok string) error {
		t.Helper()
		sub, err := in.Introspect(testContext(t), tok)
		if err == nil && sub != userID {
			t.Fatalf("subject = %q, want %q", sub, userID)
		}
		return err
	}
	wantCalls := func(t *testing.T, rt *countingTransport, n int64) {
		t.Helper()
		if got := rt.introspections.Load(); got != n {
			t.Fatalf("introspection requests = %d, want %d", got, n)
		}
	}

	t.Run("positive results live CacheTTL", func(t *testing.T) {
		in, rt, clock := newCached(t, nil) // default 10s
		for range 3 {
			if err := introspect(t, in, tok); err != nil {
				t.Fatal(err)
			}
		}
		wantCalls(t, rt, 1)
		clock.Advance(zitadel.DefaultCacheTTL - time.Second)
		_ = introspect(t, in, tok)
		wantCalls(t, rt, 1)
		clock.Advance(2 * time.Second)
		if err := introspect(t, in, tok); err != nil {
			t.Fatal(err)
		}
		wantCalls(t, rt, 2)
	})

	t.Run("never past the token's expiry", func(t *testing.T) {
		in, rt, clock := newCached(t, func(c *zitadel.IntrospectorConfig) { c.CacheTTL = time.Hour })
		if err := introspect(t, in, tok); err != nil {
			t.Fatal(err)
		}
		clock.Advance(4 * time.Minute) // the test provider's tokens live 5 minutes
		if err := introspect(t, in, tok); err != nil {
			t.Fatal(err)
		}
		wantCalls(t, rt, 1)
		clock.Advance(2 * time.Minute)
		if err := introspect(t, in, tok); !errors.Is(err, zitadel.ErrTokenInactive) {
			t.Fatalf("after expiry: err = %v, want ErrTokenInactive", err)
		}
		wantCalls(t, rt, 2)
	})

	t.Run("negative results live NegativeCacheTTL", func(t *testing.T) {
		in, rt, clock := newCached(t, nil)
		const garbage = "not-a-zitadel-token"
		for range 3 {
			if err := introspect(t, in, garbage); !errors.Is(err, zitadel.ErrTokenInactive) {
				t.Fatalf("err = %v, want ErrTokenInactive", err)
			}
		}
		wantCalls(t, rt, 1)
		clock.Advance(zitadel.DefaultNegativeCacheTTL)
		_ = introspect(t, in, garbage)
		wantCalls(t, rt, 2)
	})

	t.Run("negative TTL disables the cache", func(t *testing.T) {
		in, rt, _ := newCached(t, func(c *zitadel.IntrospectorConfig) { c.CacheTTL, c.NegativeCacheTTL = -1, -1 })
		for range 3 {
			if err := introspect(t, in, tok); err != nil {
				t.Fatal(err)
			}
			_ = introspect(t, in, "not-a-zitadel-token")
		}
		wantCalls(t, rt, 6)
		if n := zitadel.CacheLen(in); n != 0 {
			t.Fatalf("cache holds %d entries, want 0", n)
		}
	})

	t.Run("failures are not cached and do not leak the token", func(t *testing.T) {
		var logs syncBuffer
		in, rt, _ := newCached(t, func(c *zitadel.IntrospectorConfig) { c.Logger = debugLogger(&logs) })
		rt.fail.Store(true)
		for range 2 {
			err := introspect(t, in, tok)
			if err == nil || errors.Is(err, zitadel.ErrTokenInactive) {
				t.Fatalf("err = %v, want a transport failure", err)
			}
			// Neither the token nor the API app's signed client assertion.
			assertNoSecret(t, "error", err.Error(), tok, "eyJ")
		}
		wantCalls(t, rt, 2)
		rt.fail.Store(false)
		if err := introspect(t, in, tok); err != nil {
			t.Fatal(err)
		}
		assertNoSecret(t, "log", logs.String(), tok)
	})
}

func TestNewIntrospectorChecksConfig(t *testing.T) {
	z := zitadeltest.New(t)
	_, userKey := z.AddMachineUser(t, "dev1")
	for name, cfg := range map[string]zitadel.IntrospectorConfig{
		"no credentials":        {Issuer: z.Issuer, Insecure: true},
		"both credentials":      {Issuer: z.Issuer, Insecure: true, KeyJSON: z.APIKeyJSON, ClientID: "a", ClientSecret: "b"},
		"http without Insecure": {Issuer: z.Issuer, KeyJSON: z.APIKeyJSON},
		"machine-user key":      {Issuer: z.Issuer, Insecure: true, KeyJSON: userKey},
		"no issuer":             {KeyJSON: z.APIKeyJSON},
		"wrong issuer":          {Issuer: z.Issuer + "/elsewhere", Insecure: true, KeyJSON: z.APIKeyJSON},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := zitadel.NewIntrospector(testContext(t), cfg)
			if err == nil {
				t.Fatal("NewIntrospector accepted the config")
			}
			key, _ := keyfile.Parse(cfg.KeyJSON)
			if key != nil {
				assertNoSecret(t, "error", err.Error(), key.Key)
			}
		})
	}
}
