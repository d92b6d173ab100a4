package nodeagent

import (
	"context"
	"sync"
	"time"
)

// Kubelet's words for a pod past its activeDeadlineSeconds.
const (
	ReasonDeadlineExceeded = "DeadlineExceeded"
	deadlineMessage        = "Pod was active on the node longer than the specified deadline"
)

// enforceDeadline applies the workload's activeDeadlineSeconds, counted
// from when the device accepted the pod (its startTime): past it, the
// pod's containers are stopped for good and the pod is Failed, as a kubelet
// does, also while the device is offline. It reports whether the pod is
// past its deadline, in which case nothing else is done for it (no
// creation, restart or init step); otherwise it lowers *next to the
// deadline.
func (a *Agent) enforceDeadline(ctx context.Context, r *Record, p *PodState, now time.Time, next *time.Duration) bool {
	w := &r.Workload
	if !r.DeadlineExceeded {
		if w.ActiveDeadlineSeconds == nil || r.Accepted.IsZero() {
			return false
		}
		dl := r.Accepted.Add(time.Duration(*w.ActiveDeadlineSeconds) * time.Second)
		if now.Before(dl) {
			*next = min(*next, dl.Sub(now))
			return false
		}
		a.log.Info("pod past its activeDeadlineSeconds; stopping it", "pod", w.Namespace+"/"+w.Name,
			"activeDeadlineSeconds", *w.ActiveDeadlineSeconds, "startTime", r.Accepted)
		if err := a.store.Update(w.UID, func(rec *Record) { rec.DeadlineExceeded = true }); err != nil {
			a.log.Warn("recording a pod's deadline", "pod", w.Namespace+"/"+w.Name, "err", err)
		}
		r.DeadlineExceeded = true
		a.markDirty(w.UID)
	}
	a.stopForDeadline(ctx, r, p)
	return true
}

// stopForDeadline stops the running containers of a pod past its deadline
// in the background, within the pod's grace period, and asks for a pass
// when they have stopped.
func (a *Agent) stopForDeadline(ctx context.Context, r *Record, p *PodState) {
	st, ok := a.rt.(ContainerStopper)
	if !ok || p == nil {
		return
	}
	var running []string
	for _, c := range p.Containers {
		if c.State == ContainerRunning {
			running = append(running, c.Name)
		}
	}
	uid := r.Workload.UID
	a.mu.Lock()
	busy := a.deadlineStops[uid]
	if !busy && len(running) > 0 {
		a.deadlineStops[uid] = true
	}
	a.mu.Unlock()
	if busy || len(running) == 0 {
		return
	}
	g := grace(&r.Workload)
	name := r.Workload.Namespace + "/" + r.Workload.Name
	go func() {
		var wg sync.WaitGroup
		for _, c := range running {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := st.StopContainer(ctx, uid, c, g); err != nil {
					a.log.Warn("stopping a container past its pod's deadline", "pod", name, "container", c, "err", err)
				}
			}()
		}
		wg.Wait()
		a.mu.Lock()
		delete(a.deadlineStops, uid)
		a.mu.Unlock()
		a.markDirty(uid)
		a.kick()
	}()
}
