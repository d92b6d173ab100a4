//go:build remote

package podman

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/containers/podman/v5/pkg/api/handlers"
	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/version"

	"github.com/vk-fleet/vk-fleet/nodeagent"
)

var _ nodeagent.Execer = (*Runtime)(nil)

// execDetachKeys replaces podman's detach sequence (ctrl-p,ctrl-q) in exec
// sessions, whose API cannot turn it off. podman detaches only when every
// key of the sequence arrives in a read of its own, so this one, which no
// one types, keeps kubectl exec's input (ctrl-p included) going to the
// command unaltered.
const execDetachKeys = "ctrl-^,ctrl-@,ctrl-_,ctrl-],ctrl-^,ctrl-@,ctrl-_,ctrl-]"

// exitCodeTimeout bounds the wait for podman to record the exit code of
// an exec session whose output has ended.
const exitCodeTimeout = 30 * time.Second

// stopTimeout bounds the ending of an exec session whose caller went away.
const stopTimeout = 10 * time.Second

// Exec runs cmd in the running container named container of pod podUID,
// connected to sio's streams, and returns its exit code once it has ended
// and all its output is written. When ctx ends first, Exec stops
// attaching, kills the command (see stopExec) and returns ctx's error.
//
// Exec reads sio.Stdin on a goroutine of its own that ends at the first
// read after Exec has returned (or at EOF); EOF on sio.Stdin closes the
// command's stdin.
func (r *Runtime) Exec(ctx context.Context, podUID, container string, cmd []string, sio nodeagent.StreamIO) (int, error) {
	if len(cmd) == 0 {
		return -1, fmt.Errorf("exec in container %s of pod %s: empty command", container, podUID)
	}
	if err := r.connect(); err != nil {
		return -1, err
	}
	c, err := r.findContainer(ctx, podUID, container)
	if err != nil {
		return -1, fmt.Errorf("exec in container %s of pod %s: %w: %w", container, podUID, nodeagent.ErrNotStarted, err)
	}
	if c.State != "running" {
		return -1, fmt.Errorf("exec in container %s of pod %s: %w: container is %s, not running", container, podUID, nodeagent.ErrNotStarted, c.State)
	}
	log := r.log.With("uid", podUID, "container", container)

	cfg := new(handlers.ExecCreateConfig)
	cfg.Cmd = cmd
	cfg.Tty = sio.TTY
	cfg.AttachStdin = sio.Stdin != nil
	cfg.AttachStdout = sio.Stdout != nil || sio.TTY // podman needs stdout for a terminal
	cfg.AttachStderr = sio.Stderr != nil && !sio.TTY
	cfg.DetachKeys = execDetachKeys
	id, err := containers.ExecCreate(r.ctx(ctx), c.ID, cfg)
	if err != nil {
		return -1, fmt.Errorf("exec in container %s of pod %s: %w: creating exec session: %w", container, podUID, nodeagent.ErrNotStarted, classify(err))
	}
	log = log.With("exec", id)
	defer r.removeExec(ctx, id, log)

	// kubectl sends the first window size as the session starts; when it
	// is here already, the terminal starts with it.
	start := handlers.ExecStartConfig{Tty: sio.TTY}
	resize := sio.Resize
	if sio.TTY && resize != nil {
		select {
		case sz, ok := <-resize:
			if ok {
				start.Width, start.Height = sz.Width, sz.Height
			} else {
				resize = nil
			}
		default:
		}
	}
	s, err := r.upgrade(ctx, "/exec/"+url.PathEscape(id)+"/start", nil, start)
	if err != nil {
		if ctx.Err() != nil {
			r.stopExec(ctx, id, log)
			return -1, fmt.Errorf("exec in container %s of pod %s: %w: %w", container, podUID, nodeagent.ErrNotStarted, ctx.Err())
		}
		return -1, fmt.Errorf("exec in container %s of pod %s: %w: starting exec session: %w", container, podUID, nodeagent.ErrNotStarted, err)
	}
	defer s.Close()
	if sio.Started != nil {
		sio.Started()
	}
	log.Debug("exec started", "cmd", cmd, "tty", sio.TTY)

	rctx, stopResizing := context.WithCancel(ctx)
	defer stopResizing()
	if sio.TTY && resize != nil {
		go forwardResizes(rctx, resize, func(sz nodeagent.TermSize) error {
			return containers.ResizeExecTTY(r.ctx(rctx), id,
				new(containers.ResizeExecTTYOptions).WithHeight(int(sz.Height)).WithWidth(int(sz.Width)))
		}, log)
	}

	err = copyStreams(s, sio, cfg.AttachStdin, sio.TTY)
	if ctx.Err() != nil {
		r.stopExec(ctx, id, log)
		return -1, fmt.Errorf("exec in container %s of pod %s: %w", container, podUID, ctx.Err())
	}
	if err != nil {
		r.stopExec(ctx, id, log) // the output has nowhere to go
		return -1, fmt.Errorf("exec in container %s of pod %s: %w", container, podUID, err)
	}
	code, err := r.execExitCode(ctx, id)
	if err != nil {
		return -1, fmt.Errorf("exec in container %s of pod %s: %w", container, podUID, err)
	}
	log.Debug("exec ended", "exit_code", code)
	return code, nil
}

