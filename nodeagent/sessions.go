package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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
	Follow    bool
	TailLines *int64
	SinceTime *time.Time
	// UntilTime, when set, ends the log there.
	UntilTime  *time.Time
	Timestamps bool
}

// Errors of the session interfaces (LogReader, Execer, …), sent to the
// provider as codes.
var (
	ErrNoContainer     = errors.New("no such container")
	ErrUnsupported     = errors.New("not supported")
	errSessionTimedOut = errors.New("session timed out waiting for the provider")
	errInputOverrun    = errors.New("the provider sent input beyond its credit or out of order")
)

// sessions holds the running sessions by id.
type sessions struct {
	mu  sync.Mutex
	all map[string]*session
}

func (s *sessions) add(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.all == nil {
		s.all = map[string]*session{}
	}
	s.all[ss.id] = ss
}

func (s *sessions) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.all, id)
}

func (s *sessions) get(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.all[id]
}

// session is the device's end of one kubelet API session: it numbers and
// sends frames within the provider's credit, and passes the provider's
// input on in order, granting credit as it is consumed.
type session struct {
	a      *Agent
	id     string
	out    string
	ctx    context.Context
	cancel context.CancelFunc
	ctl    chan bridge.SessionControl

	mu     sync.Mutex // orders numbering and publishing
	seq    uint64
	credit *bridge.Credit

	// binary: the provider reads the binary form of frames (v5 on).
	binary bool
	inWant uint64
	input  chan bridge.SessionControl
	resize chan TermSize
}

// serveSessions answers the provider's kubelet API sessions addressed to
// this device until ctx ends.
func (a *Agent) serveSessions(ctx context.Context) {
	subj := bridge.SessionSubject(a.cfg.Device)
	open, err := a.nc.Subscribe(subj, func(m *nats.Msg) {
		req, err := bridge.Decode[bridge.SessionRequest](m.Data)
		if err == nil && req.Session == "" {
			err = errors.New("no session id")
		}
		if err == nil && req.PodUID == "" && req.Kind != bridge.SessionStats {
			err = errors.New("no pod")
		}
		if err != nil {
			a.rejected("session request", m.Subject, err)
			return
		}
		go a.serve(ctx, req)
	})
	if err != nil {
		a.log.Warn("serving kubelet sessions", "err", err)
		return
	}
	defer open.Unsubscribe()
	ctl, err := a.nc.Subscribe(subj+".*", func(m *nats.Msg) {
		c, err := bridge.DecodeSessionControl(m.Data)
		if err != nil {
			a.rejected("session control", m.Subject, err)
			return
		}
		id := m.Subject[len(subj)+1:]
		s := a.sessions.get(id)
		if s == nil {
			if !c.Cancel {
				a.publishFrame(id, &bridge.StreamFrame{Error: "no such session on the device", Code: bridge.CodeSessionGone})
			}
			return
		}
		select {
		case s.ctl <- *c:
		default:
			s.cancel() // the provider ignored its credit
		}
	})
	if err != nil {
		a.log.Warn("serving kubelet sessions", "err", err)
		return
	}
	defer ctl.Unsubscribe()
	<-ctx.Done()
}

func (a *Agent) publishFrame(id string, f *bridge.StreamFrame) {
	if data, err := bridge.Encode(f); err == nil {
		_ = a.nc.Publish(bridge.SessionDataSubject(a.cfg.Device, id), data)
	}
}

// serve runs one session to its end.
func (a *Agent) serve(ctx context.Context, req *bridge.SessionRequest) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &session{
		a: a, id: req.Session, out: bridge.SessionDataSubject(a.cfg.Device, req.Session), ctx: ctx, cancel: cancel,
		ctl:    make(chan bridge.SessionControl, 2*bridge.InitialCredit+8),
		credit: bridge.NewCredit(bridge.InitialCredit),
		input:  make(chan bridge.SessionControl, bridge.InitialCredit+1),
		resize: make(chan TermSize, 4),
		binary: req.Version >= 5,
	}
	a.sessions.add(s)
	defer a.sessions.remove(s.id)
	go s.control()
	if req.Version >= 5 {
		// Tells the provider the session is set up, and lets it send input.
		s.publish(&bridge.StreamFrame{Credit: bridge.InitialCredit})
	}
	var err error
	switch req.Kind {
	case bridge.SessionLogs:
		err = a.serveLogs(s, req)
	case bridge.SessionExec, bridge.SessionAttach:
		err = a.serveExec(s, req)
	case bridge.SessionPortForward:
		err = a.servePortForward(s, req)
	case bridge.SessionStats:
		err = a.serveStats(s)
	default:
		err = fmt.Errorf("%w: session kind %q", ErrUnsupported, req.Kind)
	}
	if ctx.Err() != nil {
		return // cancelled or timed out: nobody listens
	}
	if err != nil {
		s.fail(err)
	}
}

