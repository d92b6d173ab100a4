package nodeagent

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// LogReader is a Runtime that reads containers' logs (kubectl logs).
type LogReader interface {
	ContainerLogs(ctx context.Context, podUID, container string, opts LogOptions) (io.ReadCloser, error)
}

// LogOptions select what of a container's log to read.
type LogOptions struct {
	Follow     bool
	TailLines  *int64
	SinceTime  *time.Time
	Timestamps bool
	Previous   bool
}

// Errors of a LogReader, sent to the provider as codes.
var (
	ErrNoContainer     = errors.New("no such container")
	ErrLogUnsupported  = errors.New("not supported")
	errSessionTimedOut = errors.New("session timed out waiting for the provider")
)

// sessions routes SessionControl messages to the running sessions.
type sessions struct {
	mu  sync.Mutex
	ctl map[string]chan bridge.SessionControl
}

func (s *sessions) add(id string) chan bridge.SessionControl {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctl == nil {
		s.ctl = map[string]chan bridge.SessionControl{}
	}
	ch := make(chan bridge.SessionControl, 8)
	s.ctl[id] = ch
	return ch
}

func (s *sessions) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ctl, id)
}

func (s *sessions) deliver(id string, c bridge.SessionControl) {
	s.mu.Lock()
	ch := s.ctl[id]
	s.mu.Unlock()
	if ch != nil {
		select {
		case ch <- c:
		default: // credit arrives again with the next grant; a cancel is repeated
		}
	}
}

// serveSessions answers the provider's kubelet API sessions addressed to
// this device until ctx ends.
func (a *Agent) serveSessions(ctx context.Context) {
	subj := bridge.SessionSubject(a.cfg.Device)
	open, err := a.nc.Subscribe(subj, func(m *nats.Msg) {
		req, err := bridge.Decode[bridge.LogRequest](m.Data)
		if err != nil || req.Session == "" || req.PodUID == "" {
			a.rejected("session request", m.Subject, err)
			return
		}
		go a.serveLogs(ctx, req)
	})
	if err != nil {
		a.log.Warn("serving kubelet sessions", "err", err)
		return
	}
	defer open.Unsubscribe()
	ctl, err := a.nc.Subscribe(subj+".*", func(m *nats.Msg) {
		c, err := bridge.Decode[bridge.SessionControl](m.Data)
		if err != nil {
			a.rejected("session control", m.Subject, err)
			return
		}
		a.sessions.deliver(m.Subject[len(subj)+1:], *c)
	})
	if err != nil {
		a.log.Warn("serving kubelet sessions", "err", err)
		return
	}
	defer ctl.Unsubscribe()
	<-ctx.Done()
}

// serveLogs streams one container's log to the provider, within the
// credit it grants.
func (a *Agent) serveLogs(ctx context.Context, req *bridge.LogRequest) {
	ctl := a.sessions.add(req.Session)
	defer a.sessions.remove(req.Session)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := bridge.SessionDataSubject(a.cfg.Device, req.Session)
	var seq uint64
	send := func(f bridge.StreamFrame) {
		f.Seq = seq
		seq++
		if data, err := bridge.Encode(&f); err == nil {
			_ = a.nc.Publish(out, data)
		}
	}
	fail := func(err error) {
		code := "Internal"
		switch {
		case errors.Is(err, ErrNoContainer):
			code = "NotFound"
		case errors.Is(err, ErrLogUnsupported):
			code = "InvalidInput"
		case errors.Is(err, ErrRuntimeUnavailable):
			code = "Unavailable"
		}
		send(bridge.StreamFrame{EOF: true, Error: err.Error(), Code: code})
	}
	lr, ok := a.rt.(LogReader)
	if !ok {
		fail(ErrLogUnsupported)
		return
	}
	rc, err := lr.ContainerLogs(ctx, req.PodUID, req.Container, LogOptions{
		Follow: req.Follow, TailLines: req.TailLines, SinceTime: req.SinceTime, Timestamps: req.Timestamps, Previous: req.Previous,
	})
	if err != nil {
		fail(err)
		return
	}
	defer rc.Close()
	chunks := make(chan []byte)
	readErr := make(chan error, 1)
	go func() {
		defer close(chunks)
		for {
			buf := make([]byte, bridge.MaxFrameBytes)
			n, err := rc.Read(buf)
			if n > 0 {
				select {
				case chunks <- buf[:n]:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					readErr <- err
				}
				return
			}
		}
	}()
	credit := bridge.InitialCredit
	var sent int64
	for {
		var chunk []byte
		var more bool
		select {
		case <-ctx.Done():
			return
		case c := <-ctl:
			if c.Cancel {
				return
			}
			credit += c.Credit
			continue
		case chunk, more = <-chunks:
		}
		if !more {
			select {
			case err := <-readErr:
				fail(err)
			default:
				send(bridge.StreamFrame{EOF: true})
			}
			return
		}
		if req.LimitBytes > 0 && sent+int64(len(chunk)) >= req.LimitBytes {
			chunk = chunk[:req.LimitBytes-sent]
			for credit <= 0 {
				if !a.awaitCredit(ctx, ctl, &credit) {
					return
				}
			}
			send(bridge.StreamFrame{Data: chunk})
			send(bridge.StreamFrame{EOF: true})
			return
		}
		for credit <= 0 {
			if !a.awaitCredit(ctx, ctl, &credit) {
				return
			}
		}
		send(bridge.StreamFrame{Data: chunk})
		sent += int64(len(chunk))
		credit--
	}
}

// awaitCredit waits for the provider to grant credit; false when the
// session ends (cancelled, or the provider silent for SessionTimeout).
func (a *Agent) awaitCredit(ctx context.Context, ctl chan bridge.SessionControl, credit *int) bool {
	select {
	case <-ctx.Done():
		return false
	case c := <-ctl:
		if c.Cancel {
			return false
		}
		*credit += c.Credit
		return true
	case <-time.After(bridge.SessionTimeout):
		a.log.Info("ending a kubelet session", "err", errSessionTimedOut)
		return false
	}
}
