package provider

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// startedEventWindow bounds how old a container's start may be for the
// provider to record it: a provider that restarts reads every pod's status
// afresh, and must not announce every running container again.
const startedEventWindow = 2 * time.Minute

// podEvents records on pod the Events a kubelet records, for what changed
// between two reports of its device: Started for every new run, also one
// that ended between two reports (not Created as well: one Event per
// container start is what a fleet's API server pays), image pull
// failures (Failed, BackOff), crash loops (BackOff), configuration errors
// (Failed), failing probes (Unhealthy) and OOM kills.
func (p *Provider) podEvents(pod *corev1.Pod, old, cur *bridge.PodStatus) {
	if p.recorder == nil || pod == nil || cur == nil {
		return
	}
	prev := map[string]bridge.ContainerStatus{}
	if old != nil {
		for _, c := range append(append([]bridge.ContainerStatus{}, old.InitContainers...), old.Containers...) {
			prev[c.Name] = c
		}
	}
	images := map[string]string{}
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		images[c.Name] = c.Image
	}
	for _, c := range append(append([]bridge.ContainerStatus{}, cur.InitContainers...), cur.Containers...) {
		o := prev[c.Name]
		warn := func(reason, format string, args ...any) {
			p.recorder.Eventf(pod, corev1.EventTypeWarning, reason, format, args...)
		}
		// A start is announced even if the device never reported the
		// container running: a quick one has exited by its next report.
		if t := lastStart(&c); t != nil && time.Since(*t) < startedEventWindow {
			if ot := lastStart(&o); ot == nil || !ot.Equal(*t) {
				p.recorder.Eventf(pod, corev1.EventTypeNormal, "Started", "Started container %s", c.Name)
			}
		}
		if c.State == bridge.StateWaiting && (c.Reason != o.Reason || c.Message != o.Message) {
			pulling := func(r string) bool { return r == "ErrImagePull" || r == "ImagePullBackOff" }
			switch c.Reason {
			case "ErrImagePull", "ImagePullBackOff":
				// A device may report the back-off first: the failure is
				// said once per message, the back-off once per spell.
				if !pulling(o.Reason) || c.Message != o.Message {
					warn("Failed", "Failed to pull image %q: %s", images[c.Name], c.Message)
				}
				if c.Reason == "ImagePullBackOff" && o.Reason != "ImagePullBackOff" {
					p.recorder.Eventf(pod, corev1.EventTypeNormal, "BackOff", "Back-off pulling image %q", images[c.Name])
				}
			case "CrashLoopBackOff":
				warn("BackOff", "Back-off restarting failed container %s in pod %s_%s(%s)", c.Name, pod.Name, pod.Namespace, pod.UID)
			case "CreateContainerConfigError", "CreateContainerError", "InvalidImageName":
				warn("Failed", "Error: %s", c.Message)
			}
		}
		if c.ProbeFailure != "" && c.ProbeFailure != o.ProbeFailure {
			warn("Unhealthy", "%s", c.ProbeFailure)
		}
		if t := c.LastTermination; t != nil && t.Reason == "OOMKilled" &&
			(o.LastTermination == nil || o.LastTermination.FinishedAt == nil || t.FinishedAt == nil || !o.LastTermination.FinishedAt.Equal(*t.FinishedAt)) {
			warn("OOMKilled", "Container %s was killed for using more memory than its limit (OOMKilled); restart count %d", c.Name, c.RestartCount)
		}
	}
}

// lastStart is when c's latest run started: the current run, running or
// exited, or while c waits to restart, the run that ended; nil if it never
// ran.
func lastStart(c *bridge.ContainerStatus) *time.Time {
	if c.State != bridge.StateWaiting {
		return c.StartedAt
	}
	if c.LastTermination != nil {
		return c.LastTermination.StartedAt
	}
	return nil
}

// vkChatter are virtual-kubelet's Events for what a kubelet does silently:
// a pod handed to the provider. One per pod created, changed or deleted
// costs the API server a write each, and reads like no kubelet; failures
// are kept.
var vkChatter = map[string]bool{
	"ProviderCreateSuccess": true,
	"ProviderUpdateSuccess": true,
	"ProviderDeleteSuccess": true,
}

// kubeletLikeRecorder drops virtual-kubelet's chatter (vkChatter).
type kubeletLikeRecorder struct{ record.EventRecorder }

func (r kubeletLikeRecorder) Event(o runtime.Object, typ, reason, msg string) {
	if !vkChatter[reason] {
		r.EventRecorder.Event(o, typ, reason, msg)
	}
}

func (r kubeletLikeRecorder) Eventf(o runtime.Object, typ, reason, format string, args ...any) {
	if !vkChatter[reason] {
		r.EventRecorder.Eventf(o, typ, reason, format, args...)
	}
}

func (r kubeletLikeRecorder) AnnotatedEventf(o runtime.Object, ann map[string]string, typ, reason, format string, args ...any) {
	if !vkChatter[reason] {
		r.EventRecorder.AnnotatedEventf(o, ann, typ, reason, format, args...)
	}
}
