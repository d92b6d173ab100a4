//go:build remote

package podman

import (
	"context"
	"fmt"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/containers"

	"github.com/vk-fleet/vk-fleet/nodeagent"
)

var _ nodeagent.ContainerStopper = (*Runtime)(nil)

// StopContainer stops one container of pod podUID: SIGTERM (or the image's
// stop signal), SIGKILL after grace. The agent's restart policy then
// applies, as after a failed liveness probe in a kubelet.
func (r *Runtime) StopContainer(ctx context.Context, podUID, container string, grace time.Duration) error {
	if err := r.connect(); err != nil {
		return err
	}
	c, err := r.findContainer(ctx, podUID, container)
	if err != nil {
		return err
	}
	secs := uint(grace / time.Second)
	if err := containers.Stop(r.ctx(ctx), c.ID, new(containers.StopOptions).WithTimeout(secs)); err != nil {
		return fmt.Errorf("stopping container %s of pod %s: %w", container, podUID, classify(err))
	}
	return nil
}