// execExitCode waits until exec session id no longer runs and returns its
// exit code. The session's output has ended by then, so podman is about
// to record it, if it has not yet.
func (r *Runtime) execExitCode(ctx context.Context, id string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, exitCodeTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		insp, err := containers.ExecInspect(r.ctx(ctx), id, nil)
		if err != nil {
			return -1, fmt.Errorf("inspecting exec session: %w", classify(err))
		}
		if !insp.Running {
			return insp.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("waiting for the exit code: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// stopExec ends exec session id, whose caller went away. podman 4.8 and
// later remove a running session by force, killing its process; older
// ones cannot, so stopExec kills the process itself when it runs on this
// host (see killExecProcess).
func (r *Runtime) stopExec(ctx context.Context, id string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	err := containers.ExecRemove(r.ctx(ctx), id, new(containers.ExecRemoveOptions).WithForce(true))
	if err == nil {
		log.Debug("removed the exec session of a caller that went away")
		return
	}
	if !errors.As(err, new(*bindings.APIVersionError)) {
		log.Warn("removing exec session", "err", err)
	}
	insp, err := containers.ExecInspect(r.ctx(ctx), id, nil)
	if err != nil {
		log.Warn("inspecting exec session", "err", err)
		return
	}
	if !insp.Running || insp.Pid <= 0 {
		return
	}
	ctr, err := containers.Inspect(r.ctx(ctx), insp.ContainerID, nil)
	if err != nil || ctr.State == nil {
		log.Warn("inspecting the container of an exec session", "err", err)
		return
	}
	stillRuns := func() bool {
		i, err := containers.ExecInspect(r.ctx(ctx), id, nil)
		return err == nil && i.Running && i.Pid == insp.Pid
	}
	if err := killExecProcess(insp.Pid, ctr.State.Pid, stillRuns); err != nil {
		log.Warn("the command of an exec session whose caller went away may still run", "pid", insp.Pid, "err", err)
		return
	}
	log.Debug("killed the command of an exec session whose caller went away", "pid", insp.Pid)
}

// removeExec removes the ended exec session id. podman older than 4.8
// cannot; there the session stays until its container is removed.
func (r *Runtime) removeExec(ctx context.Context, id string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	err := containers.ExecRemove(r.ctx(ctx), id, nil)
	if err != nil && !errors.As(err, new(*bindings.APIVersionError)) && !isNotFound(err) {
		log.Debug("removing exec session", "err", err)
	}
}

// rawStream is a connection to the podman service that the service has
// switched from HTTP to the raw stream of an exec session or attach.
type rawStream struct {
	net.Conn
	rd   *bufio.Reader // what follows the response header
	stop func() bool   // stops closing the connection when ctx ends
}

func (s *rawStream) Read(p []byte) (int, error) { return s.rd.Read(p) }

func (s *rawStream) Close() error {
	s.stop()
	return s.Conn.Close()
}

// closeWrite half-closes the stream, which closes the process's stdin.
func (s *rawStream) closeWrite() error {
	cw, ok := s.Conn.(interface{ CloseWrite() error })
	if !ok {
		return fmt.Errorf("a %T to podman cannot close stdin alone", s.Conn)
	}
	return cw.CloseWrite()
}

// upgrade POSTs body (if not nil) as JSON to the libpod endpoint path on a connection
// of its own, asks the service to switch the connection to a raw stream
// and returns the stream. The stream closes when ctx ends.
//
// Not the bindings' Attach and ExecStartAndAttach: they replace the
// shared connection's HTTP transport while other calls use it, can half-close
// another request's connection instead of their own, and cannot be
// interrupted.
func (r *Runtime) upgrade(ctx context.Context, path string, query url.Values, body any) (*rawStream, error) {
	conn, err := bindings.GetClient(r.ctx(ctx))
	if err != nil {
		return nil, err
	}
	// Without a body when there is none: the service reads no body of a
	// request it does not expect one on, so it would pass it on as stdin.
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("encoding request: %w", err)
		}
	}
	v := version.APIVersion[version.Libpod][version.CurrentAPI]
	u := url.URL{
		Scheme:   "http",
		Host:     "d",
		Path:     fmt.Sprintf("/v%d.%d.%d/libpod%s", v.Major, v.Minor, v.Patch, path),
		RawQuery: query.Encode(),
	}
	if conn.URI.Scheme == "tcp" {
		u.Host = conn.URI.Host
		u.Path = strings.TrimSuffix(conn.URI.Path, "/") + u.Path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	if payload != nil {
		req.Body = io.NopCloser(bytes.NewReader(payload))
		req.ContentLength = int64(len(payload))
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "tcp")

	nc, err := conn.GetDialer(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to podman: %w", classify(err))
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	fail := func(err error) (*rawStream, error) {
		stop()
		nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if err := req.Write(nc); err != nil {
		return fail(fmt.Errorf("sending request: %w", classify(err)))
	}
	rd := bufio.NewReader(nc)
	resp, err := http.ReadResponse(rd, req)
	if err != nil {
		return fail(fmt.Errorf("reading response: %w", classify(err)))
	}
	if resp.StatusCode != http.StatusSwitchingProtocols && resp.StatusCode != http.StatusOK {
		err := (&bindings.APIResponse{Response: resp, Request: req}).Process(nil)
		resp.Body.Close()
		if err == nil {
			err = fmt.Errorf("podman answered %s", resp.Status)
		}
		return fail(err)
	}
	// The raw stream follows the header; the response has no body of its own.
	return &rawStream{Conn: nc, rd: rd, stop: stop}, nil
}

// copyStreams runs a session on s: it copies sio.Stdin to s when stdin,
// half-closing s at Stdin's EOF, and s's output to
// sio.Stdout and sio.Stderr (demultiplexed unless tty) until the service
// ends the stream. It returns when the output has ended; the copy of
// stdin ends at its first read after that.
func copyStreams(s *rawStream, sio nodeagent.StreamIO, stdin, tty bool) error {
	if stdin && sio.Stdin != nil {
		go func() {
			_, err := io.Copy(s.Conn, sio.Stdin)
			if err == nil {
				s.closeWrite()
			}
		}()
	}
	if tty {
		if _, err := io.Copy(orDiscard(sio.Stdout), s); err != nil {
			return fmt.Errorf("copying output: %w", err)
		}
		return nil
	}
	return demux(s, sio.Stdout, sio.Stderr)
}

// demux copies podman's multiplexed stream from r to stdout and stderr
// until r ends. Every frame has an 8-byte header: the stream (0 stdin
// echoed, 1 stdout, 2 stderr, 3 an error of the service), three zero
// bytes and the payload's length, big-endian.
func demux(r io.Reader, stdout, stderr io.Writer) error {
	stdout, stderr = orDiscard(stdout), orDiscard(stderr)
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading output: %w", err)
		}
		n := int64(binary.BigEndian.Uint32(hdr[4:]))
		var w io.Writer
		switch hdr[0] {
		case 0, 1:
			w = stdout
		case 2:
			w = stderr
		case 3:
			msg, _ := io.ReadAll(io.LimitReader(r, min(n, 4096)))
			return fmt.Errorf("podman: %s", bytes.TrimSpace(msg))
		default:
			return fmt.Errorf("reading output: unknown stream %d", hdr[0])
		}
		if _, err := io.CopyN(w, r, n); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("copying output: %w", err)
		}
	}
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// Resizes that fail because the process has not started yet are tried
// again every resizeRetry, resizeTries times in all.
const (
	resizeRetry = 50 * time.Millisecond
	resizeTries = 40
)

// forwardResizes applies the window sizes that arrive on sizes with apply
// until ctx ends or sizes closes. A size that cannot be applied yet (the
// process has not started) is tried again shortly, until a newer one
// arrives.
func forwardResizes(ctx context.Context, sizes <-chan nodeagent.TermSize, apply func(nodeagent.TermSize) error, log *slog.Logger) {
	var (
		pending nodeagent.TermSize
		tries   int
		retry   <-chan time.Time
	)
	for sizes != nil || retry != nil {
		select {
		case <-ctx.Done():
			return
		case sz, ok := <-sizes:
			if !ok {
				sizes = nil
				continue
			}
			pending, tries = sz, 0
		case <-retry:
		}
		retry = nil
		if err := apply(pending); err != nil {
			if tries++; tries < resizeTries && ctx.Err() == nil {
				retry = time.After(resizeRetry)
			} else if ctx.Err() == nil {
				log.Debug("resizing terminal", "width", pending.Width, "height", pending.Height, "err", err)
			}
		}
	}
}
