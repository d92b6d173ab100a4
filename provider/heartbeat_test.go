package provider

import (
	"context"
	"errors"
	"fmt"
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

	// The stuck device's first NodeController run fails to create its Node.
	p.handleHeartbeat(ctx, heartbeat(t, "dev-stuck", 1))
	attempted := func() bool {
		for _, a := range cs.Actions() {
			if c, ok := a.(k8stesting.CreateAction); ok && a.GetResource().Resource == "nodes" {
				if n, ok := c.GetObject().(*corev1.Node); ok && n.Name == "dev-stuck" {
					return true
				}
			}
		}
		return false
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.After(10 * time.Second); !attempted(); {
		select {
		case <-deadline:
			t.Fatal("the stuck device's Node was never attempted")
		case <-tick.C:
		}
	}
	handled := make(chan struct{})
	go func() {
		defer close(handled)
		// Each heartbeat changes the inventory, so each pushes the Node.
		for i := 2; i <= 20; i++ {
			p.handleHeartbeat(ctx, heartbeat(t, "dev-stuck", i))
			p.handleHeartbeat(ctx, heartbeat(t, "dev-ok", i))
		}
	}()
	select {
	case <-handled:
	case <-time.After(30 * time.Second):
		t.Fatal("heartbeat handling blocked behind a device whose Node cannot be written")
	}
}

// One device cannot make the provider hold statuses without bound.
func TestStatusesPerDeviceAreBounded(t *testing.T) {
	p := testProvider(t)
	st := &bridge.PodStatus{Phase: bridge.PhaseRunning}
	for i := range maxStatusesPerDevice {
		if !p.putStatus(bridge.PodKey("greedy", fmt.Sprint(i)), "greedy", st) {
			t.Fatalf("status %d refused below the limit", i)
		}
	}
	if p.putStatus(bridge.PodKey("greedy", "one-more"), "greedy", st) {
		t.Fatal("a status over the limit was accepted")
	}
	if !p.putStatus(bridge.PodKey("greedy", "0"), "greedy", st) {
		t.Fatal("an update of a known status was refused")
	}
	if !p.putStatus(bridge.PodKey("modest", "0"), "modest", st) {
		t.Fatal("another device was refused because of the greedy one")
	}
	p.deleteStatus(bridge.PodKey("greedy", "0"), "greedy")
	if !p.putStatus(bridge.PodKey("greedy", "one-more"), "greedy", st) {
		t.Fatal("a status refused after the device dropped one")
	}
}
