package callout_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/callout"
	"github.com/vk-fleet/vk-fleet/internal/metrics"
	"github.com/vk-fleet/vk-fleet/internal/natsd"
	"github.com/vk-fleet/vk-fleet/internal/pki"
	"github.com/vk-fleet/vk-fleet/zitadel"
	"github.com/vk-fleet/vk-fleet/zitadel/devicetoken"
	"github.com/vk-fleet/vk-fleet/zitadel/zitadeltest"
)

// devices is an in-memory device registry.
type devices struct {
	mu     sync.Mutex
	byKey  map[string]string
	byUser map[string]string
	delay  time.Duration   // how long a lookup by nkey takes
	done   <-chan struct{} // closed when the test ends: lookups under way end at once
	// looking counts lookups under way; mostLooking is its maximum.
	looking, mostLooking int
}

func (d *devices) DeviceByNKey(pub string) (string, bool) {
	d.mu.Lock()
	delay := d.delay
	n, ok := d.byKey[pub]
	d.looking++
	d.mostLooking = max(d.mostLooking, d.looking)
	d.mu.Unlock()
	// A slow registry, what the tests are about: a cost, not a wait for
	// a condition.
	t := time.NewTimer(delay)
	select {
	case <-t.C:
	case <-d.done:
		t.Stop()
	}
	d.mu.Lock()
	d.looking--
	d.mu.Unlock()
	return n, ok
}

func (d *devices) DeviceByZitadelUser(id string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.byUser[id]
	return n, ok
}

// tokens accepts exactly one enrollment token.
type tokens struct{ valid string }

func (t tokens) CheckEnrollmentToken(_ context.Context, raw string) (string, error) {
	if raw != t.valid {
		return "", errors.New("unknown token")
	}
	return raw[:6], nil
}

const enrollToken = "abcdef.0123456789abcdef"

// authTest is a real nats-server with the callout, like vk-fleet embeds it.
type authTest struct {
	t        *testing.T
	srv      *natsd.Server
	svc      *callout.Service
	stop     context.CancelFunc
	devices  *devices
	admin    *nats.Conn // the provider's bypass user
	calloutC *nats.Conn
	logs     *strings.Builder
	// tls, when the server serves TLS, is what every client connects with.
	tls []nats.Option
}

func newAuthTest(t *testing.T, zitadelIntrospector callout.Introspector, configure ...func(*callout.Config)) *authTest {
	t.Helper()
	return newAuthTestServer(t, nil, zitadelIntrospector, configure...)
}

// newAuthTestServer is newAuthTest with the embedded server's
// configuration changed by serve (TLS, a handshake gate).
func newAuthTestServer(t *testing.T, serve func(*natsd.Config, *authTest), zitadelIntrospector callout.Introspector, configure ...func(*callout.Config)) *authTest {
	t.Helper()
	keys, err := callout.GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	users := callout.NewEmbeddedUsers()
	a := &authTest{t: t, devices: &devices{byKey: map[string]string{}, byUser: map[string]string{}, done: t.Context().Done()}, logs: &strings.Builder{}}
	scfg := natsd.Config{
		Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), ConfigText: callout.ServerConfig(keys, users),
		Options: func(o *server.Options) error { o.AlwaysEnableNonce = true; return nil },
		// As vk-fleet does: devices are let in once the callout serves.
		ListenLater: true,
	}
	if serve != nil {
		serve(&scfg, a)
	}
	srv, err := natsd.Start(t.Context(), scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	a.srv = srv
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&logMu, a.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	conns := serverConns{srv}
	cfg := callout.Config{Keys: keys, Devices: a.devices, Tokens: tokens{enrollToken}, Zitadel: zitadelIntrospector, Logger: log,
		Conns: conns, Kicker: conns}
	for _, c := range configure {
		c(&cfg)
	}
	a.svc, err = callout.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.calloutC, err = nats.Connect("", nats.InProcessServer(srv.Inner()), nats.UserInfo(callout.CalloutUser, users.CalloutPassword))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.calloutC.Close)
	ctx, cancel := context.WithCancel(context.Background())
	a.stop = cancel
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.svc.Run(ctx, a.calloutC)
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-a.svc.Serving():
	case <-done:
		t.Fatal("the callout stopped before serving")
	case <-time.After(10 * time.Second):
		t.Fatal("the callout is not serving after 10 s")
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	a.admin, err = nats.Connect(srv.ClientURL(), append(a.tls, nats.UserInfo(callout.ProviderUser, users.ProviderPassword))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.admin.Close)
	// The first device to connect is answered: nothing reaches the server
	// before someone answers authorization requests (a device that did
	// waited the server's authorization timeout to be refused).
	a.enroll("probe")
	nc, err := a.tryDevice("probe")
	if err != nil {
		t.Fatalf("the first device to connect was not let in: %v", err)
	}
	nc.Close()
	js, _ := jetstream.New(a.admin)
	for _, b := range []string{bridge.WorkloadsBucket, bridge.StatusBucket} {
		if _, err := js.CreateOrUpdateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: b, History: 1}); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// keysOf holds each test device's key pair.