// control applies the provider's messages: credit, cancel, resize, input.
// A session that hears nothing from the provider for SessionTimeout ends.
func (s *session) control() {
	idle := time.NewTimer(bridge.SessionTimeout)
	defer idle.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-idle.C:
			s.a.log.Info("ending a kubelet session", "err", errSessionTimedOut)
			s.cancel()
			return
		case c := <-s.ctl:
			idle.Reset(bridge.SessionTimeout)
			if c.Cancel {
				s.cancel()
				return
			}
			if c.Credit > 0 {
				s.credit.Grant(c.Credit)
			}
			if c.Resize != nil {
				select {
				case s.resize <- TermSize{Width: c.Resize.Width, Height: c.Resize.Height}:
				default:
				}
			}
			if c.Numbered() {
				if c.Seq != s.inWant {
					s.a.log.Warn("ending a kubelet session", "err", errInputOverrun)
					s.cancel()
					return
				}
				s.inWant++
				select {
				case s.input <- c:
				default:
					s.a.log.Warn("ending a kubelet session", "err", errInputOverrun)
					s.cancel()
					return
				}
			}
		}
	}
}

// send numbers f and publishes it; a frame with data first waits for
// credit.
func (s *session) send(f *bridge.StreamFrame) error {
	if len(f.Data) > 0 {
		if err := s.credit.Take(s.ctx, nil); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Numbered() {
		f.Seq = s.seq
		s.seq++
	}
	return s.publish(f)
}

func (s *session) publish(f *bridge.StreamFrame) error {
	data, err := bridge.EncodeStreamFrame(f, s.binary)
	if err != nil {
		return err
	}
	return s.a.nc.Publish(s.out, data)
}

// fail ends the session with err's code.
func (s *session) fail(err error) {
	code := bridge.CodeSessionInternal
	switch {
	case errors.Is(err, ErrNoContainer):
		code = bridge.CodeSessionNotFound
	case errors.Is(err, ErrUnsupported):
		code = bridge.CodeSessionInvalidInput
	case errors.Is(err, ErrRuntimeUnavailable):
		code = bridge.CodeSessionUnavailable
	}
	_ = s.send(&bridge.StreamFrame{EOF: true, Error: err.Error(), Code: code})
}

// writer returns an io.Writer that sends what it is given as frames of
// stream.
func (s *session) writer(stream int) io.Writer { return &frameWriter{s: s, stream: stream} }

type frameWriter struct {
	s      *session
	stream int
}

func (w *frameWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), bridge.MaxFrameBytes)]
		if err := w.s.send(&bridge.StreamFrame{Stream: w.stream, Data: chunk}); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// reader returns the provider's input as an io.Reader; it grants the
// provider credit as its messages are consumed.
func (s *session) reader() io.Reader { return &inputReader{s: s} }

type inputReader struct {
	s        *session
	pending  []byte
	eof      bool
	consumed int
}

