// Package devicetoken obtains Zitadel access tokens for a device's machine
// user, to present as the NATS connect token.
//
// A TokenSource signs a JWT-profile assertion with the machine user's JSON
// key (the file Zitadel issues, or `fleetctl enroll --zitadel` writes),
// exchanges it at the issuer's token endpoint, and reuses the access token
// until shortly before it expires. It needs no Kubernetes and no
// nats-server code, so it belongs in the device binary:
//
//	ts, err := devicetoken.NewTokenSource(ctx, "https://zitadel.example.com", keyJSON,
//		devicetoken.WithProjectID(projectID))
//	nc, err := nats.Connect(url, nats.TokenHandler(ts.Handler(10*time.Second)))
//
// Neither the key nor a token ever appears in an error or a log line.
package devicetoken

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	oidcclient "github.com/zitadel/oidc/v3/pkg/client"
	"github.com/zitadel/oidc/v3/pkg/client/profile"
	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/vk-fleet/vk-fleet/zitadel/internal/issuer"
	"github.com/vk-fleet/vk-fleet/zitadel/internal/redact"
	"github.com/vk-fleet/vk-fleet/zitadel/keyfile"
)

// DefaultRefreshBefore is how long before expiry a token is renewed.
const DefaultRefreshBefore = time.Minute

// ProjectAudienceScope is the scope that puts Zitadel project projectID in
// a token's audience, so the project's API application can introspect it.
func ProjectAudienceScope(projectID string) string {
	return "urn:zitadel:iam:org:project:id:" + projectID + ":aud"
}

// Option configures a TokenSource.
type Option func(*options)

type options struct {
	projectID     string
	scopes        []string
	httpClient    *http.Client
	insecure      bool
	tokenEndpoint string
	refreshBefore time.Duration
	logger        *slog.Logger
}

// WithProjectID requests the project's audience scope, which the API
// application that vk-fleet introspects with requires.
func WithProjectID(id string) Option { return func(o *options) { o.projectID = id } }

// WithScopes requests extra scopes besides openid (and the project scope).
func WithScopes(scopes ...string) Option {
	return func(o *options) { o.scopes = append(o.scopes, scopes...) }
}

// WithHTTPClient sets the client for discovery and token requests.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.httpClient = c } }

// WithInsecure allows a plain-http issuer. For tests and local setups only.
func WithInsecure() Option { return func(o *options) { o.insecure = true } }

// WithTokenEndpoint skips discovery and uses this token endpoint.
func WithTokenEndpoint(url string) Option { return func(o *options) { o.tokenEndpoint = url } }

