package callout

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/vk-fleet/vk-fleet/internal/metrics"
)

// AuthCalloutSubject is where nats-server sends authorization requests.
const AuthCalloutSubject = "$SYS.REQ.USER.AUTH"

// xkeyHeader carries the server's public xkey on encrypted requests.
const xkeyHeader = "Nats-Server-Xkey"

// Devices finds the device a credential belongs to. The registry's device
// cache implements it.
type Devices interface {
	// DeviceByNKey returns the device registered with the public nkey.
	DeviceByNKey(pub string) (string, bool)
	// DeviceByZitadelUser returns the device of a Zitadel machine user.
	DeviceByZitadelUser(userID string) (string, bool)
}

// Tokens checks enrollment tokens.
type Tokens interface {
	// CheckEnrollmentToken reports whether raw is a genuine enrollment
	// token (right ID and secret), returning its ID. Expiry and uses are
	// checked by the enrollment service, which can say so clearly.
	CheckEnrollmentToken(ctx context.Context, raw string) (id string, err error)
}

// Introspector verifies an OAuth access token (Zitadel's introspection).
type Introspector interface {
	// Introspect returns the token's subject (the machine user ID) if the
	// token is active.
	Introspect(ctx context.Context, token string) (subject string, err error)
}

// Config configures a Service.
type Config struct {
	Keys    Keys
	Devices Devices
	Tokens  Tokens
	// Zitadel verifies Zitadel access tokens; nil refuses them.
	Zitadel Introspector
	// Services maps public nkeys of service identities (vk-fleet replicas)
	// to a name.
	Services map[string]string
	// DeviceTTL bounds a device session: at its end the server disconnects
	// the device, which reconnects and is checked again. Default 1h.
	DeviceTTL time.Duration
	// EnrollTTL bounds an enrollment session. Default 5m.
	EnrollTTL time.Duration
	// MaxQueueWait is how long a request may wait for a worker before it
	// is dropped unanswered, the server having given up on it by the time
	// an answer came (the client tries again). Default: the server's
	// authorization timeout less a second.
	MaxQueueWait time.Duration
	// Conns and Kicker, when set, let the service refuse a second machine
	// with a device's identity while the first is connected, and replace
	// a device's dead connection by its reconnect. The embedded server
	// sets both.
	Conns  ConnInspector
	Kicker Kicker
	// Done, if set, is called after each request is answered or dropped
	// (the embedded server's HandshakeGate admits the next handshakes).
	Done   func()
	Logger *slog.Logger
}

// Service answers auth callout requests. Create it with New.
type Service struct {
	cfg    Config
	log    *slog.Logger
	issuer nkeys.KeyPair // cfg.Keys.Issuer, its keys derived once
	xkey   *boxer        // nil without cfg.Keys.XKey

	// pending counts requests received and not yet answered or dropped.
	pending atomic.Int64
	// serving is closed once Run's subscriptions have reached the server.
	serving chan struct{}

	mu    sync.Mutex
	conns map[string]map[clientRef]bool // device → live connections
	// admit serialises, per device, the check for another live instance
	// and the tracking of the connection admitted: requests are answered
	// concurrently, and two connections of one device must not both pass.
	admit [64]sync.Mutex
}

// calloutWorkers is how many authorization requests are answered at once:
// a fleet reconnecting at once (a NATS restart) brings thousands, and the
// server gives each only its auth timeout.
const calloutWorkers = 32

// admitLock returns the lock that serialises admissions of device.
func (s *Service) admitLock(device string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(device))
	return &s.admit[h.Sum32()%uint32(len(s.admit))]
}

// clientRef identifies one client connection on one server.
type clientRef struct {
	Server string
	CID    uint64
}

