//go:build remote

package podman

import (
	"context"
	"fmt"

	"github.com/containers/podman/v5/pkg/bindings/system"
	entities "github.com/containers/podman/v5/pkg/domain/entities/types"

	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// containerEvents are the container events that change what ListPods
// reports; exec, attach, mount and the like are left out.
var containerEvents = []string{
	"create", "init", "start", "restart", "died", "stop", "oom",
	"pause", "unpause", "remove", "cleanup",
}

// Events streams a notice whenever a container of r's device changes state,
// until ctx ends. Notices for one pod are coalesced while the reader is
// slow, so none is lost but several may become one. The channel closes
// when the stream from podman ends.
func (r *Runtime) Events(ctx context.Context) (<-chan nodeagent.Event, error) {
	if err := r.connect(); err != nil {
		return nil, err
	}
	in := make(chan entities.Event, 64)
	cancel := make(chan bool)
	filters := r.deviceFilter()
	filters["type"] = []string{"container"}
	filters["event"] = containerEvents
	opts := new(system.EventsOptions).WithStream(true).WithFilters(filters)
	if err := system.Events(r.ctx(ctx), in, cancel, opts); err != nil {
		close(cancel)
		return nil, fmt.Errorf("watching podman events: %w", classify(err))
	}
	out := make(chan nodeagent.Event)
	go r.forwardEvents(ctx, in, cancel, out)
	return out, nil
}

// forwardEvents turns podman events from in into pod notices on out,
// coalescing per pod UID while out is not read. It closes out when in
// closes (after delivering what is pending) or ctx ends.
func (r *Runtime) forwardEvents(ctx context.Context, in chan entities.Event, cancel chan bool, out chan<- nodeagent.Event) {
	defer close(out)
	defer func() {
		close(cancel) // closes the response body
		// The bindings' reader may be blocked sending to in: drain it.
		go func() {
			for range in {
			}
		}()
	}()

	var queue []string              // pod UIDs in order of first notice
	queued := make(map[string]bool) // pod UIDs in queue
	for in != nil || len(queue) > 0 {
		var send chan<- nodeagent.Event
		var next nodeagent.Event
		if len(queue) > 0 {
			send, next = out, nodeagent.Event{PodUID: queue[0]}
		}
		select {
		case e, ok := <-in:
			if !ok {
				r.log.Debug("podman event stream ended")
				in = nil
				continue
			}
			attrs := e.Actor.Attributes
			uid := attrs[nodeagent.LabelPodUID]
			if uid == "" || attrs[nodeagent.LabelDevice] != r.device || queued[uid] {
				continue
			}
			queue = append(queue, uid)
			queued[uid] = true
		case send <- next:
			delete(queued, queue[0])
			queue = queue[1:]
		case <-ctx.Done():
			return
		}
	}
}