var keysOf sync.Map

// enroll registers device with a fresh nkey.
func (a *authTest) enroll(device string) nkeys.KeyPair {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	a.devices.mu.Lock()
	a.devices.byKey[pub] = device
	a.devices.mu.Unlock()
	keysOf.Store(a.t.Name()+"/"+device, kp)
	return kp
}

func (a *authTest) revoke(device string) {
	a.devices.mu.Lock()
	defer a.devices.mu.Unlock()
	for k, d := range a.devices.byKey {
		if d == device {
			delete(a.devices.byKey, k)
		}
	}
}

func nkeyOption(kp nkeys.KeyPair) nats.Option {
	pub, _ := kp.PublicKey()
	return nats.Nkey(pub, func(nonce []byte) ([]byte, error) { return kp.Sign(nonce) })
}

func (a *authTest) tryDevice(device string, extra ...nats.Option) (*nats.Conn, error) {
	v, ok := keysOf.Load(a.t.Name() + "/" + device)
	if !ok {
		a.t.Fatalf("device %s not enrolled", device)
	}
	opts := append([]nats.Option{nkeyOption(v.(nkeys.KeyPair)), nats.CustomInboxPrefix(callout.DeviceInboxPrefix(device)),
		nats.MaxReconnects(0), nats.Timeout(5 * time.Second)}, a.tls...)
	opts = append(opts, extra...)
	return nats.Connect(a.srv.ClientURL(), opts...)
}

// device connects as device and collects its asynchronous errors.
func (a *authTest) device(device string) (*nats.Conn, chan error) {
	errs := make(chan error, 16)
	nc, err := a.tryDevice(device, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}))
	if err != nil {
		a.t.Fatalf("device %s cannot connect: %v", device, err)
	}
	a.t.Cleanup(nc.Close)
	return nc, errs
}

func expectPermissionError(t *testing.T, errs chan error, what string) {
	t.Helper()
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("%s: got %v, want a permissions violation", what, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no permissions violation reported", what)
	}
}

func TestDeviceCannotSubscribeToAnotherDevice(t *testing.T) {
	a := newAuthTest(t, nil)
	a.enroll("dev-a")
	a.enroll("dev-b")
	nc, errs := a.device("dev-a")
	for _, subj := range []string{bridge.HeartbeatSubject("dev-b"), "vkf.dev.*.hb", "_INBOX_dev-b.>", ">", "$KV.vkf-workloads.dev-b.>",
		// Another device's kubelet sessions: neither its requests nor its answers.
		bridge.SessionSubject("dev-b"), bridge.SessionControlSubject("dev-b", "s1"), bridge.SessionDataSubject("dev-b", "s1"), "vkf.dev.*.session.>",
		// Another device's change notices and inventory requests (v7): which
		// pods it runs, when its state changes.
		bridge.DesiredSubject("dev-b"), bridge.InventoryRequestSubject("dev-b"), "_INBOX_*.desired"} {
		if _, err := nc.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
		expectPermissionError(t, errs, "subscribe "+subj)
	}
}

