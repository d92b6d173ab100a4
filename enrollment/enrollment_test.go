package enrollment_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/enrollment"
	"github.com/vk-fleet/vk-fleet/internal/natsd"
	"github.com/vk-fleet/vk-fleet/registry"
)

// startNATS runs an in-process NATS server and returns a connection to it.
func startNATS(t *testing.T) (*natsd.Server, *nats.Conn) {
	t.Helper()
	srv, err := natsd.Start(t.Context(), natsd.Config{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv, connect(t, srv)
}

func connect(t *testing.T, srv *natsd.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// serve runs enrollment.Serve until the test ends, and waits until it
// answers.
func serve(t *testing.T, nc *nats.Conn, reg enrollment.Registrar) {
	t.Helper()
	startServe(t, nc, reg)
	// Serve subscribes asynchronously: wait until it answers.
	waitFor(t, "the enrollment service", func() bool {
		_, err := request(t, nc, &bridge.EnrollRequest{Name: "probe"}, 100*time.Millisecond)
		return err == nil
	})
}

// startServe runs enrollment.Serve until the test ends, and waits for it
// to return then.
func startServe(t *testing.T, nc *nats.Conn, reg enrollment.Registrar) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- enrollment.Serve(ctx, nc, reg, nil, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

// request sends req and returns the response.
func request(t *testing.T, nc *nats.Conn, req *bridge.EnrollRequest, timeout time.Duration) (*bridge.EnrollResponse, error) {
	t.Helper()
	data, err := bridge.Encode(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, bridge.EnrollSubject, data)
	if err != nil {
		return nil, err
	}
	return bridge.Decode[bridge.EnrollResponse](m.Data)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// blockingRegistrar holds every enrollment until release is closed, and
// counts how many it holds. Names starting with "used-up" are refused.
type blockingRegistrar struct {
	release chan struct{}

	mu       sync.Mutex
	inFlight int
	max      int
}

var _ enrollment.Registrar = (*blockingRegistrar)(nil)

func (b *blockingRegistrar) Enroll(ctx context.Context, e registry.Enrollment) (string, error) {
	if e.Name == "probe" {
		return e.Name, nil
	}
	b.mu.Lock()
	b.inFlight++
	b.max = max(b.max, b.inFlight)
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.inFlight--
		b.mu.Unlock()
	}()
	select {
	case <-b.release:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if strings.HasPrefix(e.Name, "used-up") {
		return "", fmt.Errorf("enrolling %s: %w", e.Name, registry.ErrTokenUsedUp)
	}
	return e.Name, nil
}

func (b *blockingRegistrar) counts() (inFlight, max int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inFlight, b.max
}

// Serve handles up to MaxInFlight requests at once, and answers each
// request with its own result.
func TestServeConcurrently(t *testing.T) {
	_, nc := startNATS(t)
	reg := &blockingRegistrar{release: make(chan struct{})}
	serve(t, nc, reg)

	const n = 2*enrollment.MaxInFlight + 10
	type answer struct {
		resp *bridge.EnrollResponse
		err  error
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		name := fmt.Sprintf("pi-%d", i)
		if i%3 == 0 {
			name = fmt.Sprintf("used-up-%d", i)
		}
		wg.Go(func() {
			resp, err := request(t, nc, &bridge.EnrollRequest{Name: name}, 30*time.Second)
			answers[i] = answer{resp, err}
		})
	}
	waitFor(t, "MaxInFlight enrollments at once", func() bool {
		inFlight, _ := reg.counts()
		return inFlight == enrollment.MaxInFlight
	})
	close(reg.release)
	wg.Wait()

	if _, m := reg.counts(); m != enrollment.MaxInFlight {
		t.Errorf("at most %d enrollments at once, want %d", m, enrollment.MaxInFlight)
	}
	for i, a := range answers {
		if a.err != nil {
			t.Errorf("request %d: %v", i, a.err)
			continue
		}
		if i%3 == 0 {
			if a.resp.Error == nil || !errors.Is(a.resp.Error, bridge.ErrTokenUsedUp) {
				t.Errorf("request %d: %+v, want %s", i, a.resp, bridge.CodeTokenUsedUp)
			}
		} else if want := fmt.Sprintf("pi-%d", i); a.resp.Device != want || a.resp.Error != nil {
			t.Errorf("request %d: device %q error %v, want %q", i, a.resp.Device, a.resp.Error, want)
		}
	}
}

// At shutdown, Serve answers the requests it took, and returns.
func TestServeShutdownAnswersInFlight(t *testing.T) {
	_, nc := startNATS(t)
	reg := &blockingRegistrar{release: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- enrollment.Serve(ctx, nc, reg, nil, slog.New(slog.DiscardHandler)) }()
	waitFor(t, "the enrollment service", func() bool {
		_, err := request(t, nc, &bridge.EnrollRequest{Name: "probe"}, 100*time.Millisecond)
		return err == nil
	})

	answered := make(chan *bridge.EnrollResponse, 1)
	go func() {
		resp, err := request(t, nc, &bridge.EnrollRequest{Name: "pi-1"}, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		answered <- resp
	}()
	waitFor(t, "the enrollment to start", func() bool { n, _ := reg.counts(); return n == 1 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	select {
	case resp := <-answered:
		if resp == nil || resp.Error == nil || resp.Error.Code != bridge.CodeInternal {
			t.Errorf("enrollment cut short by shutdown: %+v, want an internal error", resp)
		}
	case <-time.After(10 * time.Second):
		t.Error("the request in flight at shutdown was not answered")
	}
}
