package provider

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// everyDevice is a registry in which every device is enrolled.
type everyDevice struct{}

func (everyDevice) Has(string) bool       { return true }
func (everyDevice) OnDelete(func(string)) {}
func heartbeat(t *testing.T, device string, cpus int) *nats.Msg {
	t.Helper()
	data, err := bridge.Encode(&bridge.Heartbeat{Device: device, Inventory: bridge.Inventory{CPUs: cpus, MemoryBytes: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	return &nats.Msg{Subject: bridge.HeartbeatSubject(device), Data: data}
}

// One device whose Node cannot be written (its NodeController's run ends
// with an error) must not stop the heartbeats of every other device: they
// all arrive on one subscription.
func TestAStuckNodeDoesNotStopHeartbeats(t *testing.T) {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.(k8stesting.CreateAction).GetObject().(*corev1.Node).Name == "dev-stuck" {
			return true, nil, errors.New("the API server refuses this node")
		}
		return false, nil, nil
	})
	p, err := New(Config{Client: cs, NATS: &nats.Conn{}, Registry: everyDevice{}, PingInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)

	handled := make(chan struct{})
	go func() {
		defer close(handled)
		// Each heartbeat changes the inventory, so each pushes the Node.
		for i := 1; i <= 20; i++ {
			p.handleHeartbeat(ctx, heartbeat(t, "dev-stuck", i))
			time.Sleep(10 * time.Millisecond) // let the failing run end between heartbeats
			p.handleHeartbeat(ctx, heartbeat(t, "dev-ok", i))
		}
	}()
	select {
	case <-handled:
	case <-time.After(30 * time.Second):
		t.Fatal("heartbeat handling blocked behind a device whose Node cannot be written")
	}
}
