package nodeagent_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent/simruntime"
)

// A device sends its inventory in every heartbeat until the provider says
// it speaks protocol 7; then only when asked (or when it changes), and
// quiet heartbeats in between.
func TestHeartbeatsGoQuietForAProtocol7Provider(t *testing.T) {
	f := startFleet(t, t.TempDir())
	hbs := make(chan *bridge.Heartbeat, 100)
	if _, err := f.nc.Subscribe(bridge.HeartbeatSubject("dev-q"), func(m *nats.Msg) {
		if hb, err := bridge.Decode[bridge.Heartbeat](m.Data); err == nil {
			select {
			case hbs <- hb:
			default:
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	startAgent(t, f.srv.ClientURL(), "dev-q", t.TempDir(), &simruntime.Runtime{})
	next := func() *bridge.Heartbeat {
		t.Helper()
		select {
		case hb := <-hbs:
			return hb
		case <-time.After(15 * time.Second):
			t.Fatal("no heartbeat")
			return nil
		}
	}
	// An older provider (no index, or one without providerProtocol).
	var state string
	for range 3 {
		hb := next()
		if !hb.Full() || hb.State == "" || hb.State != bridge.StateHash(hb) {
			t.Fatalf("heartbeat for an old provider not full: %+v", hb)
		}
		state = hb.State
	}
	putIndex := func(protocol int) {
		data, _ := bridge.Encode(&bridge.DesiredIndex{Device: "dev-q", PodUIDs: []string{}, WrittenAt: time.Now(), ProviderProtocol: protocol})
		if _, err := f.workloads.Put(t.Context(), bridge.IndexKey("dev-q"), data); err != nil {
			t.Fatal(err)
		}
	}
	putIndex(7)
	deadline := time.Now().Add(15 * time.Second)
	for quiet := 0; quiet < 3; {
		if time.Now().After(deadline) {
			t.Fatal("heartbeats never went quiet for a protocol 7 provider")
		}
		hb := next()
		if hb.Full() {
			state = hb.State
			continue
		}
		if hb.State != state || hb.Seq == 0 {
			t.Fatalf("quiet heartbeat %+v, last full state %q", hb, state)
		}
		quiet++
	}
	// Asked, the device sends its state in full at once.
	if err := f.nc.Publish(bridge.InventoryRequestSubject("dev-q"), nil); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(15 * time.Second)
	for hb := next(); !hb.Full(); hb = next() {
		if time.Now().After(deadline) {
			t.Fatal("the device did not answer an inventory request")
		}
	}
}

// Against a protocol 7 provider a device keeps no JetStream consumer: it
// reads what the provider's notices name, and the pods a new index lists
// even when their own notices were lost.
func TestAgentFollowsAProtocol7ProviderWithoutAConsumer(t *testing.T) {
	f := startFleet(t, t.TempDir())
	const dev = "dev-f"
	putIndex := func(uids ...string) {
		t.Helper()
		data, _ := bridge.Encode(&bridge.DesiredIndex{Device: dev, PodUIDs: append([]string{}, uids...), WrittenAt: time.Now(), ProviderProtocol: bridge.ProtocolVersion})
		if _, err := f.workloads.Put(t.Context(), bridge.IndexKey(dev), data); err != nil {
			t.Fatal(err)
		}
	}
	tell := func(key string) {
		t.Helper()
		if err := f.nc.Publish(bridge.DesiredSubject(dev), []byte(key)); err != nil {
			t.Fatal(err)
		}
	}
	putIndex()
	rt := &simruntime.Runtime{}
	startAgent(t, f.srv.ClientURL(), dev, t.TempDir(), rt)

	// The agent subscribes before it reads; tell until it has the pod.
	putWorkload(t, f, dev, workload("u1", bridge.RestartAlways, "sleep", "3600"))
	putIndex("u1")
	waitStatus(t, f, dev, "u1", func(s *bridge.PodStatus) bool {
		tell(bridge.PodKey(dev, "u1"))
		return running(s)
	})
	js, err := f.nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	info, err := js.StreamInfo("KV_" + bridge.WorkloadsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers != 0 {
		t.Errorf("the device keeps %d consumers on the workloads stream", info.State.Consumers)
	}

	// A pod whose own notice was lost arrives with the index that lists it.
	putWorkload(t, f, dev, workload("u2", bridge.RestartAlways, "sleep", "3600"))
	putIndex("u1", "u2")
	tell(bridge.IndexKey(dev))
	waitStatus(t, f, dev, "u2", running)

	// Withdrawn: removed.
	if err := f.workloads.Delete(t.Context(), bridge.PodKey(dev, "u1")); err != nil {
		t.Fatal(err)
	}
	tell(bridge.PodKey(dev, "u1"))
	waitStatus(t, f, dev, "u1", func(s *bridge.PodStatus) bool { return s == nil })
	if rt.Created() != 2 {
		t.Errorf("created %d pods, want 2", rt.Created())
	}
}

// A device just enrolled reads its keys before the provider has written its
// index (it does when it first hears from the device, and says so): the
// device waits for it without creating a JetStream consumer.
func TestANewDeviceWaitsForItsIndexWithoutAConsumer(t *testing.T) {
	f := startFleet(t, t.TempDir())
	const dev = "dev-new"
	hb, err := f.nc.SubscribeSync(bridge.HeartbeatSubject(dev))
	if err != nil {
		t.Fatal(err)
	}
	created, err := f.nc.SubscribeSync("$JS.EVENT.ADVISORY.CONSUMER.CREATED.>")
	if err != nil {
		t.Fatal(err)
	}
	rt := &simruntime.Runtime{}
	startAgent(t, f.srv.ClientURL(), dev, t.TempDir(), rt)
	if _, err := hb.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("no heartbeat: %v", err)
	}
	// The provider, hearing from the device, writes its index and tells it;
	// then a pod arrives.
	data, _ := bridge.Encode(&bridge.DesiredIndex{Device: dev, PodUIDs: []string{}, WrittenAt: time.Now(), ProviderProtocol: bridge.ProtocolVersion})
	if _, err := f.workloads.Put(t.Context(), bridge.IndexKey(dev), data); err != nil {
		t.Fatal(err)
	}
	if err := f.nc.Publish(bridge.DesiredSubject(dev), []byte(bridge.IndexKey(dev))); err != nil {
		t.Fatal(err)
	}
	putWorkload(t, f, dev, workload("u1", bridge.RestartAlways, "sleep", "3600"))
	data, _ = bridge.Encode(&bridge.DesiredIndex{Device: dev, PodUIDs: []string{"u1"}, WrittenAt: time.Now(), ProviderProtocol: bridge.ProtocolVersion})
	if _, err := f.workloads.Put(t.Context(), bridge.IndexKey(dev), data); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, f, dev, "u1", func(s *bridge.PodStatus) bool {
		_ = f.nc.Publish(bridge.DesiredSubject(dev), []byte(bridge.IndexKey(dev)))
		return running(s)
	})
	if err := f.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := created.Pending(); n != 0 {
		m, _ := created.NextMsg(time.Second)
		t.Errorf("a new device created %d JetStream consumers while it waited for its index: %s", n, m.Data)
	}
}
