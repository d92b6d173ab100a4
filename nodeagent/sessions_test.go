package nodeagent_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent/simruntime"
)

// A device never sends more than the provider granted: a reader that does
// not read holds the device at InitialCredit frames; granting more lets
// the rest through, in order, ending with EOF.
func TestLogSessionsAreFlowControlled(t *testing.T) {
	f := startFleet(t, t.TempDir())
	log := bytes.Repeat([]byte("0123456789abcdef"), bridge.MaxFrameBytes/16*(bridge.InitialCredit+8)/1) // InitialCredit+8 full frames
	rt := &simruntime.Runtime{Log: log}
	startAgent(t, f.srv.ClientURL(), "dev-a", t.TempDir(), rt)
	putWorkload(t, f, "dev-a", workload("u1", bridge.RestartAlways))
	waitStatus(t, f, "dev-a", "u1", running)

	frames := make(chan *nats.Msg, 64)
	sub, err := f.nc.ChanSubscribe(bridge.SessionDataSubject("dev-a", "s1"), frames)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	req, _ := bridge.Encode(&bridge.SessionRequest{Session: "s1", PodUID: "u1", Container: "main"})
	if err := f.nc.Publish(bridge.SessionSubject("dev-a"), req); err != nil {
		t.Fatal(err)
	}
	var got []byte
	var seq uint64
	take := func(n int) {
		t.Helper()
		for range n {
			select {
			case m := <-frames:
				fr, err := bridge.Decode[bridge.StreamFrame](m.Data)
				if err != nil || fr.Seq != seq || fr.Error != "" {
					t.Fatalf("frame %d: %+v, %v", seq, fr, err)
				}
				seq++
				got = append(got, fr.Data...)
			case <-time.After(10 * time.Second):
				t.Fatalf("frame %d did not arrive", seq)
			}
		}
	}
	take(bridge.InitialCredit)
	select {
	case m := <-frames:
		t.Fatalf("a frame beyond the credit arrived: %d bytes", len(m.Data))
	case <-time.After(500 * time.Millisecond): // a window for a frame that must not come
	}
	grant, _ := bridge.Encode(&bridge.SessionControl{Credit: 100})
	if err := f.nc.Publish(bridge.SessionControlSubject("dev-a", "s1"), grant); err != nil {
		t.Fatal(err)
	}
	take(8 + 1) // the rest, then EOF
	if !bytes.Equal(got, log) {
		t.Fatalf("got %d bytes, want the %d of the log", len(got), len(log))
	}
}
