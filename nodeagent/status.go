package nodeagent

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// buildStatus derives a workload's PodStatus from what the runtime holds (p,
// nil when there is no pod) and what the last pass learned (note).
func buildStatus(r *Record, p *PodState, note *pending, hostIP string, probes readiness) *bridge.PodStatus {
	w := &r.Workload
	st := &bridge.PodStatus{
		UID:        w.UID,
		Namespace:  w.Namespace,
		Name:       w.Name,
		Generation: w.Generation,
		HostIP:     hostIP,
		ObservedAt: time.Now().UTC(),
	}
	if !r.Accepted.IsZero() {
		t := r.Accepted.UTC().Truncate(time.Second)
		st.StartTime = &t
	}
	// A pod on the pod network has its sandbox's IP once the runtime knows
	// it, and none before: as a kubelet, never the host's in its place.
	if p != nil {
		st.PodIP = p.PodIP
	}
	if w.HostNetwork {
		st.PodIP = hostIP
	}
	byName := map[string]*ContainerState{}
	if p != nil {
		for i := range p.Containers {
			byName[p.Containers[i].Name] = &p.Containers[i]
		}
	}
	var ce *ContainerError
	errors.As(note.createErr, &ce)
	initDone := true
	initFailed := false
	for _, c := range w.InitContainers {
		cs := containerStatus(r, &c, byName[c.Name], note, ce)
		sidecar := c.RestartPolicy == bridge.RestartAlways
		switch {
		case sidecar:
			cs.Ready = cs.State == bridge.StateRunning && probes.ready(w.UID, &c, cs.ContainerID)
			cs.ProbeFailure = probes.failure(w.UID, c.Name, cs.ContainerID)
			cs.Started = ptrBool(cs.State == bridge.StateRunning && probes.started(w.UID, &c, cs.ContainerID))
			if !*cs.Started && cs.RestartCount == 0 && cs.LastTermination == nil {
				initDone = false
			}
		default:
			// As a kubelet: an init container that ran to success is ready.
			done := cs.State == bridge.StateTerminated && cs.ExitCode == 0
			cs.Ready = done
			if !done {
				initDone = false
				if cs.State == bridge.StateTerminated && w.RestartPolicy == bridge.RestartNever {
					initFailed = true
				}
			}
			if cs.State == bridge.StateWaiting && cs.Reason == "ContainerCreating" {
				cs.Reason = "PodInitializing"
			}
		}
		st.InitContainers = append(st.InitContainers, cs)
	}
	for _, c := range w.Containers {
		cs := containerStatus(r, &c, byName[c.Name], note, ce)
		if cs.State == bridge.StateRunning {
			cs.Ready = probes.ready(w.UID, &c, cs.ContainerID)
			cs.ProbeFailure = probes.failure(w.UID, c.Name, cs.ContainerID)
			cs.Started = ptrBool(probes.started(w.UID, &c, cs.ContainerID))
		} else if c.Startup != nil || c.Readiness != nil || c.PostStart != nil {
			cs.Started = ptrBool(false)
		}
		if len(w.InitContainers) > 0 && !initDone && cs.State == bridge.StateWaiting && cs.Reason == "ContainerCreating" {
			cs.Reason = "PodInitializing"
		}
		st.Containers = append(st.Containers, cs)
	}
	for _, c := range w.EphemeralContainers {
		// Ephemeral containers are never ready and never restarted; one
		// that could not be started says why.
		enote := &pending{waiting: map[string]bool{}, logTails: note.logTails, createErr: note.ephemeral[c.Name]}
		var ece *ContainerError
		errors.As(enote.createErr, &ece)
		cs := containerStatus(r, &c, byName[c.Name], enote, ece)
		cs.Ready = false
		st.EphemeralContainers = append(st.EphemeralContainers, cs)
	}
	if len(w.InitContainers) > 0 {
		st.Initialized = ptrBool(initDone)
	}
	if r.DeadlineExceeded && !anyRunning(st) {
		// Failed once its containers have stopped (within the grace
		// period): a terminal phase is final, and virtual-kubelet writes
		// no later status of a Failed pod, so the containers' last states
		// must be in this one.
		st.Phase, st.Reason, st.Message = bridge.PhaseFailed, ReasonDeadlineExceeded, deadlineMessage
		return st
	}
	switch {
	case initFailed:
		st.Phase = bridge.PhaseFailed
		return st
	case !initDone:
		st.Phase = bridge.PhasePending
		return st
	}
	st.Phase = podPhase(w.RestartPolicy, st.Containers)
	return st
}

