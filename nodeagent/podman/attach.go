//go:build remote

package podman

import (
	"context"
	"fmt"
	"net/url"

	"github.com/containers/podman/v5/pkg/bindings/containers"

	"github.com/vk-fleet/vk-fleet/nodeagent"
)

var _ nodeagent.Attacher = (*Runtime)(nil)

// Attach connects sio to the main process of the running container named
// container of pod podUID until the process ends (nil) or ctx ends (ctx's
// error). The container's configuration decides, not sio: stdin is
// attached only if the container was created with stdin open
// (bridge.Container.Stdin), and the output is a terminal's if it was
// created with one (bridge.Container.TTY).
//
// EOF on sio.Stdin closes the container's stdin, and so does the end of an
// attach with stdin: podman's conmon closes it when its first attached
// client's input ends, so every container behaves as one with
// Kubernetes' stdinOnce, and a second attach gets no stdin through.
func (r *Runtime) Attach(ctx context.Context, podUID, container string, sio nodeagent.StreamIO) error {
	if err := r.connect(); err != nil {
		return err
	}
	c, err := r.findContainer(ctx, podUID, container)
	if err != nil {
		return fmt.Errorf("attaching to container %s of pod %s: %w", container, podUID, err)
	}
	if c.State != "running" {
		return fmt.Errorf("attaching to container %s of pod %s: container is %s, not running", container, podUID, c.State)
	}
	data, err := containers.Inspect(r.ctx(ctx), c.ID, nil)
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("attaching to container %s of pod %s: %w", container, podUID, nodeagent.ErrNoContainer)
		}
		return fmt.Errorf("attaching to container %s of pod %s: %w", container, podUID, classify(err))
	}
	tty, openStdin := false, false
	if data.Config != nil {
		tty, openStdin = data.Config.Tty, data.Config.OpenStdin
	}
	log := r.log.With("uid", podUID, "container", container)

	stdin := sio.Stdin != nil && openStdin
	stdout := sio.Stdout != nil || tty || (!stdin && sio.Stderr == nil)
	stderr := sio.Stderr != nil && !tty
	q := url.Values{}
	q.Set("stream", "true")
	q.Set("detachKeys", "") // present and empty: no detach sequence
	q.Set("stdin", fmt.Sprint(stdin))
	q.Set("stdout", fmt.Sprint(stdout))
	q.Set("stderr", fmt.Sprint(stderr))
	s, err := r.upgrade(ctx, "/containers/"+url.PathEscape(c.ID)+"/attach", q, nil)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("attaching to container %s of pod %s: %w", container, podUID, ctx.Err())
		}
		return fmt.Errorf("attaching to container %s of pod %s: %w", container, podUID, err)
	}
	defer s.Close()
	log.Debug("attached", "stdin", stdin, "tty", tty)

	rctx, stopResizing := context.WithCancel(ctx)
	defer stopResizing()
	if tty && sio.Resize != nil {
		go forwardResizes(rctx, sio.Resize, func(sz nodeagent.TermSize) error {
			return containers.ResizeContainerTTY(r.ctx(rctx), c.ID,
				new(containers.ResizeTTYOptions).WithHeight(int(sz.Height)).WithWidth(int(sz.Width)))
		}, log)
	}

	err = copyStreams(s, sio, stdin, tty)
	if ctx.Err() != nil {
		return fmt.Errorf("attaching to container %s of pod %s: %w", container, podUID, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("attaching to container %s of pod %s: %w", container, podUID, err)
	}
	log.Debug("attach ended")
	return nil
}
