package main

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

func TestReconnectDelayBacksOffWithJitter(t *testing.T) {
	for attempt, want := range map[int][2]time.Duration{
		0: {time.Second, 2 * time.Second}, 1: {time.Second, 2 * time.Second},
		2: {2 * time.Second, 4 * time.Second}, 3: {4 * time.Second, 8 * time.Second},
		5: {15 * time.Second, 30 * time.Second}, 6: {15 * time.Second, 30 * time.Second},
		1000: {15 * time.Second, 30 * time.Second},
	} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := reconnectDelay(attempt)
			if d < want[0] || d > want[1] {
				t.Fatalf("attempt %d: delay %v, want within [%v, %v]", attempt, d, want[0], want[1])
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("attempt %d: %d distinct delays in 200: no jitter", attempt, len(seen))
		}
	}
}

// refuseFirst refuses the first n connections, then lets every one in.
type refuseFirst struct {
	mu sync.Mutex
	n  int
}

func (r *refuseFirst) Check(server.ClientAuthentication) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n > 0 {
		r.n--
		return false
	}
	return true
}

// TestDeviceKeepsTryingWhenRefused: nats.go closes a connection for good
// once a server refuses the same credentials twice in a row; a device
// refused a few times (its enrollment not yet seen by the callout, vk-fleet
// starting) must connect once it is let in.
func TestDeviceKeepsTryingWhenRefused(t *testing.T) {
	auth := &refuseFirst{n: 5}
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		CustomClientAuthentication: auth})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	connected := make(chan struct{}, 1)
	opts := append(deviceNATSOptions("test device", "_INBOX_test"),
		// The test's own pace; the back-off is tested above.
		nats.CustomReconnectDelay(func(int) time.Duration { return 10 * time.Millisecond }),
		nats.ConnectHandler(func(*nats.Conn) { connected <- struct{}{} }),
		nats.ReconnectHandler(func(*nats.Conn) { connected <- struct{}{} }))
	nc, err := nats.Connect(srv.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	select {
	case <-connected:
	case <-time.After(30 * time.Second):
		t.Fatalf("not connected after 5 refusals: status %v, last error %v", nc.Status(), nc.LastError())
	}
	if !nc.IsConnected() {
		t.Fatalf("status %v", nc.Status())
	}
}
