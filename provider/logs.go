package provider

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// GetContainerLogs streams a container's log from its device over NATS,
// for the kubelet API's containerLogs route (kubectl logs).
func (p *Provider) GetContainerLogs(ctx context.Context, namespace, podName, container string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	p.mu.Lock()
	ent := p.pods.byKey[podKey(namespace, podName)]
	var device, uid string
	if ent != nil && ent.pod != nil {
		device, uid = ent.pod.Spec.NodeName, string(ent.pod.UID)
		if container == "" && len(ent.pod.Spec.Containers) == 1 {
			container = ent.pod.Spec.Containers[0].Name
		}
	}
	p.mu.Unlock()
	if device == "" {
		return nil, errdefs.NotFoundf("pod %s/%s is not served by vk-fleet", namespace, podName)
	}
	if !p.deviceFresh(device) {
		return nil, fmt.Errorf("device %s is offline; its log cannot be read now", device)
	}
	req := &bridge.LogRequest{Session: newSessionID(), PodUID: uid, Container: container, Follow: opts.Follow,
		Timestamps: opts.Timestamps, Previous: opts.Previous, LimitBytes: int64(opts.LimitBytes)}
	if opts.Tail > 0 {
		t := int64(opts.Tail)
		req.TailLines = &t
	}
	switch {
	case !opts.SinceTime.IsZero():
		t := opts.SinceTime
		req.SinceTime = &t
	case opts.SinceSeconds > 0:
		t := time.Now().Add(-time.Duration(opts.SinceSeconds) * time.Second)
		req.SinceTime = &t
	}
	return p.openSession(ctx, device, req)
}

func newSessionID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// openSession asks device for req's stream and returns it as a reader. The
// first frame must arrive within a deadline (the device may be gone);
// after that the stream lasts as long as the device sends and the reader
// reads.
func (p *Provider) openSession(ctx context.Context, device string, req *bridge.LogRequest) (io.ReadCloser, error) {
	frames := make(chan *nats.Msg, bridge.InitialCredit+4)
	sub, err := p.cfg.NATS.ChanSubscribe(bridge.SessionDataSubject(device, req.Session), frames)
	if err != nil {
		return nil, fmt.Errorf("subscribing to a device session: %w", err)
	}
	data, err := bridge.Encode(req)
	if err != nil {
		sub.Unsubscribe()
		return nil, err
	}
	if err := p.cfg.NATS.Publish(bridge.SessionSubject(device), data); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("opening a session with device %s: %w", device, err)
	}
	s := &session{ctx: ctx, p: p, device: device, id: req.Session, sub: sub, frames: frames, done: make(chan struct{})}
	first, err := s.next(ctx, 15*time.Second)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.pending = first
	go s.keepalive()
	return s, nil
}

// session reads a device's frames in order and grants credit as it goes.
type session struct {
	// ctx is the kubelet API request's: when the client goes away, a Read
	// waiting for the device returns and the session is cancelled.
	ctx    context.Context
	p      *Provider
	device string
	id     string
	sub    *nats.Subscription
	frames chan *nats.Msg
	done   chan struct{}

	want     uint64
	pending  []byte
	eof      bool
	consumed int
	closed   bool
}

// next returns the data of the next frame, io.EOF at the end, or the
// device's error.
func (s *session) next(ctx context.Context, timeout time.Duration) ([]byte, error) {
	var deadline <-chan time.Time
	if timeout > 0 {
		deadline = time.After(timeout)
	}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline:
			return nil, fmt.Errorf("device %s did not answer", s.device)
		case m := <-s.frames:
			f, err := bridge.Decode[bridge.StreamFrame](m.Data)
			if err != nil {
				s.p.rejected("stream frame", m.Subject, err)
				continue
			}
			if f.Seq != s.want {
				return nil, fmt.Errorf("device %s: frame %d arrived where %d was due", s.device, f.Seq, s.want)
			}
			s.want++
			s.consumed++
			if s.consumed >= bridge.InitialCredit/2 {
				s.control(bridge.SessionControl{Credit: s.consumed})
				s.consumed = 0
			}
			if f.Error != "" {
				switch f.Code {
				case "NotFound":
					return nil, errdefs.NotFound(f.Error)
				case "InvalidInput":
					return nil, errdefs.InvalidInput(f.Error)
				}
				return nil, errors.New(f.Error)
			}
			if f.EOF {
				s.eof = true
				if len(f.Data) > 0 {
					return f.Data, nil
				}
				return nil, io.EOF
			}
			return f.Data, nil
		}
	}
}

func (s *session) Read(b []byte) (int, error) {
	for len(s.pending) == 0 {
		if s.eof {
			return 0, io.EOF
		}
		data, err := s.next(s.ctx, 0)
		if err != nil {
			return 0, err
		}
		s.pending = data
	}
	n := copy(b, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

func (s *session) control(c bridge.SessionControl) {
	if data, err := bridge.Encode(&c); err == nil {
		_ = s.p.cfg.NATS.Publish(bridge.SessionControlSubject(s.device, s.id), data)
	}
}

// keepalive tells the device the reader is still there.
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
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.done)
	if !s.eof {
		s.control(bridge.SessionControl{Cancel: true})
	}
	return s.sub.Unsubscribe()
}
