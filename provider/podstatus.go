package provider

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// ConditionIgnoredFields is a pod condition listing spec fields that the
// device accepts but does not honour.
const ConditionIgnoredFields corev1.PodConditionType = "vk-fleet.io/IgnoredFields"

// podWithStatus returns a copy of ent's pod carrying the status vk-fleet
// knows. Callers hold p.mu.
func (p *Provider) podWithStatus(ent *podEntry) *corev1.Pod {
	if ent == nil || ent.pod == nil {
		return nil
	}
	pod := ent.pod.DeepCopy()
	prev := ent.pod.Status
	st := &pod.Status
	now := metav1.Now()

	switch {
	case ent.refusal != nil:
		*st = *ent.refusal.DeepCopy()
		st.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: scheduledAt(&prev, now)}}
		for _, c := range pod.Spec.Containers {
			st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
				Name: c.Name, Image: c.Image,
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "UnsupportedPodSpec", Message: st.Message}},
			})
		}
	case ent.status == nil && ent.waiting != "" && !ent.deleting:
		// Its ConfigMap or Secret is missing or unreadable: retried.
		p.pendingStatus(pod, st, &prev, now, "CreateContainerConfigError", ent.waiting)
	case ent.status == nil && ent.deleting:
		// The device has removed (or never ran) the pod.
		terminateAll(pod, st)
	case ent.status == nil:
		// Not reported yet: the device may be offline.
		p.pendingStatus(pod, st, &prev, now, "ContainerCreating", "waiting for device "+pod.Spec.NodeName)
	default:
		fromDevice(pod, ent.status, st, &prev, now, p.cfg.NodeAddress)
	}
	if len(ent.ignored) > 0 {
		st.Conditions = append(st.Conditions, corev1.PodCondition{
			Type: ConditionIgnoredFields, Status: corev1.ConditionTrue, Reason: "NotSupportedOnDevice",
			Message:            "accepted but not honoured on the device: " + strings.Join(ent.ignored, "; "),
			LastTransitionTime: transitionTime(&prev, ConditionIgnoredFields, corev1.ConditionTrue, now),
		})
	}
	if ent.resize != "" && ent.refusal == nil {
		st.Conditions = append(st.Conditions, corev1.PodCondition{
			Type: corev1.PodResizePending, Status: corev1.ConditionTrue, Reason: corev1.PodReasonInfeasible,
			Message:            ent.resize,
			LastTransitionTime: transitionTime(&prev, corev1.PodResizePending, corev1.ConditionTrue, now),
		})
	}
	observeGeneration(pod.Generation, st, &prev)
	return pod
}

// observeGeneration says which generation of the pod's spec st answers, as
// a kubelet does (status.observedGeneration and that of the conditions it
// owns): a spec update that changes nothing on the device (tolerations,
// activeDeadlineSeconds) is acknowledged too. PodScheduled is the
// scheduler's and keeps what it had.
func observeGeneration(gen int64, st, prev *corev1.PodStatus) {
	st.ObservedGeneration = gen
	for i := range st.Conditions {
		c := &st.Conditions[i]
		if c.Type != corev1.PodScheduled {
			c.ObservedGeneration = gen
			continue
		}
		c.ObservedGeneration = 0
		for _, pc := range prev.Conditions {
			if pc.Type == corev1.PodScheduled {
				c.ObservedGeneration = pc.ObservedGeneration
			}
		}
	}
}

// pendingStatus makes st the status of a pod not running yet, every
// container waiting with reason and message.
func (p *Provider) pendingStatus(pod *corev1.Pod, st, prev *corev1.PodStatus, now metav1.Time, reason, message string) {
	st.Phase = corev1.PodPending
	st.HostIP = p.cfg.NodeAddress
	st.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: scheduledAt(prev, now)}}
	st.ContainerStatuses, st.InitContainerStatuses = nil, nil
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}},
		})
	}
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}},
		})
	}
}

