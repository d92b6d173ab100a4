package provider

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// sessionOpenTimeout bounds the wait for a device's first frame.
const sessionOpenTimeout = 15 * time.Second

// errSessionGone is a device's answer for a session it does not know (its
// agent restarted).
var errSessionGone = errors.New("the device lost the session (its agent restarted?)")

func newSessionID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// podTarget returns the device and UID of the pod namespace/name, and the
// container to use when none is named and the pod has one.
func (p *Provider) podTarget(namespace, name, container string) (device, uid, ctr string, err error) {
	p.mu.Lock()
	ent := p.pods.byKey[podKey(namespace, name)]
	if ent != nil && ent.pod != nil {
		device, uid = ent.pod.Spec.NodeName, string(ent.pod.UID)
		if container == "" && len(ent.pod.Spec.Containers) == 1 {
			container = ent.pod.Spec.Containers[0].Name
		}
	}
	p.mu.Unlock()
	if device == "" {
		return "", "", "", errdefs.NotFoundf("pod %s/%s is not served by vk-fleet", namespace, name)
	}
	if !p.deviceFresh(device) {
		return "", "", "", fmt.Errorf("device %s is offline", device)
	}
	return device, uid, container, nil
}

// deviceProtocol returns the protocol version device last reported.
func (p *Provider) deviceProtocol(device string) int {
	p.mu.Lock()
	d := p.devices[device]
	p.mu.Unlock()
	if d == nil {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.hb == nil {
		return 0
	}
	return d.hb.Inventory.ProtocolVersion
}

// needProtocol fails when device speaks a protocol older than v.
func (p *Provider) needProtocol(device string, v int, what string) error {
	if got := p.deviceProtocol(device); got < v {
		return errdefs.InvalidInputf("device %s runs an agent too old for %s (protocol %d, needs %d): upgrade its device-agent", device, what, got, v)
	}
	return nil
}

// session is the provider's end of a kubelet API session with a device: it
// reads the device's frames in order, granting credit as it goes, and
// sends input within the credit the device grants.
type session struct {
	// ctx is the kubelet API request's: when the client goes away, a read
	// waiting for the device returns and the session is cancelled.
	ctx    context.Context
	p      *Provider
	device string
	id     string
	sub    *nats.Subscription
	frames chan *nats.Msg
	done   chan struct{}

	want     uint64
	consumed int
	eof      bool
	first    *bridge.StreamFrame

	closeOnce sync.Once

	inMu     sync.Mutex // orders numbering and publishing of input
	inCredit *bridge.Credit
	inSeq    uint64
}

// openSession sends req to device and waits for its first frame: for a v5
// device, the grant that says the session is set up; for a v4 one (logs
// only), the first data. After that the session lasts as long as both
// sides keep it.
func (p *Provider) openSession(ctx context.Context, device string, req *bridge.SessionRequest) (*session, error) {
	req.Session = newSessionID()
	req.Version = bridge.ProtocolVersion
	frames := make(chan *nats.Msg, 2*bridge.InitialCredit+8)
	sub, err := p.cfg.NATS.ChanSubscribe(bridge.SessionDataSubject(device, req.Session), frames)
	if err != nil {
		return nil, fmt.Errorf("subscribing to a device session: %w", err)
	}
	_ = sub.SetPendingLimits(-1, -1) // bounded by the credit granted
	data, err := bridge.Encode(req)
	if err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	s := &session{ctx: ctx, p: p, device: device, id: req.Session, sub: sub, frames: frames,
		done: make(chan struct{}), inCredit: bridge.NewCredit(0)}
	if err := p.cfg.NATS.Publish(bridge.SessionSubject(device), data); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("opening a session with device %s: %w", device, err)
	}
	deadline := time.NewTimer(sessionOpenTimeout)
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			s.Close()
			return nil, ctx.Err()
		case <-deadline.C:
			s.Close()
			return nil, fmt.Errorf("device %s did not answer", device)
		case m := <-frames:
			f, err := s.decode(m)
			if err != nil {
				s.Close()
				return nil, err
			}
			if f == nil {
				continue
			}
			if f.Numbered() || f.Credit > 0 {
				if f.Numbered() {
					s.first = f
				}
				go s.keepalive()
				return s, nil
			}
		}
	}
}

