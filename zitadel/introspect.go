package zitadel

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/zitadel/oidc/v3/pkg/client/rs"
	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/vk-fleet/vk-fleet/zitadel/internal/issuer"
	"github.com/vk-fleet/vk-fleet/zitadel/internal/redact"
	"github.com/vk-fleet/vk-fleet/zitadel/keyfile"
)

// Defaults of IntrospectorConfig.
const (
	DefaultCacheTTL         = 10 * time.Second
	DefaultNegativeCacheTTL = 2 * time.Second
	DefaultMaxCacheEntries  = 10000
	// MaxTokenLength bounds what is sent to Zitadel at all.
	MaxTokenLength = 8192
)

// IntrospectorConfig configures an Introspector. The API application's
// credentials are either KeyJSON (JWT-profile client assertion, what
// Zitadel recommends) or ClientID and ClientSecret (basic auth).
type IntrospectorConfig struct {
	// Issuer is Zitadel's URL, e.g. https://zitadel.example.com.
	Issuer string
	// KeyJSON is the key file of the API application
	// ("type":"application").
	KeyJSON []byte
	// ClientID and ClientSecret of the API application, instead of KeyJSON.
	ClientID     string
	ClientSecret string
	// Audience, if set, must be one of the token's audiences (for example
	// the project ID). Zitadel already answers inactive for tokens not
	// meant for the API application's project; this is a second check.
	Audience string
	// Insecure allows a plain-http issuer. Tests only.
	Insecure bool
	// CacheTTL is how long an active result is reused (never past the
	// token's expiry). Zero means DefaultCacheTTL; negative disables.
	CacheTTL time.Duration
	// NegativeCacheTTL is how long an inactive result is reused. Zero
	// means DefaultNegativeCacheTTL; negative disables.
	NegativeCacheTTL time.Duration
	// MaxCacheEntries bounds the cache (default DefaultMaxCacheEntries).
	MaxCacheEntries int
	// HTTPClient talks to Zitadel (default: a client with a 10s timeout).
	HTTPClient *http.Client
	// Logger receives debug lines; they name a token only by a short
	// fingerprint of its hash. Default slog.Default().
	Logger *slog.Logger
}

// Introspector checks Zitadel access tokens at the issuer's OAuth
// introspection endpoint (RFC 7662) and caches the answers briefly, keyed
// by the token's SHA-256. It implements callout.Introspector and is safe
// for concurrent use.
type Introspector struct {
	rs       rs.ResourceServer
	audience string
	posTTL   time.Duration
	negTTL   time.Duration
	cache    *resultCache
	log      *slog.Logger
	now      func() time.Time
}

