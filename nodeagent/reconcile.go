package nodeagent

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/internal/metrics"
)

// Restart back-off, as kubelet does it: 10s doubling to 5m, reset after a
// container ran for 10 minutes.
const (
	initialBackoff = 10 * time.Second
	maxBackoff     = 5 * time.Minute
	backoffReset   = 10 * time.Minute
	defaultGrace   = 30 * time.Second
	// creatingReportDelay is how long a pod may take to create before the
	// device reports ContainerCreating.
	creatingReportDelay = time.Second
)

// restartTracker holds the restart back-off of each container.
type restartTracker struct {
	next    map[string]time.Time     // uid/container → earliest restart
	backoff map[string]time.Duration // uid/container → current back-off
}

func (r *restartTracker) forget(uid string) {
	for k := range r.next {
		if len(k) > len(uid) && k[:len(uid)] == uid && k[len(uid)] == '/' {
			delete(r.next, k)
			delete(r.backoff, k)
		}
	}
}

// pending holds what a pass learned about one workload for its status.
type pending struct {
	createErr error
	// backoff: the creation failed and waits for its retry (an image pull
	// failure then reads ImagePullBackOff, as with a kubelet).
	backoff bool
	waiting map[string]bool // container → in restart back-off
	// logTails holds the log tails of failed containers whose
	// termination message falls back to their log.
	logTails map[string]string
	// ephemeral holds why ephemeral containers failed to start, by name.
	ephemeral map[string]error
}

