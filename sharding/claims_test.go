package sharding

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/vk-fleet/vk-fleet/internal/natsd"
)

func startSharder(t *testing.T, cs *fake.Clientset) (*Sharder, *natsd.Server, *atomic.Int32) {
	t.Helper()
	srv, err := natsd.Start(t.Context(), natsd.Config{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	s, err := New(Config{ID: "r0", Client: cs, JetStream: js, Slots: 8,
		RenewInterval: 100 * time.Millisecond, ClaimTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	changes := &atomic.Int32{}
	s.OnChange(func() { changes.Add(1) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, 10*time.Second, func() bool { return len(s.OwnedSlots()) == 8 }, func() string {
		return fmt.Sprintf("owned slots = %v, want all 8", s.OwnedSlots())
	})
	return s, srv, changes
}

// A Kubernetes API server that stops answering must not stop the claims
// from being renewed: the replica keeps serving its devices.
func TestClaimsOutliveAHangingAPIServer(t *testing.T) {
	cs := fake.NewClientset()
	var hang atomic.Bool
	block := make(chan struct{})
	cs.PrependReactor("*", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if hang.Load() {
			<-block
		}
		return false, nil, nil
	})
	s, _, _ := startSharder(t, cs)
	t.Cleanup(func() { close(block) }) // runs before the sharder's own clean-up
	hang.Store(true)
	// Longer than the claims live: only renewals keep them.
	// Longer than the claims live: after ClaimTTL only renewals can keep
	// them, so the condition must hold all through the window.
	window := time.After(3 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if len(s.OwnedSlots()) != 8 || !s.Owns("any-device") {
			t.Fatalf("slots lost while the API server hangs: %v", s.OwnedSlots())
		}
		select {
		case <-window:
			return
		case <-tick.C:
		}
	}
}

// When claims cannot be renewed (NATS gone), the replica gives its slots
// up — and says so with OnChange — before they expire for the others.
func TestUnrenewedClaimsAreGivenUpWithNotice(t *testing.T) {
	s, srv, changes := startSharder(t, fake.NewClientset())
	before := changes.Load()
	srv.Shutdown()
	// Within ClaimTTL: by then another replica may claim the slots.
	waitFor(t, 2*time.Second, func() bool { return len(s.OwnedSlots()) == 0 && changes.Load() != before }, func() string {
		return fmt.Sprintf("after NATS went away: owned %v, OnChange calls %d → %d", s.OwnedSlots(), before, changes.Load())
	})
}

// waitFor polls cond until it holds, failing t with what() after timeout.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for !cond() {
		select {
		case <-deadline:
			t.Fatal(what())
		case <-tick.C:
		}
	}
}
