//go:build remote

package podman

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/pods"
	entities "github.com/containers/podman/v5/pkg/domain/entities/types"

	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// deviceFilter selects the objects labelled with r's device.
func (r *Runtime) deviceFilter() map[string][]string {
	return map[string][]string{"label": {nodeagent.LabelDevice + "=" + r.device}}
}

// listPods returns the podman pods of r's device.
func (r *Runtime) listPods(ctx context.Context) ([]*entities.ListPodsReport, error) {
	list, err := pods.List(r.ctx(ctx), new(pods.ListOptions).WithFilters(r.deviceFilter()))
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", classify(err))
	}
	// Check again: the filter is podman's, the guarantee is ours.
	return slices.DeleteFunc(list, func(p *entities.ListPodsReport) bool {
		return p.Labels[nodeagent.LabelDevice] != r.device
	}), nil
}

// listContainers returns the containers (all states) of r's device.
func (r *Runtime) listContainers(ctx context.Context) ([]entities.ListContainer, error) {
	list, err := containers.List(r.ctx(ctx), new(containers.ListOptions).WithAll(true).WithFilters(r.deviceFilter()))
	if err != nil {
		return nil, fmt.Errorf("listing containers: %w", classify(err))
	}
	return slices.DeleteFunc(list, func(c entities.ListContainer) bool {
		return c.Labels[nodeagent.LabelDevice] != r.device
	}), nil
}

// findPod returns the podman pod of pod uid, or nil if there is none.
func (r *Runtime) findPod(ctx context.Context, uid string) (*entities.ListPodsReport, error) {
	list, err := r.listPods(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range list {
		if p.Labels[nodeagent.LabelPodUID] == uid {
			return p, nil
		}
	}
	return nil, nil
}

// ListPods returns every pod of r's device that exists in podman, with its
// workload containers (not the infra container).
func (r *Runtime) ListPods(ctx context.Context) ([]nodeagent.PodState, error) {
	if err := r.connect(); err != nil {
		return nil, err
	}
	// Containers first, then pods: podman lists a pod being created without
	// its infra container for a moment, and a pod listed before a container
	// that started since would show that container running without the
	// pod's IP. Listed after, a pod with a running container has its infra
	// container, which started first.
	ctrList, err := r.listContainers(ctx)
	if err != nil {
		return nil, err
	}
	podList, err := r.listPods(ctx)
	if err != nil {
		return nil, err
	}
	byUID := make(map[string][]entities.ListContainer)
	for _, c := range ctrList {
		if c.IsInfra {
			continue
		}
		uid := c.Labels[nodeagent.LabelPodUID]
		byUID[uid] = append(byUID[uid], c)
	}

	out := make([]nodeagent.PodState, 0, len(podList))
	for _, p := range podList {
		uid := p.Labels[nodeagent.LabelPodUID]
		if uid == "" {
			continue
		}
		ps := nodeagent.PodState{
			UID:       uid,
			Namespace: p.Labels[nodeagent.LabelNamespace],
			Name:      p.Labels[nodeagent.LabelPodName],
			SpecHash:  p.Labels[nodeagent.LabelSpecHash],
			Stopped:   p.Status == "Exited" || p.Status == "Stopped",
		}
		for _, c := range byUID[uid] {
			cs, err := r.containerState(ctx, c)
			if err != nil {
				if isNotFound(err) {
					continue // removed since the list
				}
				return nil, err
			}
			ps.Containers = append(ps.Containers, cs)
		}
		slices.SortFunc(ps.Containers, func(a, b nodeagent.ContainerState) int { return cmp.Compare(a.Name, b.Name) })
		if p.InfraId != "" && p.Status != "Exited" {
			ip, err := r.podIP(ctx, p.InfraId)
			if err != nil && !isNotFound(err) {
				return nil, err
			}
			ps.PodIP = ip
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(a, b nodeagent.PodState) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.UID, b.UID))
	})
	return out, nil
}

// containerState describes container c. A running container is described
// from the list alone; any other is inspected for its exit, OOM kill and
// error. Times are whole seconds, whichever way they were read.
func (r *Runtime) containerState(ctx context.Context, c entities.ListContainer) (nodeagent.ContainerState, error) {
	cs := nodeagent.ContainerState{
		Name:       c.Labels[nodeagent.LabelContainer],
		ID:         c.ID,
		Image:      c.Image,
		ImageID:    c.ImageID,
		State:      mapState(c.State),
		StartedAt:  unixTime(c.StartedAt),
		FinishedAt: unixTime(c.ExitedAt),
	}
	if cs.State == nodeagent.ContainerExited {
		cs.ExitCode = c.ExitCode
	}
	if cs.State == nodeagent.ContainerRunning {
		cs.FinishedAt = time.Time{}
		return cs, nil
	}
	data, err := containers.Inspect(r.ctx(ctx), c.ID, nil)
	if err != nil {
		return cs, fmt.Errorf("inspecting container %s: %w", c.ID, classify(err))
	}
	if st := data.State; st != nil {
		cs.State = mapState(st.Status)
		cs.StartedAt = wholeSeconds(st.StartedAt)
		cs.FinishedAt = wholeSeconds(st.FinishedAt)
		cs.OOMKilled = st.OOMKilled
		cs.Error = st.Error
		if cs.State == nodeagent.ContainerExited {
			cs.ExitCode = st.ExitCode
			cs.TerminationMessage = r.terminationMessage(c.Labels[nodeagent.LabelPodUID], cs.Name)
		}
	}
	if data.ImageName != "" {
		cs.Image = data.ImageName
	}
	return cs, nil
}