func (a *Agent) reconcileLoop(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.trigger:
		case <-timer.C:
		}
		start := time.Now()
		wait := a.reconcile(ctx)
		metrics.AgentReconcileDuration.Observe(time.Since(start).Seconds())
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// reconcile makes the runtime match the store once, reports status, and
// returns how long to wait before the next pass if nothing happens.
func (a *Agent) reconcile(ctx context.Context) time.Duration {
	next := a.cfg.ResyncInterval
	// A pod being created is left alone until its creation ends. Read
	// before the list: a creation that ends in between shows in the list.
	creating := a.creatingNow()
	actual, err := a.rt.ListPods(ctx)
	if err != nil {
		metrics.AgentRuntimeErrors.WithLabelValues("list").Inc()
		a.setRuntimeErr(err)
		a.log.Warn("listing pods", "err", err)
		return min(next, 5*time.Second)
	}
	a.setRuntimeErr(nil)
	byUID := make(map[string]*PodState, len(actual))
	for i := range actual {
		byUID[actual[i].UID] = &actual[i]
	}

	records := a.store.List()
	acted := false // whether this pass changed anything in the runtime
	desired := make(map[string]bool, len(records))
	for _, r := range records {
		desired[r.Workload.UID] = true
	}

	// Remove pods that are no longer wanted, then tell the provider. A pod
	// in the runtime but not in the store is removed only when that absence
	// can be trusted: its workload was withdrawn, or the provider's index
	// (written from Kubernetes) does not list it. A lost local store, or a
	// new bucket, never costs a container.
	for uid, p := range byUID {
		if desired[uid] || !creating[uid].IsZero() {
			continue
		}
		a.mu.Lock()
		g, withdrawn := a.removing[uid]
		a.mu.Unlock()
		if !withdrawn {
			known, listed := a.indexed(uid)
			if !known || listed {
				a.noteOrphan(uid, p)
				continue
			}
			g = defaultGrace
		}
		a.log.Info("removing pod", "pod", p.Namespace+"/"+p.Name, "uid", uid)
		a.hooks.mu.Lock()
		stopping := a.hooks.stopping[uid]
		a.hooks.mu.Unlock()
		if stopping != nil {
			// preStop hooks first, within the grace period; what is left
			// of it (at least 2 s, as a kubelet gives) goes to SIGTERM.
			g = max(g-a.runPreStops(ctx, stopping, p, g), 2*time.Second)
			g = max(g-a.stopAppsFirst(ctx, stopping, p, g), 2*time.Second)
		}
		if err := a.rt.RemovePod(ctx, uid, g); err != nil {
			metrics.AgentRuntimeErrors.WithLabelValues("remove").Inc()
			a.log.Error("removing pod", "uid", uid, "err", err)
			continue
		}
		delete(byUID, uid)
		acted = true
		a.mu.Lock()
		delete(a.removing, uid)
		a.mu.Unlock()
		a.hooks.forget(uid)
		for k := range a.initStarts {
			if strings.HasPrefix(k, uid+"/") {
				delete(a.initStarts, k)
			}
		}
		a.restarts.forget(uid)
		a.markDirty(uid)
	}

	// Workloads deleted before their pod existed have nothing to remove.
	a.mu.Lock()
	for uid := range a.removing {
		if byUID[uid] == nil && creating[uid].IsZero() {
			delete(a.removing, uid)
		}
	}
	for uid := range a.created {
		if !desired[uid] {
			delete(a.created, uid)
		}
	}
	for key, st := range a.ephemeral {
		if uid, _, _ := strings.Cut(key, "/"); !desired[uid] && !st.running {
			delete(a.ephemeral, key)
		}
	}
	a.mu.Unlock()

	now := time.Now()
	notes := map[string]*pending{}
	restarted := 0
	for _, r := range records {
		w := &r.Workload
		note := &pending{waiting: map[string]bool{}}
		notes[w.UID] = note
		hash := specHash(w)
		p := byUID[w.UID]
		if !creating[w.UID].IsZero() {
			continue // its status comes when the creation ends
		}
		if a.enforceDeadline(ctx, &r, p, now, &next) {
			continue
		}
		if p != nil && !sameSpec(p, w) {
			a.log.Info("workload changed; recreating pod", "pod", w.Namespace+"/"+w.Name)
			if err := a.rt.RemovePod(ctx, w.UID, grace(w)); err != nil {
				metrics.AgentRuntimeErrors.WithLabelValues("remove").Inc()
				note.createErr = err
				continue
			}
			a.restarts.forget(w.UID)
			acted = true
			p = nil
		}
		if p == nil {
			if res, ok := a.lastCreate(w.UID); ok && res.err != nil {
				// The last attempt failed: report it until the retry.
				note.createErr = res.err
				retry := initialBackoff
				if errors.Is(res.err, ErrRuntimeUnavailable) {
					retry = 5 * time.Second
				}
				if wait := time.Until(res.at.Add(retry)); wait > 0 {
					note.backoff = true
					next = min(next, wait)
					continue
				}
			}
			a.startCreate(ctx, w, hash)
			acted = true
			continue // its status comes when the creation ends
		}
		a.updateVolumes(ctx, w)
		a.startEphemerals(ctx, w, p)
		if a.advanceInit(ctx, w, p, note) {
			acted = true
		}
		d, n := a.restartExited(ctx, &r, p, note, now)
		if d > 0 {
			next = min(next, d)
		}
		restarted += n
	}

	// Report.
	a.mu.Lock()
	a.podCount = len(byUID)
	a.mu.Unlock()
	// What was listed above still holds unless this pass changed something.
	if acted || restarted > 0 {
		if fresh, err := a.rt.ListPods(ctx); err == nil {
			byUID = make(map[string]*PodState, len(fresh))
			for i := range fresh {
				byUID[fresh[i].UID] = &fresh[i]
			}
		}
	}
	a.probes.sync(ctx, records, byUID)
	a.syncPostStart(ctx, records, byUID)
	creating = a.creatingNow()
	for _, r := range a.store.List() {
		uid := r.Workload.UID
		if started := creating[uid]; !started.IsZero() && time.Since(started) < creatingReportDelay {
			// A quick creation reports Running straight away, which saves
			// the API server a status write per pod; a slow one (an image
			// pull) reports ContainerCreating.
			continue
		}
		note := notes[uid]
		if note == nil {
			note = &pending{waiting: map[string]bool{}}
		}
		if res, ok := a.lastCreate(uid); ok && res.err != nil && byUID[uid] == nil && creating[uid].IsZero() {
			note.createErr = res.err
		}
		a.fillLogTails(ctx, &r, byUID[uid], note)
		for _, c := range r.Workload.EphemeralContainers {
			if err := a.ephemeralError(uid, c.Name); err != nil {
				if note.ephemeral == nil {
					note.ephemeral = map[string]error{}
				}
				note.ephemeral[c.Name] = err
			}
		}
		a.publish(ctx, buildStatus(&r, byUID[uid], note, a.hostIP(), &a.probes))
	}
	a.flushDeletes(ctx, a.store.UIDs())
	return next
}