// ErrDenied is the reason every refused connection gets.
var ErrDenied = errors.New("not authorized")

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Keys.Issuer == nil {
		return nil, errors.New("callout issuer key is required")
	}
	if cfg.Devices == nil || cfg.Tokens == nil {
		return nil, errors.New("callout needs a device lookup and a token checker")
	}
	if cfg.DeviceTTL <= 0 {
		cfg.DeviceTTL = time.Hour
	}
	if cfg.EnrollTTL <= 0 {
		cfg.EnrollTTL = 5 * time.Minute
	}
	if cfg.MaxQueueWait <= 0 {
		cfg.MaxQueueWait = authTimeout*time.Second - time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Tokens = newCachedTokens(cfg.Tokens)
	s := &Service{cfg: cfg, log: cfg.Logger.With("component", "callout"), conns: map[string]map[clientRef]bool{},
		issuer: newSigner(cfg.Keys.Issuer), serving: make(chan struct{})}
	if cfg.Keys.XKey != nil {
		var err error
		if s.xkey, err = newBoxer(cfg.Keys.XKey); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Run serves requests on each of conns (users of the AUTH account listed
// in the server's auth_users, one queue group) until ctx ends. The server
// handles the answers that arrive on one connection in one goroutine:
// several connections let it take them in parallel.
func (s *Service) Run(ctx context.Context, conns ...*nats.Conn) error {
	// Requests queue here, stamped as they arrive, rather than in the
	// subscription: a fleet reconnecting at once brings thousands.
	reqs := make(chan queued, maxQueued)
	var wg sync.WaitGroup
	defer wg.Wait()
	for range calloutWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case r := <-reqs:
					if waited := time.Since(r.at); waited > s.cfg.MaxQueueWait {
						// The server has given up on it, or will before an
						// answer arrives: answering costs the time the
						// requests behind it wait for.
						metrics.CalloutDecisions.WithLabelValues("dropped", "unknown", "overloaded").Inc()
						s.log.Debug("auth request dropped: it waited too long", "waited", waited)
					} else {
						s.handle(ctx, r.m)
					}
					s.pending.Add(-1)
					if s.cfg.Done != nil {
						s.cfg.Done()
					}
				}
			}
		}()
	}
	subs := make([]*nats.Subscription, 0, len(conns))
	defer func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
	}()
	for _, nc := range conns {
		sub, err := nc.QueueSubscribe(AuthCalloutSubject, "vk-fleet-callout", func(m *nats.Msg) {
			s.pending.Add(1)
			select {
			case reqs <- queued{m: m, at: time.Now()}:
			case <-ctx.Done():
				s.pending.Add(-1)
			}
		})
		if err != nil {
			return fmt.Errorf("subscribing to %s: %w", AuthCalloutSubject, err)
		}
		subs = append(subs, sub)
		if err := nc.Flush(); err != nil {
			return fmt.Errorf("subscribing to %s: %w", AuthCalloutSubject, err)
		}
	}
	s.log.Info("auth callout serving", "xkey", s.cfg.Keys.XKey != nil, "connections", len(conns))
	close(s.serving)
	<-ctx.Done()
	return nil
}

// Serving is closed once Run's subscriptions have reached the server: from
// then on the server has someone to send authorization requests to. A
// request sent before has no one to answer it, and its client waits the
// server's whole authorization timeout to be refused. Call Run once.
func (s *Service) Serving() <-chan struct{} { return s.serving }

// Pending returns how many authorization requests were received and not
// yet answered or dropped.
func (s *Service) Pending() int { return int(s.pending.Load()) }

// queued is an authorization request and when it arrived.
type queued struct {
	m  *nats.Msg
	at time.Time
}

// maxQueued bounds the requests waiting for a worker.
const maxQueued = 16384

// identity is who a connection proved to be.
type identity struct {
	kind   string // "device", "enroll", "service"
	name   string
	perms  jwt.Permissions
	ttl    time.Duration
	device string
}