func TestDeviceCannotPublishAsAnotherDevice(t *testing.T) {
	a := newAuthTest(t, nil)
	a.enroll("dev-a")
	a.enroll("dev-b")
	nc, errs := a.device("dev-a")
	for _, subj := range []string{bridge.HeartbeatSubject("dev-b"), "$KV.vkf-status.dev-b.uid-1", "$KV.vkf-workloads.dev-a.uid-1", bridge.EnrollSubject,
		// Answering another device's session, or opening one.
		bridge.SessionDataSubject("dev-b", "s1"), bridge.SessionSubject("dev-b"), bridge.SessionControlSubject("dev-b", "s1"),
		// Sending another device notices or inventory requests (v7), or
		// itself: only the provider sends them.
		bridge.DesiredSubject("dev-b"), bridge.InventoryRequestSubject("dev-b"), bridge.DesiredSubject("dev-a")} {
		if err := nc.Publish(subj, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		expectPermissionError(t, errs, "publish "+subj)
	}
	// Its own subjects are fine.
	if err := nc.Publish(bridge.HeartbeatSubject("dev-a"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		t.Fatalf("own heartbeat refused: %v", err)
	default:
	}
}

func TestDeviceCannotReadAnotherDevicesKeys(t *testing.T) {
	a := newAuthTest(t, nil)
	a.enroll("dev-a")
	a.enroll("dev-b")
	ajs, _ := jetstream.New(a.admin)
	wl, _ := ajs.KeyValue(t.Context(), bridge.WorkloadsBucket)
	for _, k := range []string{bridge.PodKey("dev-a", "uid-a"), bridge.PodKey("dev-b", "uid-b")} {
		if _, err := wl.Put(t.Context(), k, []byte(`{"uid":"x"}`)); err != nil {
			t.Fatal(err)
		}
	}
	nc, _ := a.device("dev-a")
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	direct := func(key string) ([]byte, error) {
		m, err := nc.Request("$JS.API.DIRECT.GET.KV_vkf-workloads.$KV.vkf-workloads."+key, nil, 2*time.Second)
		if err != nil {
			return nil, err
		}
		if m.Header.Get("Status") != "" {
			return nil, fmt.Errorf("status %s", m.Header.Get("Status"))
		}
		return m.Data, nil
	}
	watch := func(filter string) (*nats.Subscription, chan *nats.Msg, error) {
		ch := make(chan *nats.Msg, 8)
		sub, err := js.ChanSubscribe("$KV.vkf-workloads."+filter, ch,
			nats.BindStream("KV_vkf-workloads"), nats.OrderedConsumer(), nats.DeliverLastPerSubject())
		return sub, ch, err
	}

	// Its own key: readable and watchable, the way the agent does it.
	if v, err := direct(bridge.PodKey("dev-a", "uid-a")); err != nil || string(v) != `{"uid":"x"}` {
		t.Fatalf("reading own key: %q, %v", v, err)
	}
	sub, ch, err := watch(bridge.DeviceKeys("dev-a"))
	if err != nil {
		t.Fatalf("watching own keys: %v", err)
	}
	select {
	case m := <-ch:
		if m.Subject != "$KV.vkf-workloads."+bridge.PodKey("dev-a", "uid-a") {
			t.Fatalf("own watch delivered %s", m.Subject)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("own watch delivered nothing")
	}
	sub.Unsubscribe()

	// Another device's keys: not readable, not watchable.
	if v, err := direct(bridge.PodKey("dev-b", "uid-b")); err == nil {
		t.Fatalf("read dev-b's key: %s", v)
	}
	for _, filter := range []string{bridge.DeviceKeys("dev-b"), ">"} {
		if sub, ch, err := watch(filter); err == nil {
			select {
			case m := <-ch:
				t.Fatalf("watch of %s delivered %s", filter, m.Subject)
			case <-time.After(2 * time.Second):
			}
			sub.Unsubscribe()
		}
	}
	// Nor listed, counted or named through the JetStream API: stream info
	// with a subjects filter would list every key of the fleet.
	for _, req := range []struct{ subj, body string }{
		{"$JS.API.STREAM.INFO.KV_vkf-workloads", `{"subjects_filter":">"}`},
		{"$JS.API.STREAM.INFO.KV_vkf-status", `{"subjects_filter":">"}`},
		{"$JS.API.STREAM.NAMES", `{}`},
		{"$JS.API.STREAM.LIST", `{}`},
		{"$JS.API.CONSUMER.LIST.KV_vkf-workloads", `{}`},
		{"$JS.API.STREAM.MSG.GET.KV_vkf-workloads", `{"last_by_subj":"$KV.vkf-workloads.dev-b.uid-b"}`},
		{"$JS.API.DIRECT.GET.KV_vkf-workloads", `{"last_by_subj":"$KV.vkf-workloads.dev-b.uid-b"}`},
		{"$JS.API.CONSUMER.CREATE.KV_vkf-workloads", `{"stream_name":"KV_vkf-workloads","config":{"filter_subject":">"}}`},
	} {
		m, err := nc.Request(req.subj, []byte(req.body), time.Second)
		if err == nil && (strings.Contains(string(m.Data), "dev-b") || strings.Contains(string(m.Data), "uid-b")) {
			t.Errorf("%s %s revealed another device: %s", req.subj, req.body, m.Data)
		} else if err == nil && m.Header.Get("Status") == "" && !strings.Contains(string(m.Data), `"error"`) {
			t.Errorf("%s %s answered: %s", req.subj, req.body, m.Data)
		}
	}
	// A consumer whose subject names its own keys but whose config asks for
	// every key, delivered to its own inbox: nothing of dev-b arrives.
	leak, err := nc.SubscribeSync("_INBOX_dev-a.leak")
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []string{
		`{"stream_name":"KV_vkf-workloads","config":{"filter_subject":"$KV.vkf-workloads.>","deliver_subject":"_INBOX_dev-a.leak","ack_policy":"none"}}`,
		`{"stream_name":"KV_vkf-workloads","config":{"filter_subjects":["$KV.vkf-workloads.dev-a.>","$KV.vkf-workloads.dev-b.>"],"deliver_subject":"_INBOX_dev-a.leak","ack_policy":"none"}}`,
	} {
		_, _ = nc.Request("$JS.API.CONSUMER.CREATE.KV_vkf-workloads.sneaky.$KV.vkf-workloads.dev-a.>", []byte(cfg), time.Second)
	}
	for {
		m, err := leak.NextMsg(2 * time.Second)
		if err != nil {
			break
		}
		if strings.Contains(m.Subject, "dev-b") {
			t.Fatalf("a consumer created with dev-a's credentials delivered %s", m.Subject)
		}
	}
}

// A connection whose authorization takes a few seconds (a callout working
// through a fleet reconnecting at once, a slow uplink) is admitted on its
// first attempt. nats-server pings a new client 2 s after its CONNECT, and
// a client still waiting for its PONG took that PING for an error
// ("expected 'PONG', got 'PING'") and tried again, adding to the queue it
// had waited in.
func TestSlowAuthorizationAdmitsOnTheFirstAttempt(t *testing.T) {
	a := newAuthTest(t, nil)
	a.enroll("slow")
	a.devices.mu.Lock()
	a.devices.delay = 3 * time.Second
	a.devices.mu.Unlock()
	start := time.Now()
	nc, err := a.tryDevice("slow", nats.Timeout(7*time.Second))
	if err != nil {
		t.Fatalf("a device whose authorization took %s was refused: %v", time.Since(start).Round(time.Millisecond), err)
	}
	defer nc.Close()
	if err := nc.Publish(bridge.HeartbeatSubject("slow"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatalf("the admitted connection does not work: %v", err)
	}
}

// A callout with more requests than it can answer in time drops those that
// waited longer than the server waits, rather than answer requests nobody
// waits for while the ones behind them time out too; the clients it could
// not answer connect when they try again.
func TestOverloadedCalloutDropsStaleRequests(t *testing.T) {
	a := newAuthTest(t, nil, func(c *callout.Config) { c.MaxQueueWait = 200 * time.Millisecond })
	const n = 80 // over the callout's 32 workers
	for i := range n {
		a.enroll(fmt.Sprintf("busy-%d", i))
	}
	a.devices.mu.Lock()
	a.devices.delay = 500 * time.Millisecond
	a.devices.mu.Unlock()
	dropped := func() float64 {
		return testutil.ToFloat64(metrics.CalloutDecisions.WithLabelValues("dropped", "unknown", "overloaded"))
	}
	before := dropped()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []int
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := a.tryDevice(fmt.Sprintf("busy-%d", i), nats.Timeout(15*time.Second))
			if err != nil {
				mu.Lock()
				failed = append(failed, i)
				mu.Unlock()
				return
			}
			nc.Close()
		}()
	}
	wg.Wait()
	if dropped() == before || len(failed) == 0 {
		t.Fatalf("an overloaded callout dropped %v requests, %d connections failed; want some of each", dropped()-before, len(failed))
	}
	if len(failed) == n {
		t.Fatal("every connection failed")
	}
	a.devices.mu.Lock()
	a.devices.delay = 0
	a.devices.mu.Unlock()
	for _, i := range failed {
		nc, err := a.tryDevice(fmt.Sprintf("busy-%d", i))
		if err != nil {
			t.Fatalf("busy-%d cannot connect once the callout keeps up: %v", i, err)
		}
		nc.Close()
	}
}

// connectAsync connects as device in the background and returns where the
// result arrives (the connection is closed at once).
func (a *authTest) connectAsync(device string, timeout time.Duration) <-chan error {
	res := make(chan error, 1)
	go func() {
		nc, err := a.tryDevice(device, nats.Timeout(timeout))
		if err == nil {
			nc.Close()
		}
		res <- err
	}()
	return res
}

// pollUntil checks cond every 10 ms until it holds, failing t after d.
func pollUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("no %s after %s", what, d)
		case <-tick.C:
		}
	}
}