// restartExited applies the restart policy to exited containers. It returns
// when to look again for a container in back-off (or 0), and how many
// containers it restarted.
func (a *Agent) restartExited(ctx context.Context, r *Record, p *PodState, note *pending, now time.Time) (time.Duration, int) {
	w := &r.Workload
	var wait time.Duration
	restarted := 0
	kinds := containerKinds(w)
	for _, c := range p.Containers {
		if c.State != ContainerExited {
			continue
		}
		kind, known := kinds[c.Name]
		if !known {
			kind = kindUnknown
		}
		switch kind {
		case kindEphemeral, kindUnknown:
			continue // never restarted
		case kindSidecar:
			// Sidecars restart whatever the pod's policy.
		case kindInit:
			// An init container that succeeded is done; one that failed
			// runs again unless the pod never restarts.
			if c.ExitCode == 0 || w.RestartPolicy == bridge.RestartNever {
				continue
			}
		default:
			switch w.RestartPolicy {
			case bridge.RestartNever:
				continue
			case bridge.RestartOnFailure:
				if c.ExitCode == 0 {
					continue
				}
			}
		}
		key := w.UID + "/" + c.Name
		if c.FinishedAt.After(c.StartedAt) && c.FinishedAt.Sub(c.StartedAt) > backoffReset {
			delete(a.restarts.backoff, key)
		}
		if p.Stopped {
			// The device rebooted (or the pod was stopped by hand): start
			// at once, as a kubelet does after a reboot.
			delete(a.restarts.backoff, key)
			a.restarts.next[key] = now
		}
		at, scheduled := a.restarts.next[key]
		if !scheduled {
			b := a.restarts.backoff[key]
			if b == 0 {
				b = initialBackoff
			} else {
				b = min(b*2, maxBackoff)
			}
			a.restarts.backoff[key] = b
			base := c.FinishedAt
			if base.IsZero() {
				base = now
			}
			at = base.Add(b)
			a.restarts.next[key] = at
		}
		if now.Before(at) {
			note.waiting[c.Name] = true
			d := at.Sub(now)
			if wait == 0 || d < wait {
				wait = d
			}
			continue
		}
		term := &bridge.Termination{ExitCode: c.ExitCode, Reason: terminationReason(&c)}
		if !c.StartedAt.IsZero() {
			t := c.StartedAt
			term.StartedAt = &t
		}
		if !c.FinishedAt.IsZero() {
			t := c.FinishedAt
			term.FinishedAt = &t
		}
		if err := a.store.Update(w.UID, func(rec *Record) {
			if rec.Restarts == nil {
				rec.Restarts = map[string]int32{}
			}
			if rec.LastTermination == nil {
				rec.LastTermination = map[string]*bridge.Termination{}
			}
			rec.Restarts[c.Name]++
			rec.LastTermination[c.Name] = term
		}); err != nil {
			a.log.Error("recording restart", "pod", w.Namespace+"/"+w.Name, "err", err)
		}
		delete(a.restarts.next, key)
		a.log.Info("restarting container", "pod", w.Namespace+"/"+w.Name, "container", c.Name, "exitCode", c.ExitCode)
		restarted++
		if err := a.rt.StartContainer(ctx, w.UID, c.Name); err != nil {
			metrics.AgentRuntimeErrors.WithLabelValues("start").Inc()
			a.log.Warn("restarting container", "pod", w.Namespace+"/"+w.Name, "container", c.Name, "err", err)
			note.waiting[c.Name] = true
		}
	}
	return wait, restarted
}

func grace(w *bridge.Workload) time.Duration {
	if w.TerminationGracePeriodSeconds != nil && *w.TerminationGracePeriodSeconds >= 0 {
		return time.Duration(*w.TerminationGracePeriodSeconds) * time.Second
	}
	return defaultGrace
}