func (s *Service) handle(ctx context.Context, m *nats.Msg) {
	data := m.Data
	serverXKey := m.Header.Get(xkeyHeader)
	if serverXKey != "" {
		if s.xkey == nil {
			s.log.Error("encrypted auth request but no xkey configured")
			return
		}
		var err error
		if data, err = s.xkey.Open(m.Data, serverXKey); err != nil {
			s.log.Error("decrypting auth request", "err", err)
			return
		}
	}
	start := time.Now()
	req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		s.log.Error("decoding auth request", "err", err)
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	id, err := s.authenticate(rctx, req)
	log := s.log.With("client", req.ClientInformation.ID, "host", req.ClientInformation.Host, "server", req.Server.ID)
	if err == nil && id.device != "" {
		// Held until the connection is tracked (or refused).
		l := s.admitLock(id.device)
		l.Lock()
		defer l.Unlock()
		if other, dup := s.duplicate(rctx, id.device, instanceOf(req.ConnectOptions.Name)); dup {
			err = deny("duplicate_instance", fmt.Errorf("device %s is connected from another machine (instance %s) and active: one identity runs on one machine; re-enroll the other with its own", id.device, other))
		}
	}

	kind := "unknown"
	if id != nil {
		kind = id.kind
	}
	decision := err // what the metrics count; err is reused below
	defer func() {
		res, reason := "allowed", "ok"
		if decision != nil {
			res, reason = "denied", reasonOf(decision)
		}
		metrics.CalloutDecisions.WithLabelValues(res, kind, reason).Inc()
		metrics.CalloutDuration.Observe(time.Since(start).Seconds())
	}()
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	if err != nil {
		// The reason stays in our log; the client learns nothing.
		log.Warn("connection refused", "reason", err)
		resp.Error = ErrDenied.Error()
	} else {
		uc := jwt.NewUserClaims(req.UserNkey)
		uc.Name = id.kind + ":" + id.name
		uc.Audience = FleetAccount
		uc.Expires = time.Now().Add(id.ttl).Unix()
		uc.Permissions = id.perms
		uc.Permissions.Resp = nil
		if id.kind != "service" {
			// A device sends heartbeats and statuses, an enrollment client
			// one request: none needs large messages, and what a device
			// writes to a bucket stays small.
			uc.Limits.Payload = MaxDevicePayload
			uc.Limits.Subs = MaxDeviceSubscriptions
		}
		if resp.Jwt, err = uc.Encode(s.issuer); err != nil {
			log.Error("signing user jwt", "err", err)
			resp.Jwt, resp.Error = "", ErrDenied.Error()
			decision = deny("internal", err)
		} else {
			log.Info("connection authorized", "identity", uc.Name)
			if id.device != "" {
				s.track(id.device, clientRef{Server: req.Server.ID, CID: req.ClientInformation.ID})
			}
		}
	}
	token, err := resp.Encode(s.issuer)
	if err != nil {
		s.log.Error("signing auth response", "err", err)
		return
	}
	out := []byte(token)
	if serverXKey != "" {
		if out, err = s.xkey.Seal(out, serverXKey); err != nil {
			s.log.Error("encrypting auth response", "err", err)
			return
		}
	}
	_ = m.Respond(out)
}