func (r *inputReader) Read(b []byte) (int, error) {
	for len(r.pending) == 0 {
		if r.eof {
			return 0, io.EOF
		}
		select {
		case <-r.s.ctx.Done():
			return 0, io.EOF
		case c := <-r.s.input:
			r.pending, r.eof = c.Data, c.EOF
			r.consumed++
			if r.consumed >= bridge.InitialCredit/2 {
				_ = r.s.publish(&bridge.StreamFrame{Credit: r.consumed})
				r.consumed = 0
			}
		}
	}
	n := copy(b, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// serveLogs streams one container's log.
func (a *Agent) serveLogs(s *session, req *bridge.SessionRequest) error {
	lr, ok := a.rt.(LogReader)
	if !ok {
		return fmt.Errorf("%w: this runtime keeps no logs", ErrUnsupported)
	}
	opts, err := a.logRun(req)
	if err != nil {
		return err
	}
	rc, err := lr.ContainerLogs(s.ctx, req.PodUID, req.Container, opts)
	if err != nil {
		return err
	}
	defer rc.Close()
	var r io.Reader = rc
	if req.LimitBytes > 0 {
		r = io.LimitReader(rc, req.LimitBytes)
	}
	if _, err := io.CopyBuffer(s.writer(bridge.StreamStdout), r, make([]byte, bridge.MaxFrameBytes)); err != nil {
		if s.ctx.Err() != nil {
			return nil
		}
		return err
	}
	return s.send(&bridge.StreamFrame{EOF: true})
}

// logRun selects the run of the container a log request is for: the
// current one (after the previous run finished), or with Previous the one
// before the last restart, from the times the agent recorded.
func (a *Agent) logRun(req *bridge.SessionRequest) (LogOptions, error) {
	opts := LogOptions{Follow: req.Follow, TailLines: req.TailLines, SinceTime: req.SinceTime, Timestamps: req.Timestamps}
	rec, _ := a.store.Get(req.PodUID)
	term := rec.LastTermination[req.Container]
	after := func(t *time.Time) {
		if t != nil && (opts.SinceTime == nil || t.After(*opts.SinceTime)) {
			opts.SinceTime = t
		}
	}
	if req.Previous {
		if term == nil || term.StartedAt == nil || term.FinishedAt == nil {
			return opts, fmt.Errorf("%w: previous terminated container %q in pod %q not found", ErrNoContainer, req.Container, rec.Workload.Name)
		}
		after(term.StartedAt)
		opts.UntilTime = term.FinishedAt
		opts.Follow = false
		return opts, nil
	}
	if term != nil {
		after(term.FinishedAt)
	}
	return opts, nil
}

// serveExec runs a command in a container (exec) or joins its main process
// (attach), with the standard streams asked for.
func (a *Agent) serveExec(s *session, req *bridge.SessionRequest) error {
	sio := StreamIO{TTY: req.TTY}
	if req.Stdin {
		sio.Stdin = s.reader()
	}
	if req.Stdout {
		sio.Stdout = s.writer(bridge.StreamStdout)
	}
	if req.Stderr && !req.TTY {
		sio.Stderr = s.writer(bridge.StreamStderr)
	}
	if req.TTY {
		sio.Resize = s.resize
	}
	if req.Kind == bridge.SessionAttach {
		at, ok := a.rt.(Attacher)
		if !ok {
			return fmt.Errorf("%w: this runtime cannot attach to containers", ErrUnsupported)
		}
		if err := at.Attach(s.ctx, req.PodUID, req.Container, sio); err != nil {
			return err
		}
		return s.send(&bridge.StreamFrame{EOF: true})
	}
	ex, ok := a.rt.(Execer)
	if !ok {
		return fmt.Errorf("%w: this runtime cannot run commands in containers", ErrUnsupported)
	}
	if len(req.Command) == 0 {
		return fmt.Errorf("%w: no command", ErrUnsupported)
	}
	code, err := ex.Exec(s.ctx, req.PodUID, req.Container, req.Command, sio)
	if err != nil {
		return err
	}
	return s.send(&bridge.StreamFrame{EOF: true, Exit: &code})
}

// servePortForward connects the provider's input and this session's
// frames to a port inside the pod's network namespace. The session ends
// when the pod's side closes the connection.
func (a *Agent) servePortForward(s *session, req *bridge.SessionRequest) error {
	d, ok := a.rt.(PodDialer)
	if !ok {
		return fmt.Errorf("%w: this runtime cannot forward ports", ErrUnsupported)
	}
	if req.Port <= 0 || req.Port > 65535 {
		return fmt.Errorf("%w: port %d", ErrUnsupported, req.Port)
	}
	conn, err := d.DialPod(s.ctx, req.PodUID, req.Port)
	if err != nil {
		return err
	}
	defer conn.Close()
	go func() {
		_, err := io.Copy(conn, s.reader())
		if cw, ok := conn.(interface{ CloseWrite() error }); ok && err == nil {
			_ = cw.CloseWrite()
		} else {
			_ = conn.Close()
		}
	}()
	_, err = io.CopyBuffer(s.writer(bridge.StreamStdout), conn, make([]byte, bridge.MaxFrameBytes))
	if err != nil && s.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("port %d: %w", req.Port, err)
	}
	return s.send(&bridge.StreamFrame{EOF: true})
}

// serveStats sends one StatsReport: the device's usage and its pods'.
func (a *Agent) serveStats(s *session) error {
	rep := bridge.StatsReport{Time: time.Now()}
	node, err := readHostStats()
	if err != nil {
		a.log.Debug("reading the device's usage", "err", err)
	}
	rep.Node = node
	if sr, ok := a.rt.(StatsReader); ok {
		pods, err := sr.PodStats(s.ctx)
		if err != nil {
			return err
		}
		for _, p := range pods {
			ps := bridge.PodStats{UID: p.UID, Namespace: p.Namespace, Name: p.Name}
			for _, c := range p.Containers {
				ps.Containers = append(ps.Containers, bridge.ContainerStats{
					Name: c.Name, StartTime: c.StartedAt, Time: c.Time, CPUNanos: c.CPUNanos,
					MemoryWorkingSetBytes: c.MemoryWorkingSetBytes, MemoryUsageBytes: c.MemoryUsageBytes,
				})
			}
			rep.Pods = append(rep.Pods, ps)
		}
	}
	data, err := bridge.Encode(&rep)
	if err != nil {
		return err
	}
	if _, err := s.writer(bridge.StreamStdout).Write(data); err != nil {
		return err
	}
	return s.send(&bridge.StreamFrame{EOF: true})
}