// containerStatus describes one container from the runtime's state (rc,
// nil when it does not exist) and what the last pass learned.
func containerStatus(r *Record, c *bridge.Container, rc *ContainerState, note *pending, ce *ContainerError) bridge.ContainerStatus {
	cs := bridge.ContainerStatus{
		Name:            c.Name,
		Image:           c.Image,
		RestartCount:    r.Restarts[c.Name],
		LastTermination: r.LastTermination[c.Name],
	}
	switch {
	case rc == nil && note.createErr != nil:
		cs.State = bridge.StateWaiting
		cs.Reason = ReasonCreateContainerError
		if ce != nil && (ce.Container == c.Name || ce.Container == "") {
			cs.Reason = ce.Reason
			if cs.Reason == ReasonErrImagePull && note.backoff {
				cs.Reason = "ImagePullBackOff"
			}
		}
		cs.Message = note.createErr.Error()
		if ce != nil && ce.Container == c.Name && ce.Reason == ReasonCreateContainerConfigError {
			cs.Message = ce.Err.Error() // kubelet's message, as kubelet shows it
		}
	case rc == nil:
		cs.State = bridge.StateWaiting
		cs.Reason = "ContainerCreating"
	default:
		cs.ContainerID = rc.ID
		cs.ImageID = rc.ImageID
		switch rc.State {
		case ContainerRunning:
			cs.State = bridge.StateRunning
			cs.Ready = true
			cs.StartedAt = timePtr(rc.StartedAt)
		case ContainerExited:
			if note.waiting[c.Name] {
				cs.State = bridge.StateWaiting
				cs.Reason = "CrashLoopBackOff"
				cs.Message = "back-off restarting failed container " + c.Name
				cs.LastTermination = &bridge.Termination{
					ExitCode: rc.ExitCode, Reason: terminationReason(rc), Message: terminationMessage(c, rc, note),
					StartedAt: timePtr(rc.StartedAt), FinishedAt: timePtr(rc.FinishedAt),
				}
				break
			}
			cs.State = bridge.StateTerminated
			cs.ExitCode = rc.ExitCode
			cs.Reason = terminationReason(rc)
			cs.Message = terminationMessage(c, rc, note)
			cs.StartedAt = timePtr(rc.StartedAt)
			cs.FinishedAt = timePtr(rc.FinishedAt)
		case ContainerCreated:
			cs.State = bridge.StateWaiting
			cs.Reason = "ContainerCreating"
			if rc.Error != "" {
				cs.Reason = ReasonRunContainerError
				cs.Message = rc.Error
			}
		default:
			cs.State = bridge.StateWaiting
			cs.Reason = "ContainerStateUnknown"
			cs.Message = rc.Error
		}
	}
	return cs
}

func ptrBool(b bool) *bool { return &b }

// terminationMessage is an exited container's message: what it wrote to
// its terminationMessagePath, or with FallbackToLogsOnError and a failure,
// the tail of its log; else the runtime's error.
func terminationMessage(c *bridge.Container, rc *ContainerState, note *pending) string {
	switch {
	case rc.TerminationMessage != "":
		return rc.TerminationMessage
	case c.TerminationMessagePolicy == "FallbackToLogsOnError" && rc.ExitCode != 0 && note.logTails[c.Name] != "":
		return note.logTails[c.Name]
	}
	return rc.Error
}