// authenticate decides who the client is. Every error denies.
func (s *Service) authenticate(ctx context.Context, req *jwt.AuthorizationRequestClaims) (*identity, error) {
	o := req.ConnectOptions
	switch {
	case o.Nkey != "":
		if err := verifyNonce(o.Nkey, req.ClientInformation.Nonce, o.SignedNonce); err != nil {
			return nil, deny("bad_signature", err)
		}
		if name, ok := s.cfg.Services[o.Nkey]; ok {
			return &identity{kind: "service", name: name, perms: ServicePermissions(), ttl: 24 * time.Hour}, nil
		}
		device, ok := s.cfg.Devices.DeviceByNKey(o.Nkey)
		if !ok {
			return nil, deny("unknown_device", fmt.Errorf("nkey %s is not registered to a device", o.Nkey))
		}
		return &identity{kind: "device", name: device, device: device, perms: DevicePermissions(device), ttl: s.cfg.DeviceTTL}, nil
	case o.Token != "" && looksLikeEnrollmentToken(o.Token):
		id, err := s.cfg.Tokens.CheckEnrollmentToken(ctx, o.Token)
		if err != nil {
			return nil, deny("enrollment_token", fmt.Errorf("enrollment token: %w", err))
		}
		return &identity{kind: "enroll", name: id, perms: EnrollmentPermissions(), ttl: s.cfg.EnrollTTL}, nil
	case o.Token != "":
		if s.cfg.Zitadel == nil {
			return nil, deny("zitadel_disabled", errors.New("bearer tokens are not accepted: no Zitadel configured"))
		}
		sub, err := s.cfg.Zitadel.Introspect(ctx, o.Token)
		if err != nil {
			return nil, deny("zitadel_token", fmt.Errorf("zitadel token: %w", err))
		}
		device, ok := s.cfg.Devices.DeviceByZitadelUser(sub)
		if !ok {
			return nil, deny("unknown_device", fmt.Errorf("zitadel user %s is not registered to a device", sub))
		}
		return &identity{kind: "device", name: device, device: device, perms: DevicePermissions(device), ttl: s.cfg.DeviceTTL}, nil
	}
	return nil, deny("no_credential", errors.New("no credential presented"))
}

// looksLikeEnrollmentToken matches the bootstrap-token shape [a-z0-9]{6}.[a-z0-9]{16}.
func looksLikeEnrollmentToken(t string) bool {
	id, secret, ok := strings.Cut(t, ".")
	if !ok || len(id) != 6 || len(secret) != 16 {
		return false
	}
	for _, c := range id + secret {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func verifyNonce(pub, nonce, signed string) error {
	if nonce == "" || signed == "" {
		return errors.New("nkey presented without a signed nonce")
	}
	kp, err := nkeys.FromPublicKey(pub)
	if err != nil {
		return fmt.Errorf("bad nkey: %w", err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(signed)
	if err != nil {
		if sig, err = base64.StdEncoding.DecodeString(signed); err != nil {
			return fmt.Errorf("bad nonce signature encoding: %w", err)
		}
	}
	if err := kp.Verify([]byte(nonce), sig); err != nil {
		return fmt.Errorf("nonce signature does not verify for %s", pub)
	}
	return nil
}

func (s *Service) track(device string, ref clientRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns[device] == nil {
		s.conns[device] = map[clientRef]bool{}
	}
	s.conns[device][ref] = true
}

// Kicker disconnects a client connection.
type Kicker interface {
	Kick(ctx context.Context, serverID string, cid uint64) error
}

// Kick disconnects every connection device made through this service. The
// device's credentials must already be revoked (its Node deleted), or it
// simply reconnects.
func (s *Service) Kick(ctx context.Context, k Kicker, device string) int {
	s.mu.Lock()
	refs := s.conns[device]
	delete(s.conns, device)
	s.mu.Unlock()
	n := 0
	for ref := range refs {
		if err := k.Kick(ctx, ref.Server, ref.CID); err != nil {
			s.log.Debug("kicking connection", "device", device, "cid", ref.CID, "err", err)
			continue
		}
		n++
	}
	if n > 0 {
		s.log.Info("revoked device disconnected", "device", device, "connections", n)
	}
	return n
}

// denial is why a connection is refused: a reason from a small set, for
// metrics, and the error, for the log.
type denial struct {
	reason string
	err    error
}

func (d *denial) Error() string { return d.err.Error() }
func (d *denial) Unwrap() error { return d.err }

func deny(reason string, err error) error { return &denial{reason, err} }

// reasonOf returns the reason err was denied for.
func reasonOf(err error) string {
	var d *denial
	if errors.As(err, &d) {
		return d.reason
	}
	return "other"
}