// withGate serves TLS through a handshake gate fed by the callout, as
// vk-fleet's embedded server does.
func withGate(gate *natsd.HandshakeGate) func(*natsd.Config, *authTest) {
	return func(c *natsd.Config, a *authTest) {
		ca, err := pki.NewAuthority("gate test CA")
		if err != nil {
			a.t.Fatal(err)
		}
		if c.TLS, err = ca.ServerTLS("nats", "127.0.0.1"); err != nil {
			a.t.Fatal(err)
		}
		c.Gate = gate
		pool := x509.NewCertPool()
		pool.AddCert(ca.Certificate())
		a.tls = []nats.Option{nats.Secure(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})}
	}
}

// A fleet connecting at once goes through the server's handshake gate a
// few at a time: connections in their TLS handshake and those waiting for
// the callout stay near the gate's limit, so the callout is never handed
// more than it can answer in time, and every device connects in its turn.
func TestHandshakeGateFeedsTheCalloutInTurn(t *testing.T) {
	const limit, n = 4, 24
	gate := natsd.NewHandshakeGate(limit, 30*time.Second)
	a := newAuthTestServer(t, withGate(gate), nil, func(c *callout.Config) { c.Done = gate.Kick })
	gate.SetBusy(a.svc.Pending)
	for i := range n {
		a.enroll(fmt.Sprintf("gated-%d", i))
	}
	a.devices.mu.Lock()
	a.devices.delay = 200 * time.Millisecond
	a.devices.mostLooking = 0
	a.devices.mu.Unlock()
	waited := testutil.ToFloat64(metrics.NATSHandshakesWaited)

	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := a.tryDevice(fmt.Sprintf("gated-%d", i), nats.Timeout(30*time.Second))
			if err != nil {
				errs <- fmt.Errorf("gated-%d: %w", i, err)
				return
			}
			nc.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	a.devices.mu.Lock()
	most := a.devices.mostLooking
	a.devices.mu.Unlock()
	// A connection between its handshake and its request's arrival at
	// the callout is counted by neither: a few more than the limit may
	// be looked up at once (9 with the limit at 4, on a busy machine),
	// never the whole fleet (24 without the gate).
	if most > 3*limit {
		t.Errorf("the callout looked up %d devices at once; the gate's limit is %d", most, limit)
	}
	if testutil.ToFloat64(metrics.NATSHandshakesWaited) == waited {
		t.Error("no handshake waited for its turn")
	}
}