func fromDevice(pod *corev1.Pod, ds *bridge.PodStatus, st *corev1.PodStatus, prev *corev1.PodStatus, now metav1.Time, hostIP string) {
	st.Phase = corev1.PodPhase(ds.Phase)
	st.Reason, st.Message = ds.Reason, ds.Message
	st.HostIP = hostIP
	st.HostIPs = []corev1.HostIP{{IP: hostIP}}
	st.PodIP = ds.PodIP
	st.PodIPs = nil
	if ds.PodIP != "" {
		st.PodIPs = []corev1.PodIP{{IP: ds.PodIP}}
	} else if prev != nil && prev.PodIP != "" {
		// As a kubelet: an IP the pod had is kept when the device knows
		// none now (its sandbox stopped with the pod, or was removed).
		st.PodIP, st.PodIPs = prev.PodIP, slices.Clone(prev.PodIPs)
	}
	if ds.StartTime != nil {
		t := metav1.NewTime(*ds.StartTime)
		st.StartTime = &t
	}
	st.ContainerStatuses = nil
	allReady, anyCreated := len(ds.Containers) > 0, false
	for _, c := range ds.Containers {
		cs := containerStatusOf(&c)
		if cs.ContainerID != "" {
			anyCreated = true
		}
		if !c.Ready {
			allReady = false
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	st.InitContainerStatuses = nil
	// The device says whether the init sequence is done (devices before v6
	// run no init containers).
	initialized := ds.Initialized == nil || *ds.Initialized
	sidecars := map[string]bool{}
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecars[c.Name] = true
		}
	}
	for _, c := range ds.InitContainers {
		cs := containerStatusOf(&c)
		if cs.ContainerID != "" {
			anyCreated = true
		}
		if !sidecars[c.Name] {
			// As a kubelet: an init container that succeeded is ready
			// (devices before this said false).
			cs.Ready = c.State == bridge.StateTerminated && c.ExitCode == 0
		}
		if sidecars[c.Name] && !c.Ready {
			allReady = false // a sidecar's readiness counts for the Pod's
		}
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
	}
	st.EphemeralContainerStatuses = nil
	for _, c := range ds.EphemeralContainers {
		st.EphemeralContainerStatuses = append(st.EphemeralContainerStatuses, containerStatusOf(&c))
	}
	cond := func(t corev1.PodConditionType, ok bool, reason, message string) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
			reason, message = "", ""
		}
		return corev1.PodCondition{Type: t, Status: s, Reason: reason, Message: message, LastTransitionTime: transitionTime(prev, t, s, now)}
	}
	terminal := st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed
	containersReady := allReady && st.Phase == corev1.PodRunning
	crReason, crMessage := containersNotReady(&pod.Spec, st)
	// Readiness gates: conditions others set on the Pod; it is Ready only
	// when every one is True, and they are kept as they are.
	readyReason, readyMessage := crReason, crMessage
	var gates []corev1.PodCondition
	var gateMessages []string
	for _, g := range pod.Spec.ReadinessGates {
		found := false
		for _, c := range prev.Conditions {
			if c.Type == g.ConditionType {
				gates, found = append(gates, c), true
				if c.Status != corev1.ConditionTrue {
					gateMessages = append(gateMessages, fmt.Sprintf("the status of pod readiness gate %q is not \"True\", but %v", g.ConditionType, c.Status))
				}
			}
		}
		if !found {
			gateMessages = append(gateMessages, fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", g.ConditionType))
		}
	}
	ready := containersReady && len(gateMessages) == 0
	if containersReady && !ready {
		readyReason, readyMessage = "ReadinessGatesNotReady", strings.Join(gateMessages, ", ")
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, anyCreated && !terminal, "", ""),
		cond(corev1.PodInitialized, initialized, "ContainersNotInitialized", notInitialized(&pod.Spec, st)),
		cond(corev1.PodReady, ready, readyReason, readyMessage),
		cond(corev1.ContainersReady, containersReady, crReason, crMessage),
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: scheduledAt(prev, now)},
	}
	st.Conditions = append(st.Conditions, gates...)
}

// containerStatusOf is a device's container status as Kubernetes spells it.
func containerStatusOf(c *bridge.ContainerStatus) corev1.ContainerStatus {
	cs := corev1.ContainerStatus{
		Name: c.Name, Image: c.Image, ImageID: c.ImageID,
		RestartCount: c.RestartCount, Ready: c.Ready,
	}
	if c.ContainerID != "" {
		cs.ContainerID = "podman://" + c.ContainerID
	}
	started := c.State == bridge.StateRunning
	if c.Started != nil {
		started = *c.Started
	}
	cs.Started = &started
	switch c.State {
	case bridge.StateRunning:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: mt(c.StartedAt)}
	case bridge.StateTerminated:
		cs.State.Terminated = &corev1.ContainerStateTerminated{
			ExitCode: c.ExitCode, Reason: c.Reason, Message: c.Message,
			StartedAt: mt(c.StartedAt), FinishedAt: mt(c.FinishedAt), ContainerID: cs.ContainerID,
		}
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: c.Reason, Message: c.Message}
	}
	if lt := c.LastTermination; lt != nil {
		cs.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{
			ExitCode: lt.ExitCode, Reason: lt.Reason, Message: lt.Message, StartedAt: mt(lt.StartedAt), FinishedAt: mt(lt.FinishedAt),
		}
	}
	return cs
}

