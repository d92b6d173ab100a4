package devicetoken

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/zitadel/keyfile"
	"github.com/vk-fleet/vk-fleet/zitadel/zitadeltest"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

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

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newSource(t *testing.T, z *zitadeltest.Server, keyJSON []byte, opts ...Option) (*TokenSource, *fakeClock) {
	t.Helper()
	opts = append([]Option{WithInsecure(), WithProjectID(z.ProjectID)}, opts...)
	ts, err := NewTokenSource(testContext(t), z.Issuer, keyJSON, opts...)
	if err != nil {
		t.Fatalf("NewTokenSource: %v", err)
	}
	clock := &fakeClock{now: time.Now()}
	ts.now = clock.Now
	return ts, clock
}

func TestTokenIsCachedAndRenewedBeforeExpiry(t *testing.T) {
	z := zitadeltest.New(t)
	userID, keyJSON := z.AddMachineUser(t, "dev1")
	ts, clock := newSource(t, z, keyJSON)
	if ts.UserID() != userID {
		t.Fatalf("UserID = %q, want %q", ts.UserID(), userID)
	}

	first, err := ts.Token(testContext(t))
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if first == "" {
		t.Fatal("empty token")
	}
	if again, _ := ts.Token(testContext(t)); again != first || z.TokensIssued() != 1 {
		t.Fatalf("second call: same token %v, tokens issued %d; want the cached token", again == first, z.TokensIssued())
	}

	// The test provider's tokens live 5 minutes; renewal starts a minute
	// before expiry.
	clock.Advance(3*time.Minute + 50*time.Second)
	if tok, _ := ts.Token(testContext(t)); tok != first || z.TokensIssued() != 1 {
		t.Fatalf("before the refresh window: tokens issued %d, want 1", z.TokensIssued())
	}
	clock.Advance(20 * time.Second)
	second, err := ts.Token(testContext(t))
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if second == first || z.TokensIssued() != 2 {
		t.Fatalf("in the refresh window: new token %v, tokens issued %d; want a new token", second != first, z.TokensIssued())
	}

	ts.Invalidate()
	if third, _ := ts.Token(testContext(t)); third == second || z.TokensIssued() != 3 {
		t.Fatalf("after Invalidate: tokens issued %d, want 3", z.TokensIssued())
	}
}

func TestRenewalFailureKeepsValidTokenThenFails(t *testing.T) {
	z := zitadeltest.New(t)
	userID, keyJSON := z.AddMachineUser(t, "dev1")
	key, err := keyfile.Parse(keyJSON)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	ts, clock := newSource(t, z, keyJSON, WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	tok, err := ts.Token(testContext(t))
	if err != nil {
		t.Fatal(err)
	}

	z.Deactivate(t, userID) // the provider now refuses new tokens
	clock.Advance(4*time.Minute + 30*time.Second)
	if got, err := ts.Token(testContext(t)); err != nil || got != tok {
		t.Fatalf("renewal failed inside the refresh window: got same token %v, err %v; want the still-valid token", got == tok, err)
	}
	clock.Advance(time.Minute) // past expiry
	_, err = ts.Token(testContext(t))
	if err == nil {
		t.Fatal("Token succeeded for a deactivated user with an expired token")
	}
	if h := ts.Handler(5 * time.Second)(); h != "" {
		t.Fatalf("Handler returned a token after failure")
	}
	for what, text := range map[string]string{"error": err.Error(), "log": logs.String()} {
		if strings.Contains(text, tok) || strings.Contains(text, key.Key) || strings.Contains(text, "eyJ") {
			t.Errorf("%s contains a secret: %s", what, text)
		}
	}
}

func TestHandlerForNATS(t *testing.T) {
	z := zitadeltest.New(t)
	_, keyJSON := z.AddMachineUser(t, "dev1")
	ts, _ := newSource(t, z, keyJSON)
	h := ts.Handler(10 * time.Second)
	tok := h()
	if tok == "" || h() != tok {
		t.Fatalf("Handler: want the same non-empty token twice")
	}
}

func TestNewTokenSourceWorksOffline(t *testing.T) {
	z := zitadeltest.New(t)
	_, keyJSON := z.AddMachineUser(t, "dev1")
	// A port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	offline := "http://" + ln.Addr().String()
	ln.Close()
	ts, err := NewTokenSource(testContext(t), offline, keyJSON, WithInsecure())
	if err != nil {
		t.Fatalf("NewTokenSource must not contact the issuer: %v", err)
	}
	if _, err := ts.Token(testContext(t)); err == nil {
		t.Fatal("Token succeeded without an issuer")
	}

	// WithTokenEndpoint skips discovery.
	ts, _ = newSource(t, z, keyJSON, WithTokenEndpoint(z.Issuer+zitadeltest.TokenPath))
	if _, err := ts.Token(testContext(t)); err != nil {
		t.Fatalf("Token with a static endpoint: %v", err)
	}
}

func TestTokenRespectsContext(t *testing.T) {
	z := zitadeltest.New(t)
	_, keyJSON := z.AddMachineUser(t, "dev1")
	ts, _ := newSource(t, z, keyJSON)
	ts.sem <- struct{}{} // another caller is fetching
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ts.Token(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Token while blocked with a cancelled ctx: err = %v, want context.Canceled", err)
	}
	<-ts.sem
}

func TestNewTokenSourceChecksInput(t *testing.T) {
	z := zitadeltest.New(t)
	_, keyJSON := z.AddMachineUser(t, "dev1")
	if _, err := NewTokenSource(testContext(t), z.Issuer, keyJSON); err == nil {
		t.Error("accepted a plain-http issuer without WithInsecure")
	}
	if _, err := NewTokenSource(testContext(t), z.Issuer, z.APIKeyJSON, WithInsecure()); !errors.Is(err, keyfile.ErrInvalid) {
		t.Errorf("application key: err = %v, want ErrInvalid", err)
	}
	bad := []byte(`{"type":"serviceaccount","keyId":"k","userId":"u","key":"-----BEGIN RSA PRIVATE KEY-----\nTOPSECRETBYTES\n-----END RSA PRIVATE KEY-----\n"}`)
	_, err := NewTokenSource(testContext(t), z.Issuer, bad, WithInsecure())
	if !errors.Is(err, keyfile.ErrInvalid) {
		t.Errorf("broken private key: err = %v, want ErrInvalid", err)
	} else if strings.Contains(err.Error(), "TOPSECRETBYTES") {
		t.Errorf("error contains the key: %v", err)
	}
	if got := ProjectAudienceScope("123"); got != "urn:zitadel:iam:org:project:id:123:aud" {
		t.Errorf("ProjectAudienceScope = %q", got)
	}
}