// stalledConn sends what the client writes and never delivers what the
// server sends: a TLS client on it sends its ClientHello and stalls.
type stalledConn struct {
	net.Conn
	stop chan struct{}
}

func (c stalledConn) Read([]byte) (int, error) {
	<-c.stop
	return 0, io.EOF
}

// An attacker that opens handshakes and stalls them (the server's TLS
// timeout closes each after 15 s) holds the gate's places only briefly:
// with the gate full of stalled handshakes, a device still connects.
func TestHandshakeGateOutlastsStalledHandshakes(t *testing.T) {
	const limit = 2
	gate := natsd.NewHandshakeGate(limit, 10*time.Second)
	a := newAuthTestServer(t, withGate(gate), nil, func(c *callout.Config) { c.Done = gate.Kick })
	gate.SetBusy(a.svc.Pending)
	a.enroll("honest")
	_, host, _ := strings.Cut(a.srv.ClientURL(), "://")
	// A stalled handshake keeps its place for 3 s: on a loaded machine the
	// device may come after that, without waiting. Such an attempt shows
	// nothing, and the scenario is played again.
	for attempt := 1; ; attempt++ {
		stop := make(chan struct{})
		for range limit {
			raw, err := net.Dial("tcp", host)
			if err != nil {
				t.Fatal(err)
			}
			// nats-server sends its INFO first, then reads the TLS handshake.
			info := make([]byte, 4096)
			if _, err := raw.Read(info); err != nil {
				t.Fatal(err)
			}
			go func() {
				defer raw.Close()
				_ = tls.Client(stalledConn{raw, stop}, &tls.Config{InsecureSkipVerify: true}).Handshake() //nolint:gosec // the attacker's side
			}()
		}
		pollUntil(t, 10*time.Second, "stalled handshakes filling the gate", func() bool { return gate.Handshaking() == limit })
		waited := testutil.ToFloat64(metrics.NATSHandshakesWaited)
		res := a.connectAsync("honest", 12*time.Second)
		var err error
		didWait := false
		pollUntil(t, 15*time.Second, "the device's handshake waiting or done", func() bool {
			didWait = didWait || testutil.ToFloat64(metrics.NATSHandshakesWaited) != waited
			select {
			case err = <-res:
				return true
			default:
				return false
			}
		})
		close(stop)
		if err != nil {
			t.Fatalf("a device behind %d stalled handshakes: %v", limit, err)
		}
		if didWait {
			return
		}
		if attempt == 3 {
			t.Fatal("the device never came while the stalled handshakes held the gate")
		}
		t.Logf("attempt %d: the stalled handshakes' places were free before the device came; again", attempt)
		pollUntil(t, 10*time.Second, "the gate empty", func() bool { return gate.Handshaking() == 0 })
	}
}