// podIP returns the IP address of the infra container infraID on its
// first network; empty for host networking.
func (r *Runtime) podIP(ctx context.Context, infraID string) (string, error) {
	data, err := containers.Inspect(r.ctx(ctx), infraID, nil)
	if err != nil {
		return "", fmt.Errorf("inspecting infra container %s: %w", infraID, classify(err))
	}
	ns := data.NetworkSettings
	if ns == nil {
		return "", nil
	}
	if ns.IPAddress != "" {
		return ns.IPAddress, nil
	}
	names := make([]string, 0, len(ns.Networks))
	for name := range ns.Networks {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if n := ns.Networks[name]; n != nil && n.IPAddress != "" {
			return n.IPAddress, nil
		}
	}
	return "", nil
}

// mapState maps a podman container state to a nodeagent one.
func mapState(s string) string {
	switch s {
	case "configured", "created", "initialized":
		return nodeagent.ContainerCreated
	case "running", "stopping":
		// A container being stopped runs until it has stopped (as a
		// kubelet reports it): a pod past its deadline is Failed only
		// with its containers' final states, the last status written.
		return nodeagent.ContainerRunning
	case "stopped", "exited":
		return nodeagent.ContainerExited
	default:
		return nodeagent.ContainerUnknown
	}
}

// unixTime converts podman's Unix seconds; zero and the zero time's
// negative seconds become the zero time.Time.
func unixTime(sec int64) time.Time {
	if sec <= 0 || sec == math.MaxInt64 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}

// wholeSeconds truncates t to seconds; before 1970 it is the zero time.
func wholeSeconds(t time.Time) time.Time {
	if t.Unix() <= 0 {
		return time.Time{}
	}
	return time.Unix(t.Unix(), 0).UTC()
}

// StartContainer starts the exited container named container of pod
// podUID again. It fails with ErrNotFound when there is no such container.
func (r *Runtime) StartContainer(ctx context.Context, podUID, container string) error {
	if err := r.connect(); err != nil {
		return err
	}
	list, err := r.listContainers(ctx)
	if err != nil {
		return fmt.Errorf("starting container %s of pod %s: %w", container, podUID, err)
	}
	for _, c := range list {
		if c.IsInfra || c.Labels[nodeagent.LabelPodUID] != podUID || c.Labels[nodeagent.LabelContainer] != container {
			continue
		}
		if err := containers.Start(r.ctx(ctx), c.ID, nil); err != nil {
			return fmt.Errorf("starting container %s of pod %s: %w", container, podUID, classify(err))
		}
		return nil
	}
	return fmt.Errorf("starting container %s of pod %s: %w", container, podUID, ErrNotFound)
}

// RemovePod stops the containers of pod podUID, giving them grace to exit,
// then removes the pod, its containers and its volume directories. A
// missing pod is not an error.
func (r *Runtime) RemovePod(ctx context.Context, podUID string, grace time.Duration) error {
	if err := r.connect(); err != nil {
		return err
	}
	r.forgetNetns(podUID)
	p, err := r.findPod(ctx, podUID)
	if err != nil {
		return fmt.Errorf("removing pod %s: %w", podUID, err)
	}
	if p != nil {
		if err := r.removePod(ctx, podUID, p.Id, grace); err != nil {
			return fmt.Errorf("removing pod %s: %w", podUID, err)
		}
		r.log.Info("removed pod", "uid", podUID, "podman_pod", p.Name)
	}
	return r.removeVolumes(podUID)
}

// removePod stops the containers of pod podUID (podman pod podID) with
// grace, then removes the pod and its containers by force.
func (r *Runtime) removePod(ctx context.Context, podUID, podID string, grace time.Duration) error {
	if err := r.stopContainers(ctx, podUID, grace); err != nil {
		// Removing by force kills what did not stop.
		r.log.Warn("stopping containers", "uid", podUID, "err", err)
	}
	// podman 4.3.1 ignores the timeout of a pod removal and stops what
	// still runs with each container's stop timeout.
	_, err := pods.Remove(r.ctx(ctx), podID, new(pods.RemoveOptions).WithForce(true).WithTimeout(0))
	if err != nil && !isNotFound(err) {
		return classify(err)
	}
	return nil
}

// stopContainers stops the running workload containers of pod podUID in
// parallel, each with grace to exit before podman kills it.
//
// Not pods.Stop: its bindings send the timeout as "timeout" where the
// service reads "t", and the service skips pods that are not all running.
func (r *Runtime) stopContainers(ctx context.Context, podUID string, grace time.Duration) error {
	list, err := r.listContainers(ctx)
	if err != nil {
		return err
	}
	secs := uint(math.Ceil(max(grace, 0).Seconds()))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, c := range list {
		if c.IsInfra || c.Labels[nodeagent.LabelPodUID] != podUID || c.State != "running" {
			continue
		}
		wg.Go(func() {
			err := containers.Stop(r.ctx(ctx), c.ID, new(containers.StopOptions).WithTimeout(secs).WithIgnore(true))
			if err != nil && !isNotFound(err) {
				mu.Lock()
				errs = append(errs, fmt.Errorf("stopping container %s: %w", c.Labels[nodeagent.LabelContainer], classify(err)))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