// WithRefreshBefore sets how long before expiry a token is renewed (default
// DefaultRefreshBefore, at most half the token's lifetime).
func WithRefreshBefore(d time.Duration) Option { return func(o *options) { o.refreshBefore = d } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// TokenSource hands out access tokens of one machine user. It is safe for
// concurrent use. Create it with NewTokenSource.
type TokenSource struct {
	issuer string
	key    *keyfile.Key
	scopes []string
	opts   options
	log    *slog.Logger
	now    func() time.Time

	// sem serialises token requests; unlike a mutex, waiting respects ctx.
	sem chan struct{}
	// Guarded by sem:
	src      profile.TokenSource // built on first use (discovery)
	token    string
	expiry   time.Time
	lifetime time.Duration
}

// NewTokenSource returns a TokenSource for the machine user whose Zitadel
// JSON key is keyJSON. It checks the key but does not contact the issuer:
// discovery and the first exchange happen on the first Token call, so a
// device can start while offline. ctx is only checked for cancellation.
func NewTokenSource(ctx context.Context, issuerURL string, keyJSON []byte, opts ...Option) (*TokenSource, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o := options{refreshBefore: DefaultRefreshBefore}
	for _, opt := range opts {
		opt(&o)
	}
	iss, _, err := issuer.Parse(issuerURL, o.insecure)
	if err != nil {
		return nil, err
	}
	key, err := keyfile.Parse(keyJSON)
	if err != nil {
		return nil, err
	}
	if key.Type != keyfile.TypeServiceAccount {
		return nil, fmt.Errorf("%w: want a machine-user key, got an %s key", keyfile.ErrInvalid, key.Type)
	}
	// Check the private key now rather than at the first connection.
	if _, err := oidcclient.NewSignerFromPrivateKeyByte([]byte(key.Key), key.KeyID); err != nil {
		return nil, fmt.Errorf("%w: private key does not load: %w", keyfile.ErrInvalid, redact.Error(err, key.Key))
	}
	if o.httpClient == nil {
		o.httpClient = &http.Client{Timeout: 30 * time.Second}
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	scopes := []string{oidc.ScopeOpenID}
	if o.projectID != "" {
		scopes = append(scopes, ProjectAudienceScope(o.projectID))
	}
	scopes = append(scopes, o.scopes...)
	return &TokenSource{
		issuer: iss,
		key:    key,
		scopes: scopes,
		opts:   o,
		log:    o.logger.With("component", "zitadel-token", "zitadel_user", key.UserID),
		now:    time.Now,
		sem:    make(chan struct{}, 1),
	}, nil
}

// UserID is the machine user the tokens belong to.
func (s *TokenSource) UserID() string { return s.key.UserID }

// Token returns a valid access token, requesting a new one when the cached
// one is missing or about to expire. If renewal fails while the cached
// token is still valid, the cached token is returned.
func (s *TokenSource) Token(ctx context.Context) (string, error) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for zitadel token: %w", ctx.Err())
	}
	defer func() { <-s.sem }()

	now := s.now()
	if s.token != "" && now.Before(s.expiry.Add(-s.margin())) {
		return s.token, nil
	}
	tok, lifetime, err := s.fetch(ctx)
	if err != nil {
		if s.token != "" && now.Before(s.expiry) {
			s.log.Warn("renewing zitadel token; using the current one until it expires", "err", err, "expires", s.expiry)
			return s.token, nil
		}
		return "", err
	}
	s.token, s.lifetime, s.expiry = tok, lifetime, now.Add(lifetime)
	s.log.Debug("zitadel token obtained", "lifetime", lifetime)
	return tok, nil
}

// margin is how long before expiry the token counts as stale.
func (s *TokenSource) margin() time.Duration {
	return min(s.opts.refreshBefore, s.lifetime/2)
}

// Invalidate drops the cached token, so the next Token call requests a new
// one (for example after the server refused the current one).
func (s *TokenSource) Invalidate() {
	s.sem <- struct{}{}
	s.token, s.expiry, s.lifetime = "", time.Time{}, 0
	<-s.sem
}

// Handler adapts the source to nats.TokenHandler: each call returns a
// token, or "" (which the server refuses) if none can be had within
// timeout; the reason is logged.
func (s *TokenSource) Handler(timeout time.Duration) func() string {
	return func() string {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		tok, err := s.Token(ctx)
		if err != nil {
			s.log.Warn("no zitadel token for the connection", "err", err)
			return ""
		}
		return tok
	}
}

func (s *TokenSource) fetch(ctx context.Context) (string, time.Duration, error) {
	secrets := []string{s.key.Key}
	if s.src == nil {
		var src profile.TokenSource
		var err error
		key := []byte(s.key.Key)
		if s.opts.tokenEndpoint != "" {
			src, err = profile.NewJWTProfileTokenSource(ctx, s.issuer, s.key.UserID, s.key.KeyID, key, s.scopes,
				profile.WithHTTPClient(s.opts.httpClient), profile.WithStaticTokenEndpoint(s.issuer, s.opts.tokenEndpoint))
		} else {
			src, err = profile.NewJWTProfileTokenSource(ctx, s.issuer, s.key.UserID, s.key.KeyID, key, s.scopes,
				profile.WithHTTPClient(s.opts.httpClient))
		}
		if err != nil {
			return "", 0, fmt.Errorf("discovering zitadel token endpoint: %w", redact.Error(err, secrets...))
		}
		s.src = src
	}
	tok, err := s.src.TokenCtx(ctx)
	if err != nil {
		return "", 0, fmt.Errorf("requesting zitadel token: %w", redact.Error(err, secrets...))
	}
	if tok.AccessToken == "" {
		return "", 0, errors.New("requesting zitadel token: response has no access token")
	}
	// The library computes Expiry from expires_in with the wall clock;
	// keep the lifetime and anchor it on our clock.
	lifetime := time.Until(tok.Expiry)
	if tok.Expiry.IsZero() || lifetime <= 0 {
		lifetime = 0
	}
	return tok.AccessToken, lifetime, nil
}