// NewIntrospector checks cfg and discovers the issuer's endpoints, so a
// wrong issuer fails here rather than at the first device connection.
func NewIntrospector(ctx context.Context, cfg IntrospectorConfig) (*Introspector, error) {
	iss, _, err := issuer.Parse(cfg.Issuer, cfg.Insecure)
	if err != nil {
		return nil, err
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	var (
		server  rs.ResourceServer
		secrets []string
	)
	switch {
	case len(cfg.KeyJSON) > 0 && (cfg.ClientID != "" || cfg.ClientSecret != ""):
		return nil, errors.New("give the API application's key file or its client ID and secret, not both")
	case len(cfg.KeyJSON) > 0:
		key, err := keyfile.Parse(cfg.KeyJSON)
		if err != nil {
			return nil, err
		}
		if key.Type != keyfile.TypeApplication {
			return nil, fmt.Errorf("%w: introspection needs an API application key, got a %s key", keyfile.ErrInvalid, key.Type)
		}
		secrets = []string{key.Key}
		server, err = rs.NewResourceServerJWTProfile(ctx, iss, key.ClientID, key.KeyID, []byte(key.Key), rs.WithClient(hc))
		if err != nil {
			return nil, fmt.Errorf("setting up zitadel introspection: %w", redact.Error(err, secrets...))
		}
	case cfg.ClientID != "" && cfg.ClientSecret != "":
		secrets = []string{cfg.ClientSecret}
		server, err = rs.NewResourceServerClientCredentials(ctx, iss, cfg.ClientID, cfg.ClientSecret, rs.WithClient(hc))
		if err != nil {
			return nil, fmt.Errorf("setting up zitadel introspection: %w", redact.Error(err, secrets...))
		}
	default:
		return nil, errors.New("zitadel introspection needs the API application's key file or client ID and secret")
	}
	if server.IntrospectionURL() == "" {
		return nil, fmt.Errorf("issuer %s advertises no introspection endpoint", iss)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	maxEntries := cfg.MaxCacheEntries
	if maxEntries <= 0 {
		maxEntries = DefaultMaxCacheEntries
	}
	return &Introspector{
		rs:       server,
		audience: cfg.Audience,
		posTTL:   ttlOrDefault(cfg.CacheTTL, DefaultCacheTTL),
		negTTL:   ttlOrDefault(cfg.NegativeCacheTTL, DefaultNegativeCacheTTL),
		cache:    newResultCache(maxEntries),
		log:      logger.With("component", "zitadel-introspection"),
		now:      time.Now,
	}, nil
}

func ttlOrDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// Introspect returns the token's subject (the machine user ID) if Zitadel
// says the token is active. Refusals wrap ErrTokenInactive,
// ErrTokenMalformed or ErrAudience; other errors mean Zitadel could not be
// asked. No error contains the token.
func (i *Introspector) Introspect(ctx context.Context, token string) (string, error) {
	if token == "" || len(token) > MaxTokenLength {
		return "", fmt.Errorf("introspecting token: %w", ErrTokenMalformed)
	}
	key := hashToken(token)
	fp := hex.EncodeToString(key[:6])
	now := i.now()
	if r, ok := i.cache.get(key, now); ok {
		i.log.Debug("token introspection cached", "token_sha256", fp, "subject", r.subject, "active", r.err == nil)
		if r.err != nil {
			return "", fmt.Errorf("introspecting token: %w", r.err)
		}
		return r.subject, nil
	}

	resp, err := rs.Introspect[*oidc.IntrospectionResponse](ctx, i.rs, token)
	if err != nil {
		err = redact.Error(err, token)
		i.log.Debug("token introspection failed", "token_sha256", fp, "err", err)
		return "", fmt.Errorf("introspecting token: %w", err)
	}
	subject, refusal := i.judge(resp, now)
	if refusal != nil {
		i.cache.put(key, result{err: refusal, until: now.Add(i.negTTL)}, now)
		i.log.Debug("token refused", "token_sha256", fp, "reason", refusal)
		return "", fmt.Errorf("introspecting token: %w", refusal)
	}
	until := now.Add(i.posTTL)
	if exp := resp.Expiration; exp != 0 && exp.AsTime().Before(until) {
		until = exp.AsTime()
	}
	i.cache.put(key, result{subject: subject, until: until}, now)
	i.log.Debug("token introspected", "token_sha256", fp, "subject", subject, "expires", resp.Expiration.AsTime())
	return subject, nil
}

// judge returns the subject of an acceptable answer, or why it is refused.
func (i *Introspector) judge(resp *oidc.IntrospectionResponse, now time.Time) (string, error) {
	if resp == nil || !resp.Active {
		return "", ErrTokenInactive
	}
	if resp.Subject == "" {
		return "", fmt.Errorf("%w: active token without a subject", ErrTokenInactive)
	}
	if resp.Expiration != 0 && !now.Before(resp.Expiration.AsTime()) {
		return "", fmt.Errorf("%w: expired", ErrTokenInactive)
	}
	if i.audience != "" && !slices.Contains([]string(resp.Audience), i.audience) {
		return "", ErrAudience
	}
	return resp.Subject, nil
}
