//go:build remote

package podman

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/containers"
	entities "github.com/containers/podman/v5/pkg/domain/entities/types"

	"github.com/vk-fleet/vk-fleet/nodeagent"
)

var _ nodeagent.LogReader = (*Runtime)(nil)

// ContainerLogs streams the log of one container of pod podUID, stdout and
// stderr interleaved as podman returns them.
func (r *Runtime) ContainerLogs(ctx context.Context, podUID, container string, opts nodeagent.LogOptions) (io.ReadCloser, error) {
	if err := r.connect(); err != nil {
		return nil, err
	}
	c, err := r.findContainer(ctx, podUID, container)
	if err != nil {
		return nil, err
	}
	o := new(containers.LogOptions).WithStdout(true).WithStderr(true).WithTimestamps(opts.Timestamps)
	if opts.SinceTime != nil {
		o = o.WithSince(opts.SinceTime.UTC().Format(time.RFC3339Nano))
	}
	if opts.UntilTime != nil {
		o = o.WithUntil(opts.UntilTime.UTC().Format(time.RFC3339Nano))
	}
	if opts.TailLines == nil {
		return r.streamLogs(ctx, c.ID, container, o.WithFollow(opts.Follow)), nil
	}
	// The tail is taken here, not by podman, whose --tail (4.3) joins a
	// last line without a newline onto the line before it: kubelet counts
	// such a line as a line of its own.
	n := max(*opts.TailLines, 0)
	if !opts.Follow {
		return tailLines(r.streamLogs(ctx, c.ID, container, o.WithFollow(false)), n)
	}
	// Following: count the lines already written, then follow from the
	// start and skip all but the last n of them.
	have, err := countLines(r.streamLogs(ctx, c.ID, container, o.WithFollow(false)))
	if err != nil {
		return nil, err
	}
	return skipLines(r.streamLogs(ctx, c.ID, container, o.WithFollow(true)), max(have-n, 0)), nil
}

// streamLogs streams the log of container id as o says.
func (r *Runtime) streamLogs(ctx context.Context, id, container string, o *containers.LogOptions) io.ReadCloser {
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	lines := make(chan string, 64)
	done := make(chan error, 1)
	go func() {
		err := containers.Logs(r.ctx(ctx), id, o, lines, lines)
		close(lines)
		done <- err
	}()
	go func() {
		// podman hands over one line at a time: lines that are already
		// waiting go to the reader in one write, so a busy log does not
		// become a message per line.
		bw := bufio.NewWriterSize(pw, 32<<10)
		var werr error
		for l := range lines {
			if werr == nil {
				if _, werr = bw.WriteString(l); werr == nil && len(lines) == 0 {
					werr = bw.Flush()
				}
				if werr != nil {
					cancel() // the reader went away: stop podman's stream
				}
			}
		}
		if werr == nil {
			_ = bw.Flush()
		}
		if err := <-done; err != nil && ctx.Err() == nil {
			pw.CloseWithError(fmt.Errorf("reading the log of %s: %w", container, classify(err)))
			return
		}
		pw.Close()
	}()
	return &logStream{PipeReader: pr, cancel: cancel}
}

// findContainer returns the container named container of pod podUID
// (never an infra container), or an error wrapping nodeagent.ErrNoContainer.
// Callers have called connect first.
func (r *Runtime) findContainer(ctx context.Context, podUID, container string) (entities.ListContainer, error) {
	list, err := r.listContainers(ctx)
	if err != nil {
		return entities.ListContainer{}, err
	}
	for _, c := range list {
		if !c.IsInfra && c.Labels[nodeagent.LabelPodUID] == podUID && c.Labels[nodeagent.LabelContainer] == container {
			return c, nil
		}
	}
	return entities.ListContainer{}, fmt.Errorf("%w: container %q of pod %s", nodeagent.ErrNoContainer, container, podUID)
}

type logStream struct {
	*io.PipeReader
	cancel context.CancelFunc
}

func (s *logStream) Close() error {
	s.cancel()
	return s.PipeReader.Close()
}

// tailLines reads rc to its end and returns its last n lines; a last line
// without a newline counts as a line.
func tailLines(rc io.ReadCloser, n int64) (io.ReadCloser, error) {
	defer rc.Close()
	br := bufio.NewReader(rc)
	var lines [][]byte
	for {
		l, err := br.ReadBytes('\n')
		if len(l) > 0 && n > 0 {
			lines = append(lines, l)
			if int64(len(lines)) > n {
				lines = lines[1:]
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return io.NopCloser(bytes.NewReader(bytes.Join(lines, nil))), nil
}

// countLines reads rc to its end and counts its lines, a last one without
// a newline included.
func countLines(rc io.ReadCloser) (int64, error) {
	defer rc.Close()
	br := bufio.NewReader(rc)
	var n int64
	for {
		l, err := br.ReadBytes('\n')
		if len(l) > 0 {
			n++
		}
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
	}
}

// skipLines returns rc without its first n lines.
func skipLines(rc io.ReadCloser, n int64) io.ReadCloser {
	return &skipper{rc: rc, br: bufio.NewReader(rc), skip: n}
}

type skipper struct {
	rc   io.ReadCloser
	br   *bufio.Reader
	skip int64
}

func (s *skipper) Read(p []byte) (int, error) {
	for s.skip > 0 {
		if _, err := s.br.ReadBytes('\n'); err != nil {
			return 0, err
		}
		s.skip--
	}
	return s.br.Read(p)
}

func (s *skipper) Close() error { return s.rc.Close() }