// containersNotReady is the reason and message of a False ContainersReady
// condition, as a kubelet words them (GenerateContainersReadyCondition):
// the pod is done, or these containers (sidecars among them) are not
// ready or not reported.
func containersNotReady(spec *corev1.PodSpec, st *corev1.PodStatus) (reason, message string) {
	var unknown, unready []string
	check := func(c *corev1.Container, statuses []corev1.ContainerStatus) {
		cs, ok := statusOf(statuses, c.Name)
		switch {
		case !ok:
			unknown = append(unknown, c.Name)
		case !cs.Ready:
			unready = append(unready, c.Name)
		}
	}
	for i := range spec.InitContainers {
		if isSidecar(&spec.InitContainers[i]) {
			check(&spec.InitContainers[i], st.InitContainerStatuses)
		}
	}
	for i := range spec.Containers {
		check(&spec.Containers[i], st.ContainerStatuses)
	}
	switch {
	case st.Phase == corev1.PodSucceeded && len(unknown) == 0:
		return "PodCompleted", ""
	case st.Phase == corev1.PodFailed:
		return "PodFailed", ""
	}
	return "ContainersNotReady", statusLists("unready", unknown, unready)
}

// notInitialized is the message of a False Initialized condition, as a
// kubelet words it (GeneratePodInitializedCondition): the init containers
// that have not succeeded (a sidecar: not started) or are not reported.
func notInitialized(spec *corev1.PodSpec, st *corev1.PodStatus) string {
	var unknown, incomplete []string
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		cs, ok := statusOf(st.InitContainerStatuses, c.Name)
		switch {
		case !ok:
			unknown = append(unknown, c.Name)
		case isSidecar(c) && (cs.Started == nil || !*cs.Started), !isSidecar(c) && !cs.Ready:
			incomplete = append(incomplete, c.Name)
		}
	}
	return statusLists("incomplete", unknown, incomplete)
}

// statusLists says which containers are unknown and which are what, as
// "containers with unknown status: [a], containers with unready status: [b c]".
func statusLists(what string, unknown, others []string) string {
	var parts []string
	if len(unknown) > 0 {
		parts = append(parts, fmt.Sprintf("containers with unknown status: %s", unknown))
	}
	if len(others) > 0 {
		parts = append(parts, fmt.Sprintf("containers with %s status: %s", what, others))
	}
	return strings.Join(parts, ", ")
}

func statusOf(statuses []corev1.ContainerStatus, name string) (corev1.ContainerStatus, bool) {
	for _, cs := range statuses {
		if cs.Name == name {
			return cs, true
		}
	}
	return corev1.ContainerStatus{}, false
}

// isSidecar reports whether an init container keeps running beside the
// app (restartPolicy Always).
func isSidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// terminateAll marks every container of a deleted pod terminated, which
// lets the pod controller remove the Pod object.
func terminateAll(pod *corev1.Pod, st *corev1.PodStatus) {
	now := metav1.Now()
	terminate := func(spec []corev1.Container, statuses []corev1.ContainerStatus) []corev1.ContainerStatus {
		byName := map[string]corev1.ContainerStatus{}
		for _, cs := range statuses {
			byName[cs.Name] = cs
		}
		var out []corev1.ContainerStatus
		for _, c := range spec {
			cs := byName[c.Name]
			cs.Name, cs.Image, cs.Ready = c.Name, c.Image, false
			if cs.State.Terminated == nil {
				var started metav1.Time
				if cs.State.Running != nil {
					started = cs.State.Running.StartedAt
				}
				cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: 0, Reason: "Completed", Message: "removed from the device",
					StartedAt: started, FinishedAt: now, ContainerID: cs.ContainerID,
				}}
			}
			out = append(out, cs)
		}
		return out
	}
	st.ContainerStatuses = terminate(pod.Spec.Containers, st.ContainerStatuses)
	if len(pod.Spec.InitContainers) > 0 {
		st.InitContainerStatuses = terminate(pod.Spec.InitContainers, st.InitContainerStatuses)
	}
	for i := range st.Conditions {
		if st.Conditions[i].Type == corev1.PodReady || st.Conditions[i].Type == corev1.ContainersReady {
			st.Conditions[i].Status = corev1.ConditionFalse
		}
	}
}

func mt(t *time.Time) metav1.Time {
	if t == nil {
		return metav1.Time{}
	}
	return metav1.NewTime(*t)
}

func scheduledAt(prev *corev1.PodStatus, now metav1.Time) metav1.Time {
	return transitionTime(prev, corev1.PodScheduled, corev1.ConditionTrue, now)
}

// transitionTime keeps a condition's transition time while its status stays.
func transitionTime(prev *corev1.PodStatus, t corev1.PodConditionType, s corev1.ConditionStatus, now metav1.Time) metav1.Time {
	for _, c := range prev.Conditions {
		if c.Type == t && c.Status == s && !c.LastTransitionTime.IsZero() {
			return c.LastTransitionTime
		}
	}
	return metav1.NewTime(now.Truncate(time.Second))
}
