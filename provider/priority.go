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

// maxStatusDefer bounds how long a pod status write waits for the Node
// writes: past it, the pod's status goes out whatever the backlog.
const maxStatusDefer = 30 * time.Second

// backlogDevices is how many devices back from silence, their Nodes not
// yet written Ready, make a backlog: a fleet coming back at once, not one
// device, nor a few whose Node writes fail.
const backlogDevices = 16

// nodeBacklog reports whether a fleet is coming back: more than
// backlogDevices devices back from silence wait for their Node's Ready
// write. Only those count: a rollout changes every device's Node too, and
// its pods' status writes must not wait for that.
func (p *Provider) nodeBacklog() bool {
	return p.comingBack.Load() > backlogDevices
}

// awaitNodeWrites returns when no Node writes are backed up, after at most
// limit, or when ctx ends.
func (p *Provider) awaitNodeWrites(ctx context.Context, limit time.Duration) {
	if !p.nodeBacklog() {
		return
	}
	metrics.PodStatusWritesDeferred.Inc()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for p.nodeBacklog() {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
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
