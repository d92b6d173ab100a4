//go:build remote

package podman

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
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
	id := c.ID
	o := new(containers.LogOptions).WithStdout(true).WithStderr(true).WithFollow(opts.Follow).WithTimestamps(opts.Timestamps)
	if opts.TailLines != nil {
		o = o.WithTail(strconv.FormatInt(*opts.TailLines, 10))
	}
	if opts.SinceTime != nil {
		o = o.WithSince(opts.SinceTime.UTC().Format(time.RFC3339Nano))
	}
	if opts.UntilTime != nil {
		o = o.WithUntil(opts.UntilTime.UTC().Format(time.RFC3339Nano))
	}
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
	return &logStream{PipeReader: pr, cancel: cancel}, nil
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