// A handshake that waits longer than the gate allows is refused before any
// cryptography, and the device connects when it tries again.
func TestHandshakeGateRefusesALongWait(t *testing.T) {
	gate := natsd.NewHandshakeGate(1, 100*time.Millisecond)
	a := newAuthTestServer(t, withGate(gate), nil, func(c *callout.Config) { c.Done = gate.Kick })
	gate.SetBusy(a.svc.Pending)
	a.enroll("slow")
	a.enroll("next")
	a.devices.mu.Lock()
	a.devices.delay = 2 * time.Second
	a.devices.mu.Unlock()
	refused := testutil.ToFloat64(metrics.NATSHandshakesRefused)

	slow := a.connectAsync("slow", 10*time.Second)
	// Once the slow device's request is with the callout, the gate is
	// full.
	pollUntil(t, 10*time.Second, "the slow device's request at the callout", func() bool { return a.svc.Pending() > 0 })
	if _, err := a.tryDevice("next", nats.Timeout(5*time.Second)); err == nil {
		t.Fatal("a handshake got through a full gate")
	}
	if testutil.ToFloat64(metrics.NATSHandshakesRefused) == refused {
		t.Error("the refusal was not counted")
	}
	if err := <-slow; err != nil {
		t.Fatalf("the device the callout was answering: %v", err)
	}
	a.devices.mu.Lock()
	a.devices.delay = 0
	a.devices.mu.Unlock()
	nc, err := a.tryDevice("next")
	if err != nil {
		t.Fatalf("a device refused by the gate cannot connect once it has room: %v", err)
	}
	nc.Close()
}