func (a *Agent) setRuntimeErr(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		a.runtimeErr = ""
		return
	}
	a.runtimeErr = err.Error()
}

func (a *Agent) markDirty(uid string) {
	a.mu.Lock()
	a.dirty[uid] = true
	a.mu.Unlock()
}

// updateVolumes brings the volume files of w's running pod up to date if
// the workload changed since they were written.
func (a *Agent) updateVolumes(ctx context.Context, w *bridge.Workload) {
	a.mu.Lock()
	stale := a.volumesStale[w.UID]
	a.mu.Unlock()
	if stale == 0 {
		return
	}
	// The stored workload now, not the pass's copy: one received while
	// this pass ran is stored before it is marked.
	if r, ok := a.store.Get(w.UID); ok {
		w = &r.Workload
	}
	if vu, ok := a.rt.(VolumeUpdater); ok {
		if err := vu.UpdateVolumes(ctx, w); err != nil {
			a.log.Warn("updating volume files", "pod", w.Namespace+"/"+w.Name, "err", err)
			return
		}
	}
	a.mu.Lock()
	if a.volumesStale[w.UID] == stale {
		delete(a.volumesStale, w.UID)
	}
	a.mu.Unlock()
}

// noteOrphan logs, once per agent run, a pod that runs without a stored
// workload and that nothing says to remove: it keeps running until its
// workload arrives (adopted without a restart) or the index drops it.
func (a *Agent) noteOrphan(uid string, p *PodState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.orphans == nil {
		a.orphans = map[string]bool{}
	}
	if !a.orphans[uid] {
		a.orphans[uid] = true
		a.log.Info("keeping a pod with no stored workload until the provider says otherwise", "pod", p.Namespace+"/"+p.Name, "uid", uid)
	}
}

// maxParallelCreates bounds the pod creations (image pulls) a device runs at
// once.
const maxParallelCreates = 3

// createResult is how the last creation of a pod ended.
type createResult struct {
	err error
	at  time.Time
}

// creatingNow returns the pods being created, with when each started.
func (a *Agent) creatingNow() map[string]time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]time.Time, len(a.creating))
	for uid, t := range a.creating {
		out[uid] = t
	}
	return out
}

func (a *Agent) lastCreate(uid string) (createResult, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.created[uid]
	return r, ok
}

// startCreate creates w's pod in the background, so that one slow image
// pull never holds up the rest of the device: restarts, removals and status
// reports of other pods go on. At most maxParallelCreates run at once.
func (a *Agent) startCreate(ctx context.Context, w *bridge.Workload, hash string) {
	a.mu.Lock()
	if a.creating == nil {
		a.creating = map[string]time.Time{}
		a.created = map[string]createResult{}
	}
	a.creating[w.UID] = time.Now()
	a.mu.Unlock()
	a.restarts.forget(w.UID) // a new pod starts with no back-off
	a.log.Info("creating pod", "pod", w.Namespace+"/"+w.Name, "uid", w.UID)
	// A pass once the creation counts as slow reports ContainerCreating.
	time.AfterFunc(creatingReportDelay+50*time.Millisecond, a.kick)
	// The host's IPs are the agent's to give; the pod's IP the runtime
	// fills in once the pod's sandbox has one.
	wc := *FillFieldRefs(w, hostFieldValues(a.hostIP(), w.HostNetwork))
	go func() {
		select {
		case a.createSlots <- struct{}{}:
			defer func() { <-a.createSlots }()
		case <-ctx.Done():
			return
		}
		err := a.rt.CreatePod(ctx, &wc, hash)
		if err != nil {
			metrics.AgentRuntimeErrors.WithLabelValues("create").Inc()
			a.log.Warn("creating pod", "pod", wc.Namespace+"/"+wc.Name, "err", err)
		}
		a.mu.Lock()
		delete(a.creating, wc.UID)
		a.created[wc.UID] = createResult{err: err, at: time.Now()}
		a.dirty[wc.UID] = true
		a.mu.Unlock()
		a.kick()
	}()
}
