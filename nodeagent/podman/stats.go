//go:build remote

package podman

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/containers/podman/v5/libpod/define"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	entities "github.com/containers/podman/v5/pkg/domain/entities/types"

	"github.com/vk-fleet/vk-fleet/nodeagent"
)

var _ nodeagent.StatsReader = (*Runtime)(nil)

// statsTries is how often PodStats asks podman for stats when a container
// stops between the listing and the sampling.
const statsTries = 3

// PodStats samples the resource usage of the running workload containers
// (not infra containers) of r's device, grouped by pod. Pods without a
// running container are left out.
//
// podman reports a container's memory usage with its page cache; it does
// not report the inactive file pages that kubelet subtracts for the
// working set, so MemoryWorkingSetBytes is the usage too.
func (r *Runtime) PodStats(ctx context.Context) ([]nodeagent.PodStats, error) {
	if err := r.connect(); err != nil {
		return nil, err
	}
	var err error
	for range statsTries {
		var out []nodeagent.PodStats
		out, err = r.podStats(ctx)
		if err == nil || !isNotRunning(err) || ctx.Err() != nil {
			return out, err
		}
		r.log.Debug("a container stopped while sampling stats; sampling again", "err", err)
	}
	return nil, err
}

// podStats lists the running containers and samples them once.
func (r *Runtime) podStats(ctx context.Context) ([]nodeagent.PodStats, error) {
	list, err := r.listContainers(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading stats: %w", err)
	}
	byID := map[string]entities.ListContainer{}
	var ids []string
	for _, c := range list {
		if c.IsInfra || c.State != "running" || c.Labels[nodeagent.LabelPodUID] == "" {
			continue
		}
		byID[c.ID] = c
		ids = append(ids, c.ID)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	samples, err := r.sample(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("reading stats: %w", err)
	}
	now := time.Now().UTC()

	pods := map[string]*nodeagent.PodStats{}
	for _, s := range samples {
		c, ok := byID[s.ContainerID]
		if !ok {
			continue
		}
		uid := c.Labels[nodeagent.LabelPodUID]
		p := pods[uid]
		if p == nil {
			p = &nodeagent.PodStats{
				UID:       uid,
				Namespace: c.Labels[nodeagent.LabelNamespace],
				Name:      c.Labels[nodeagent.LabelPodName],
			}
			pods[uid] = p
		}
		p.Containers = append(p.Containers, nodeagent.ContainerStats{
			Name:                  c.Labels[nodeagent.LabelContainer],
			StartedAt:             unixTime(c.StartedAt),
			Time:                  now,
			CPUNanos:              s.CPUNano,
			MemoryWorkingSetBytes: s.MemUsage,
			MemoryUsageBytes:      s.MemUsage,
		})
	}
	out := make([]nodeagent.PodStats, 0, len(pods))
	for _, p := range pods {
		slices.SortFunc(p.Containers, func(a, b nodeagent.ContainerStats) int { return cmp.Compare(a.Name, b.Name) })
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b nodeagent.PodStats) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.UID, b.UID))
	})
	return out, nil
}

// sample asks podman for one sample of the containers ids.
func (r *Runtime) sample(ctx context.Context, ids []string) ([]define.ContainerStats, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the bindings' reader if we leave early
	ch, err := containers.Stats(r.ctx(ctx), ids, new(containers.StatsOptions).WithStream(false))
	if err != nil {
		return nil, classify(err)
	}
	select {
	case rep, ok := <-ch:
		if !ok {
			return nil, errors.New("podman sent no stats")
		}
		if rep.Error != nil {
			return nil, classify(rep.Error)
		}
		return rep.Stats, nil
	case <-ctx.Done():
		go func() {
			for range ch { // the bindings' reader sends once more before it ends
			}
		}()
		return nil, ctx.Err()
	}
}

// isNotRunning reports whether err is podman's answer for stats of a
// container that stopped or went away meanwhile.
func isNotRunning(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return isNotFound(err) || errors.Is(err, define.ErrCtrStateInvalid) ||
		strings.Contains(msg, "container state improper") || strings.Contains(msg, "is not running")
}