func TestEnrollmentTokenCanOnlyEnroll(t *testing.T) {
	a := newAuthTest(t, nil)
	errs := make(chan error, 16)
	nc, err := nats.Connect(a.srv.ClientURL(), nats.Token(enrollToken), nats.CustomInboxPrefix(callout.EnrollInboxPrefix),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatalf("enrollment token refused: %v", err)
	}
	t.Cleanup(nc.Close)
	// The enrollment request reaches the provider...
	sub, _ := a.admin.SubscribeSync(bridge.EnrollSubject)
	_ = a.admin.Flush()
	if err := nc.Publish(bridge.EnrollSubject, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("enrollment request not delivered: %v", err)
	}
	// ...and nothing else is allowed.
	for _, subj := range []string{bridge.HeartbeatSubject("dev-a"), "$KV.vkf-status.dev-a.x", "$JS.API.STREAM.INFO.KV_vkf-workloads"} {
		_ = nc.Publish(subj, nil)
		expectPermissionError(t, errs, "enrollment publish "+subj)
	}
	for _, subj := range []string{">", "vkf.dev.*.hb", "_INBOX.>"} {
		_, _ = nc.SubscribeSync(subj)
		expectPermissionError(t, errs, "enrollment subscribe "+subj)
	}
}

func TestWrongTokenIsRefused(t *testing.T) {
	a := newAuthTest(t, nil)
	for _, tok := range []string{"abcdef.ffffffffffffffff", "garbage", ""} {
		if nc, err := nats.Connect(a.srv.ClientURL(), nats.Token(tok), nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Errorf("token %q accepted", tok)
		}
	}
	if nc, err := nats.Connect(a.srv.ClientURL(), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("anonymous connection accepted")
	}
}

func TestForgedNKeySignatureIsRefused(t *testing.T) {
	a := newAuthTest(t, nil)
	victim := a.enroll("dev-a")
	pub, _ := victim.PublicKey()
	attacker, _ := nkeys.CreateUser()
	nc, err := nats.Connect(a.srv.ClientURL(), nats.MaxReconnects(0),
		nats.Nkey(pub, func(nonce []byte) ([]byte, error) { return attacker.Sign(nonce) }))
	if err == nil {
		nc.Close()
		t.Fatal("a connection claiming dev-a's key with a forged signature was accepted")
	}
	// An unregistered key with a valid signature is refused too.
	stranger, _ := nkeys.CreateUser()
	if nc, err := nats.Connect(a.srv.ClientURL(), nats.MaxReconnects(0), nkeyOption(stranger)); err == nil {
		nc.Close()
		t.Fatal("an unregistered nkey was accepted")
	}
}

