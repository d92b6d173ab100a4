// Package enrollment serves and sends device enrollment requests over NATS
// (bridge.EnrollSubject): a device holding an enrollment token registers its
// name, public key and labels, and becomes a Node.
package enrollment

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/internal/metrics"
	"github.com/vk-fleet/vk-fleet/registry"
)

// Registrar registers devices; *registry.Registry implements it.
type Registrar interface {
	Enroll(ctx context.Context, e registry.Enrollment) (string, error)
}

// RegistryRegistrar adapts a *registry.Registry.
type RegistryRegistrar struct{ R *registry.Registry }

// Enroll registers the device and returns its name.
func (a RegistryRegistrar) Enroll(ctx context.Context, e registry.Enrollment) (string, error) {
	n, err := a.R.Enroll(ctx, e)
	if err != nil {
		return "", err
	}
	return n.Name, nil
}

// Introspector verifies a Zitadel access token and returns its subject;
// *zitadel.Introspector implements it.
type Introspector interface {
	Introspect(ctx context.Context, token string) (subject string, err error)
}

// MaxInFlight is how many enrollment requests Serve handles at once. More
// wait, in order, in the subscription's pending buffer.
const MaxInFlight = 256

// Serve answers enrollment requests on nc until ctx ends, up to
// MaxInFlight at a time, and returns once the requests it took are
// answered. zitadel may be nil, which refuses Zitadel enrollments.
func Serve(ctx context.Context, nc *nats.Conn, reg Registrar, zitadel Introspector, log *slog.Logger) error {
	log = log.With("component", "enrollment")
	slots := make(chan struct{}, MaxInFlight)
	var (
		mu      sync.Mutex
		stopped bool // set once Serve stops taking requests; guarded by mu
		wg      sync.WaitGroup
	)
	shuttingDown := &bridge.EnrollResponse{Error: &bridge.Error{Code: bridge.CodeInternal, Message: "vk-fleet is shutting down; try again"}}
	sub, err := nc.QueueSubscribe(bridge.EnrollSubject, "vk-fleet-enrollment", func(m *nats.Msg) {
		// Waiting for a slot holds up the subscription's delivery: the
		// requests behind wait in its buffer.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			respond(m, shuttingDown)
			return
		}
		mu.Lock()
		if stopped {
			mu.Unlock()
			<-slots
			respond(m, shuttingDown)
			return
		}
		wg.Add(1)
		mu.Unlock()
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			resp := handle(ctx, reg, zitadel, m.Data, log)
			result := "ok"
			if resp.Error != nil {
				result = resp.Error.Code
			}
			metrics.Enrollments.WithLabelValues(result).Inc()
			respond(m, resp)
		}()
	})
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", bridge.EnrollSubject, err)
	}
	<-ctx.Done()
	err = sub.Unsubscribe()
	mu.Lock()
	stopped = true
	mu.Unlock()
	wg.Wait()
	return err
}

func respond(m *nats.Msg, resp *bridge.EnrollResponse) {
	data, _ := bridge.Encode(resp)
	_ = m.Respond(data)
}

func handle(ctx context.Context, reg Registrar, zitadel Introspector, data []byte, log *slog.Logger) *bridge.EnrollResponse {
	req, err := bridge.Decode[bridge.EnrollRequest](data)
	if err != nil {
		return &bridge.EnrollResponse{Error: &bridge.Error{Code: bridge.CodeInvalid, Message: "malformed enrollment request"}}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var zitadelUser string
	if req.ZitadelToken != "" {
		if zitadel == nil {
			return &bridge.EnrollResponse{Error: &bridge.Error{Code: bridge.CodeInvalid, Message: "this vk-fleet does not accept Zitadel identities (start it with --zitadel-issuer)"}}
		}
		if zitadelUser, err = zitadel.Introspect(ctx, req.ZitadelToken); err != nil {
			log.Warn("enrollment refused", "device", req.Name, "err", err)
			return &bridge.EnrollResponse{Error: &bridge.Error{Code: bridge.CodeInvalid, Message: "the Zitadel access token was not accepted"}}
		}
	}
	name, err := reg.Enroll(ctx, registry.Enrollment{
		Token: req.Token, Name: req.Name, NKey: req.NKey, ZitadelUserID: zitadelUser, Labels: req.Labels,
	})
	if err != nil {
		code := codeOf(err)
		// Never log the request: it holds the token.
		log.Warn("enrollment refused", "device", req.Name, "code", code, "err", err)
		msg := err.Error()
		if code == bridge.CodeInternal {
			msg = "enrollment failed on the server; see the vk-fleet logs"
		}
		return &bridge.EnrollResponse{Error: &bridge.Error{Code: code, Message: msg}}
	}
	log.Info("device enrolled", "device", name, "identity", identityKind(req))
	return &bridge.EnrollResponse{Device: name}
}

func identityKind(r *bridge.EnrollRequest) string {
	if r.ZitadelToken != "" {
		return "zitadel"
	}
	return "nkey"
}

var codes = []struct {
	err  error
	code string
}{
	{registry.ErrTokenExpired, bridge.CodeTokenExpired},
	{registry.ErrTokenUsedUp, bridge.CodeTokenUsedUp},
	{registry.ErrTokenInvalid, bridge.CodeTokenInvalid},
	{registry.ErrNameTaken, bridge.CodeNameTaken},
	{registry.ErrInvalidInput, bridge.CodeInvalid},
}

func codeOf(err error) string {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return bridge.CodeInternal
}
