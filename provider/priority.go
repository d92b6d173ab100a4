package provider

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/vk-fleet/vk-fleet/internal/metrics"
)

// When a fleet comes back at once (its uplink restored, NATS restarted after
// the Nodes went NotReady), every device's Node must be written Ready, and
// every pod the node lifecycle controller marked NotReady written Ready
// again. Both go to one API server, which then also answers the control
// plane's own reaction. Node writes come first: a Node left NotReady keeps
// its taints, is counted by the zone's disruption state, and has its pods
// evicted once their toleration runs out; a pod's Ready condition can wait
// the few seconds the Nodes take. At 3,000 simulated devices coming back at
// once after their Nodes went NotReady, vk-fleet's pod status writes were
// 0.75 of the 2.5 API writes per device until the last Node was Ready; with
// them waiting, 0.06 of 1.8 (docs/benchmarks.md).

// Pod status writes wait for the Nodes while the Node writes progress: a
// backlog whose Node writes stalled for maxStatusStall (the API server
// refuses them, say) no longer holds them back, nor one older than
// maxStatusDefer. At 5,000 devices coming back at once the Node writes
// took more than a minute here; with a fixed 30 s bound the pod status
// writes then competed with them for the rest (docs/benchmarks.md).
const (
	maxStatusStall = 10 * time.Second
	maxStatusDefer = 3 * time.Minute
)

// backlogDevices is how many devices back from silence, their Nodes not
// yet written Ready, make a backlog: a fleet coming back at once, not one
// device, nor a few whose Node writes fail.
const backlogDevices = 16

// nodeBacklog reports whether pod status writes should wait for the Nodes:
// more than backlogDevices devices back from silence wait for their Node's
// Ready write, a Node was written Ready (or the backlog began) less than
// maxStatusStall ago, and the backlog began less than maxStatusDefer ago.
// Only those devices count: a rollout changes every device's Node too, and
// its pods' status writes must not wait for that.
func (p *Provider) nodeBacklog() bool {
	back := p.comingBack.Load()
	if back <= backlogDevices {
		if since := p.backlogSince.Swap(0); since != 0 {
			p.log.Info("pod status writes no longer wait for Node writes", "after", time.Since(time.Unix(0, since)).Round(time.Millisecond))
		}
		return false
	}
	now := time.Now().UnixNano()
	if p.backlogSince.CompareAndSwap(0, now) {
		p.log.Info("devices are coming back at once: pod status writes wait for their Node writes", "devices", back)
	}
	since := p.backlogSince.Load()
	progress := max(since, p.backlogProgress.Load())
	return time.Duration(now-since) < maxStatusDefer && time.Duration(now-progress) < maxStatusStall
}

// awaitNodeWrites returns when pod status writes no longer wait for the
// Nodes (nodeBacklog), or when ctx ends.
func (p *Provider) awaitNodeWrites(ctx context.Context) {
	if !p.nodeBacklog() {
		return
	}
	metrics.PodStatusWritesDeferred.Inc()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for p.nodeBacklog() {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// nodeFirstPods is the pod controller's client: its pod status writes wait
// while Node writes are backed up (awaitNodeWrites).
type nodeFirstPods struct {
	corev1client.PodsGetter
	await func(ctx context.Context)
}

func (c nodeFirstPods) Pods(namespace string) corev1client.PodInterface {
	return nodeFirstPodInterface{c.PodsGetter.Pods(namespace), c.await}
}

type nodeFirstPodInterface struct {
	corev1client.PodInterface
	await func(ctx context.Context)
}

// UpdateStatus writes pod's status once Node writes are not backed up. A
// pod the provider failed to start (ProviderFailed, written by the pod
// controller's sync workers, which must not stall) goes out at once.
func (c nodeFirstPodInterface) UpdateStatus(ctx context.Context, pod *corev1.Pod, opts metav1.UpdateOptions) (*corev1.Pod, error) {
	if pod.Status.Reason != providerFailedReason {
		c.await(ctx)
	}
	return c.PodInterface.UpdateStatus(ctx, pod, opts)
}

// providerFailedReason is the reason virtual-kubelet's pod controller writes
// when the provider refused to create or update a pod.
const providerFailedReason = "ProviderFailed"