func TestRevokedDeviceIsKickedAndRefused(t *testing.T) {
	a := newAuthTest(t, nil)
	a.enroll("dev-a")
	closed := make(chan struct{})
	nc, err := a.tryDevice("dev-a", nats.ClosedHandler(func(*nats.Conn) { close(closed) }), nats.MaxReconnects(3), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	start := time.Now()
	a.revoke("dev-a")
	if n := a.svc.Kick(t.Context(), kicker{a.srv}, "dev-a"); n != 1 {
		t.Fatalf("kicked %d connections, want 1", n)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("revoked device still connected after 5s")
	}
	t.Logf("revoked device cut off after %s", time.Since(start).Round(time.Millisecond))
	if nc, err := a.tryDevice("dev-a"); err == nil {
		nc.Close()
		t.Fatal("revoked device reconnected")
	}
}

type kicker struct{ s *natsd.Server }

func (k kicker) Kick(_ context.Context, _ string, cid uint64) error { return k.s.DisconnectClient(cid) }

func TestCalloutDownFailsClosed(t *testing.T) {
	a := newAuthTest(t, nil)
	a.enroll("dev-a")
	a.enroll("dev-b")
	existing, errs := a.device("dev-a")
	a.stop() // the callout service goes away
	a.calloutC.Close()
	if nc, err := a.tryDevice("dev-b"); err == nil {
		nc.Close()
		t.Fatal("a new connection was accepted while the callout is down")
	}
	// The existing connection carries on.
	sub, _ := a.admin.SubscribeSync(bridge.HeartbeatSubject("dev-a"))
	_ = a.admin.Flush()
	if err := existing.Publish(bridge.HeartbeatSubject("dev-a"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("existing connection stopped working: %v", err)
	}
	select {
	case err := <-errs:
		t.Fatalf("existing connection got an error: %v", err)
	default:
	}
}

func TestZitadelDeviceAndDeactivatedUser(t *testing.T) {
	z := zitadeltest.New(t)
	intro, err := zitadel.NewIntrospector(t.Context(), zitadel.IntrospectorConfig{
		Issuer: z.Issuer, ClientID: z.APIClientID, ClientSecret: z.APIClientSecret, Insecure: true, CacheTTL: -1, NegativeCacheTTL: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	a := newAuthTest(t, intro)
	userID, keyJSON := z.AddMachineUser(t, "dev-z")
	a.devices.mu.Lock()
	a.devices.byUser[userID] = "dev-z"
	a.devices.mu.Unlock()
	ts, err := devicetoken.NewTokenSource(t.Context(), z.Issuer, keyJSON, devicetoken.WithInsecure(), devicetoken.WithProjectID(z.ProjectID))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(a.srv.ClientURL(), nats.Token(tok), nats.MaxReconnects(0), nats.CustomInboxPrefix(callout.DeviceInboxPrefix("dev-z")))
	if err != nil {
		t.Fatalf("zitadel device refused: %v", err)
	}
	nc.Close()
	z.Deactivate(t, userID)
	if nc, err := nats.Connect(a.srv.ClientURL(), nats.Token(tok), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("token of a deactivated machine user accepted")
	}
	if strings.Contains(a.logs.String(), tok) {
		t.Fatal("the callout logged a zitadel token")
	}
}

func TestSecretsStayOutOfCalloutLogs(t *testing.T) {
	a := newAuthTest(t, nil)
	kp := a.enroll("dev-a")
	nc, _ := a.device("dev-a")
	nc.Close()
	_, _ = nats.Connect(a.srv.ClientURL(), nats.Token("abcdef.ffffffffffffffff"), nats.MaxReconnects(0))
	if c, err := nats.Connect(a.srv.ClientURL(), nats.Token(enrollToken)); err == nil {
		c.Close()
	}
	seed, _ := kp.Seed()
	logs := a.logs.String()
	for _, secret := range []string{string(seed), "0123456789abcdef", "ffffffffffffffff"} {
		if strings.Contains(logs, secret) {
			t.Errorf("callout log contains a secret (%.8s…)", secret)
		}
	}
	if !strings.Contains(logs, "connection refused") || !strings.Contains(logs, "connection authorized") {
		t.Errorf("callout log lacks its decisions:\n%s", logs)
	}
}

// serverConns inspects and disconnects the test server's clients.
type serverConns struct{ s *natsd.Server }

func (c serverConns) Conn(serverID string, cid uint64) (string, time.Time, bool) {
	cz, err := c.s.Inner().Connz(&server.ConnzOptions{CID: cid})
	if err != nil || len(cz.Conns) == 0 {
		return "", time.Time{}, false
	}
	return cz.Conns[0].Name, cz.Conns[0].LastActivity, true
}

func (c serverConns) Kick(_ context.Context, _ string, cid uint64) error {
	return c.s.DisconnectClient(cid)
}

// A second machine with a device's identity (a cloned SD card) is refused
// while the first is connected and alive, so the device's pods never run
// on two machines at once; the same agent reconnecting is let in, and its
// old connection closed.
func TestASecondMachineWithTheSameIdentityIsRefused(t *testing.T) {
	a := newAuthTest(t, nil)
	a.enroll("dev-a")
	first, err := a.tryDevice("dev-a", nats.Name("vk-fleet device-agent dev-a"+bridge.InstanceTag+"boot-1"))
	if err != nil {
		t.Fatalf("first machine: %v", err)
	}
	t.Cleanup(first.Close)
	if err := first.Publish(bridge.HeartbeatSubject("dev-a"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	first.Flush()

	if nc, err := a.tryDevice("dev-a", nats.Name("vk-fleet device-agent dev-a"+bridge.InstanceTag+"boot-2")); err == nil {
		nc.Close()
		t.Fatal("a second machine with dev-a's identity connected while the first is active")
	}
	if !strings.Contains(a.logs.String(), "connected from another machine") {
		t.Errorf("the refusal is not logged with its reason:\n%s", a.logs.String())
	}

	closed := make(chan struct{})
	first.SetClosedHandler(func(*nats.Conn) { close(closed) })
	again, err := a.tryDevice("dev-a", nats.Name("vk-fleet device-agent dev-a"+bridge.InstanceTag+"boot-1"))
	if err != nil {
		t.Fatalf("the same agent reconnecting: %v", err)
	}
	t.Cleanup(again.Close)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Error("the agent's previous connection was not closed when it reconnected")
	}
}
