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
				fr, err := bridge.DecodeStreamFrame(m.Data)
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

// rawSession plays the provider's side of one session over NATS.
type rawSession struct {
	t      *testing.T
	nc     *nats.Conn
	device string
	id     string
	frames chan *nats.Msg
	credit int
	inSeq  uint64
	want   uint64
}

func openRaw(t *testing.T, nc *nats.Conn, device string, req bridge.SessionRequest) *rawSession {
	t.Helper()
	s := &rawSession{t: t, nc: nc, device: device, id: req.Session, frames: make(chan *nats.Msg, 256)}
	sub, err := nc.ChanSubscribe(bridge.SessionDataSubject(device, req.Session), s.frames)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	req.Version = bridge.ProtocolVersion
	data, _ := bridge.Encode(&req)
	if err := nc.Publish(bridge.SessionSubject(device), data); err != nil {
		t.Fatal(err)
	}
	return s
}

// frame returns the next frame, applying credit grants.
func (s *rawSession) frame() *bridge.StreamFrame {
	s.t.Helper()
	for {
		select {
		case m := <-s.frames:
			f, err := bridge.DecodeStreamFrame(m.Data)
			if err != nil {
				s.t.Fatal(err)
			}
			if !f.Numbered() {
				s.credit += f.Credit
				return f
			}
			if f.Seq != s.want {
				s.t.Fatalf("frame %d arrived where %d was due", f.Seq, s.want)
			}
			s.want++
			return f
		case <-time.After(10 * time.Second):
			s.t.Fatal("no frame from the device")
		}
	}
}

func (s *rawSession) send(c bridge.SessionControl) {
	s.t.Helper()
	if len(c.Data) > 0 || c.EOF {
		c.Seq = s.inSeq
		s.inSeq++
		s.credit--
	}
	data, _ := bridge.EncodeSessionControl(&c, true)
	if err := s.nc.Publish(bridge.SessionControlSubject(s.device, s.id), data); err != nil {
		s.t.Fatal(err)
	}
}

// Exec input is flow-controlled too: the device grants credit before the
// provider may send, grants more as it consumes, and the output comes
// back in order with the exit code.
func TestExecSessionsCarryInputWithinCredit(t *testing.T) {
	f := startFleet(t, t.TempDir())
	rt := &simruntime.Runtime{}
	startAgent(t, f.srv.ClientURL(), "dev-a", t.TempDir(), rt)
	putWorkload(t, f, "dev-a", workload("u1", bridge.RestartAlways))
	waitStatus(t, f, "dev-a", "u1", running)

	s := openRaw(t, f.nc, "dev-a", bridge.SessionRequest{Session: "e1", Kind: bridge.SessionExec, PodUID: "u1", Container: "main",
		Command: []string{"cat"}, Stdin: true, Stdout: true})
	var want, got []byte
	for i := range 3 * bridge.InitialCredit {
		for s.credit <= 0 {
			if fr := s.frame(); len(fr.Data) > 0 {
				got = append(got, fr.Data...)
			}
		}
		chunk := bytes.Repeat([]byte{byte('a' + i%26)}, 1000)
		want = append(want, chunk...)
		s.send(bridge.SessionControl{Data: chunk, Credit: 1})
	}
	for s.credit <= 0 {
		if fr := s.frame(); len(fr.Data) > 0 {
			got = append(got, fr.Data...)
		}
	}
	s.send(bridge.SessionControl{EOF: true})
	for {
		fr := s.frame()
		got = append(got, fr.Data...)
		if fr.EOF {
			if fr.Exit == nil || *fr.Exit != 0 || fr.Error != "" {
				t.Fatalf("last frame %+v, want exit 0", fr)
			}
			break
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("cat returned %d bytes, want the %d sent", len(got), len(want))
	}

	s = openRaw(t, f.nc, "dev-a", bridge.SessionRequest{Session: "e2", Kind: bridge.SessionExec, PodUID: "u1", Container: "main",
		Command: []string{"exit", "7"}, Stdout: true})
	fr := s.frame()
	for !fr.Numbered() {
		fr = s.frame()
	}
	if !fr.EOF || fr.Exit == nil || *fr.Exit != 7 {
		t.Fatalf("exit 7: last frame %+v", fr)
	}
}

// A message for a session the device does not know (its agent restarted)
// is answered with Gone, so the provider does not wait forever.
func TestUnknownSessionsAreGone(t *testing.T) {
	f := startFleet(t, t.TempDir())
	startAgent(t, f.srv.ClientURL(), "dev-a", t.TempDir(), &simruntime.Runtime{})
	s := &rawSession{t: t, nc: f.nc, device: "dev-a", id: "lost", frames: make(chan *nats.Msg, 8)}
	sub, err := f.nc.ChanSubscribe(bridge.SessionDataSubject("dev-a", "lost"), s.frames)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.send(bridge.SessionControl{}) // a keepalive; the agent may still be subscribing
		select {
		case m := <-s.frames:
			fr, _ := bridge.DecodeStreamFrame(m.Data)
			if fr == nil || fr.Code != bridge.CodeSessionGone {
				t.Fatalf("answer %+v, want Gone", fr)
			}
			return
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no answer for an unknown session")
		}
	}
}