// podPhase follows kubelet's getPhase.
func podPhase(policy string, cs []bridge.ContainerStatus) string {
	var running, waiting, stopped, succeeded int
	for _, c := range cs {
		switch c.State {
		case bridge.StateRunning:
			running++
		case bridge.StateTerminated:
			stopped++
			if c.ExitCode == 0 {
				succeeded++
			}
		default:
			// A container waiting to restart has run before.
			if c.LastTermination != nil {
				stopped++
			} else {
				waiting++
			}
		}
	}
	switch {
	case len(cs) == 0:
		return bridge.PhasePending
	case waiting > 0:
		return bridge.PhasePending
	case running > 0:
		return bridge.PhaseRunning
	case running == 0 && stopped > 0 && policy == bridge.RestartAlways:
		return bridge.PhaseRunning
	case stopped == len(cs) && succeeded == stopped:
		return bridge.PhaseSucceeded
	case stopped == len(cs) && policy == bridge.RestartNever:
		return bridge.PhaseFailed
	case stopped == len(cs) && policy == bridge.RestartOnFailure:
		return bridge.PhaseRunning
	}
	return bridge.PhasePending
}

func terminationReason(c *ContainerState) string {
	switch {
	case c.OOMKilled:
		return "OOMKilled"
	case c.ExitCode == 0:
		return "Completed"
	case c.Error != "":
		return "ContainerCannotRun"
	}
	return "Error"
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC().Truncate(time.Second)
	return &u
}

// publish writes st to the status bucket if it differs from what was last
// written, or if it is marked dirty. Without NATS it stays dirty.
func (a *Agent) publish(ctx context.Context, st *bridge.PodStatus) {
	a.mu.Lock()
	last := a.published[st.UID]
	dirty := a.dirty[st.UID]
	a.mu.Unlock()
	if !dirty && last != nil && sameStatus(last, st) {
		return
	}
	_, skv, err := a.buckets(ctx)
	if err == nil {
		var data []byte
		if data, err = bridge.Encode(st); err == nil {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = skv.Put(pctx, bridge.PodKey(a.cfg.Device, st.UID), data)
			cancel()
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.published[st.UID] = st
	if err != nil {
		a.dirty[st.UID] = true
		a.log.Debug("status not published; will retry", "pod", st.Namespace+"/"+st.Name, "err", err)
		return
	}
	delete(a.dirty, st.UID)
}

// flushDeletes deletes the status keys of pods that are gone from the device
// (not in keep), once their containers are removed.
func (a *Agent) flushDeletes(ctx context.Context, keep map[string]bool) {
	a.mu.Lock()
	var gone []string
	for uid := range a.dirty {
		if !keep[uid] {
			if _, removing := a.removing[uid]; !removing {
				gone = append(gone, uid)
			}
		}
	}
	a.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	_, skv, err := a.buckets(ctx)
	if err != nil {
		return
	}
	for _, uid := range gone {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := skv.Delete(pctx, bridge.PodKey(a.cfg.Device, uid))
		cancel()
		if err != nil {
			a.log.Debug("status delete not published; will retry", "uid", uid, "err", err)
			continue
		}
		a.mu.Lock()
		delete(a.dirty, uid)
		delete(a.published, uid)
		a.mu.Unlock()
	}
}

// sameStatus compares two statuses, ignoring when they were taken.
func sameStatus(x, y *bridge.PodStatus) bool {
	cx, cy := *x, *y
	cx.ObservedAt, cy.ObservedAt = time.Time{}, time.Time{}
	return reflect.DeepEqual(cx, cy)
}

// anyRunning reports whether a container of st runs.
func anyRunning(st *bridge.PodStatus) bool {
	for _, cs := range append(slices.Clone(st.InitContainers), st.Containers...) {
		if cs.State == bridge.StateRunning {
			return true
		}
	}
	return false
}
