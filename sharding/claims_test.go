package sharding

import (
	"context"
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
	deadline := time.Now().Add(10 * time.Second)
	for len(s.OwnedSlots()) != 8 {
		if time.Now().After(deadline) {
			t.Fatalf("owned slots = %v, want all 8", s.OwnedSlots())
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	end := time.Now().Add(3 * time.Second)
	for time.Now().Before(end) {
		if len(s.OwnedSlots()) != 8 || !s.Owns("any-device") {
			t.Fatalf("slots lost while the API server hangs: %v", s.OwnedSlots())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// When claims cannot be renewed (NATS gone), the replica gives its slots
// up — and says so with OnChange — before they expire for the others.
func TestUnrenewedClaimsAreGivenUpWithNotice(t *testing.T) {
	s, srv, changes := startSharder(t, fake.NewClientset())
	before := changes.Load()
	srv.Shutdown()
	deadline := time.Now().Add(2 * time.Second) // ClaimTTL: by then another replica may claim
	for len(s.OwnedSlots()) != 0 || changes.Load() == before {
		if time.Now().After(deadline) {
			t.Fatalf("after NATS went away: owned %v, OnChange calls %d → %d", s.OwnedSlots(), before, changes.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