// decode applies an unnumbered frame (credit; Gone fails the session) and
// checks a numbered one's place; nil for frames to skip.
func (s *session) decode(m *nats.Msg) (*bridge.StreamFrame, error) {
	f, err := bridge.DecodeStreamFrame(m.Data)
	if err != nil {
		s.p.rejected("stream frame", m.Subject, err)
		return nil, nil
	}
	if !f.Numbered() {
		if f.Code == bridge.CodeSessionGone {
			return nil, errSessionGone
		}
		if f.Credit > 0 {
			s.inCredit.Grant(f.Credit)
		}
		return f, nil
	}
	if f.Seq != s.want {
		return nil, fmt.Errorf("device %s: frame %d arrived where %d was due", s.device, f.Seq, s.want)
	}
	s.want++
	if len(f.Data) > 0 {
		s.consumed++
		if s.consumed >= bridge.InitialCredit/2 {
			s.control(bridge.SessionControl{Credit: s.consumed})
			s.consumed = 0
		}
	}
	return f, nil
}

// next returns the next numbered frame. A frame with an error becomes the
// error; EOF is a frame with EOF set.
func (s *session) next() (*bridge.StreamFrame, error) {
	if f := s.first; f != nil {
		s.first = nil
		return s.frameResult(f)
	}
	alive := time.NewTicker(bridge.SessionKeepalive)
	defer alive.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return nil, s.ctx.Err()
		case <-s.done:
			return nil, io.ErrClosedPipe
		case <-alive.C:
			if !s.p.deviceFresh(s.device) {
				return nil, fmt.Errorf("device %s went offline", s.device)
			}
		case m := <-s.frames:
			f, err := s.decode(m)
			if err != nil {
				return nil, err
			}
			if f == nil || !f.Numbered() {
				continue
			}
			return s.frameResult(f)
		}
	}
}

func (s *session) frameResult(f *bridge.StreamFrame) (*bridge.StreamFrame, error) {
	if f.EOF {
		s.eof = true
	}
	if f.Error != "" {
		switch f.Code {
		case bridge.CodeSessionNotFound:
			return nil, errdefs.NotFound(f.Error)
		case bridge.CodeSessionInvalidInput:
			return nil, errdefs.InvalidInput(f.Error)
		}
		return nil, fmt.Errorf("device %s: %s", s.device, f.Error)
	}
	return f, nil
}

// input sends data (or, with eof, the end of the input) to the device once
// it has granted credit.
func (s *session) input(data []byte, eof bool) error {
	if err := s.inCredit.Take(s.ctx, s.done); err != nil {
		if errors.Is(err, bridge.ErrSessionClosed) {
			return io.ErrClosedPipe
		}
		return err
	}
	s.inMu.Lock()
	defer s.inMu.Unlock()
	c := bridge.SessionControl{Seq: s.inSeq, Data: data, EOF: eof}
	s.inSeq++
	return s.controlErr(c)
}

// copyInput sends what r gives as input, then its end.
func (s *session) copyInput(r io.Reader) {
	buf := make([]byte, bridge.MaxFrameBytes)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if s.input(append([]byte(nil), buf[:n]...), false) != nil {
				return
			}
		}
		if err != nil {
			_ = s.input(nil, true)
			return
		}
	}
}

func (s *session) control(c bridge.SessionControl) { _ = s.controlErr(c) }

func (s *session) controlErr(c bridge.SessionControl) error {
	// Only v5 devices are sent data, and they read the binary form.
	data, err := bridge.EncodeSessionControl(&c, true)
	if err != nil {
		return err
	}
	return s.p.cfg.NATS.Publish(bridge.SessionControlSubject(s.device, s.id), data)
}

// keepalive tells the device the client is still there.
func (s *session) keepalive() {
	t := time.NewTicker(bridge.SessionKeepalive)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.control(bridge.SessionControl{})
		}
	}
}

// Close ends the session; the device stops at once.
func (s *session) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.done)
		if !s.eof {
			s.control(bridge.SessionControl{Cancel: true})
		}
		err = s.sub.Unsubscribe()
	})
	return err
}

// streamReader reads a session's data frames as one stream (logs).
type streamReader struct {
	s       *session
	pending []byte
}

func (r *streamReader) Read(b []byte) (int, error) {
	for len(r.pending) == 0 {
		if r.s.eof {
			return 0, io.EOF
		}
		f, err := r.s.next()
		if err != nil {
			return 0, err
		}
		r.pending = f.Data
	}
	n := copy(b, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

func (r *streamReader) Close() error { return r.s.Close() }
