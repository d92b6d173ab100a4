package provider

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vk-fleet/vk-fleet/internal/metrics"
)

// backlog queues more Node writes than the node workers take at once, with
// no worker running.
func backlog(p *Provider) {
	for i := range nodeWorkers + 1 {
		p.nodes.Add(fmt.Sprintf("queued-%d", i))
	}
}

// drain takes every queued Node write off the queue.
func drain(p *Provider) {
	for p.nodes.Len() > 0 {
		k, _ := p.nodes.Get()
		p.nodes.Done(k)
	}
}

// A pod status write waits while Node writes are backed up, and goes out
// once they are not; one of the pod controller's own error statuses never
// waits (its sync workers write it); no write waits past its limit.
func TestPodStatusWritesWaitForTheNodes(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}}
	cs := fake.NewClientset(pod)
	p, err := New(Config{Client: cs, NATS: startNATS(t), Registry: everyDevice{},
		LeaseDurationSeconds: 40, HeartbeatTimeout: time.Minute, StatusUpdateInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	backlog(p)

	const limit = 200 * time.Millisecond
	start := time.Now()
	p.awaitNodeWrites(ctx, limit)
	if el := time.Since(start); el < limit {
		t.Errorf("returned after %v with the Node writes backed up; the limit is %v", el, limit)
	}

	pods := nodeFirstPods{cs.CoreV1(), func(ctx context.Context) { p.awaitNodeWrites(ctx, time.Hour) }}.Pods("default")
	done := make(chan error, 1)
	failed := pod.DeepCopy()
	failed.Status = corev1.PodStatus{Phase: corev1.PodPending, Reason: providerFailedReason, Message: "refused"}
	go func() { _, err := pods.UpdateStatus(ctx, failed, metav1.UpdateOptions{}); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the pod controller's error status waited for the Node writes")
	}

	deferred := testutil.ToFloat64(metrics.PodStatusWritesDeferred)
	running := pod.DeepCopy()
	running.Status = corev1.PodStatus{Phase: corev1.PodRunning}
	go func() { _, err := pods.UpdateStatus(ctx, running, metav1.UpdateOptions{}); done <- err }()
	poll(t, "the status write waiting", func() bool { return testutil.ToFloat64(metrics.PodStatusWritesDeferred) > deferred })
	// The backlog is still there: the write cannot have gone out.
	if got, _ := cs.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{}); got.Status.Phase == corev1.PodRunning {
		t.Fatal("the pod's status was written while Node writes were backed up")
	}
	drain(p)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the status write still waits with no Node write queued")
	}
	if got, _ := cs.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{}); got.Status.Phase != corev1.PodRunning {
		t.Errorf("pod phase %q after the write, want Running", got.Status.Phase)
	}
}

// While other devices' Nodes wait to be written, a lease renewal due soon
// after its Node's status was written waits, until that status is two
// renewal intervals old; without a backlog, or once the status is older, it
// is renewed when due.
func TestLeaseWaitsForOtherNodesAfterAStatusWrite(t *testing.T) {
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "pi-1", Namespace: corev1.NamespaceNodeLease}}
	cs := fake.NewClientset(deviceNode("pi-1"), lease)
	p, err := New(Config{Client: cs, NATS: startNATS(t), Registry: everyDevice{},
		LeaseDurationSeconds: 40, HeartbeatTimeout: time.Minute, StatusUpdateInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	p.handleHeartbeat(ctx, heartbeat(t, "pi-1", 4))
	drain(p)
	p.mu.Lock()
	d := p.devices["pi-1"]
	p.mu.Unlock()
	renew := p.leaseRenewInterval() // 10 s
	// The status written 11 s ago, the lease as long ago: a renewal is due.
	due := func(statusAge time.Duration) {
		d.mu.Lock()
		d.statusWritten = d.statusGen
		d.statusAt = time.Now().Add(-statusAge)
		d.leaseAt = time.Now().Add(-renew - time.Second)
		d.mu.Unlock()
	}
	renewals := func() int { return countActions(cs, "patch", "leases", "pi-1") }

	due(11 * time.Second)
	backlog(p)
	next, err := p.syncNode(ctx, "pi-1")
	if err != nil {
		t.Fatal(err)
	}
	if n := renewals(); n != 0 {
		t.Errorf("the lease was renewed %d times with other Nodes waiting and a fresh status", n)
	}
	if want := 2*renew - 11*time.Second; next < want-time.Second || next > want {
		t.Errorf("next sync in %v, want about %v (the status two intervals old)", next, want)
	}

	due(2*renew + time.Second)
	if _, err := p.syncNode(ctx, "pi-1"); err != nil {
		t.Fatal(err)
	}
	if n := renewals(); n != 1 {
		t.Errorf("%d renewals with the status two intervals old, want 1 whatever the backlog", n)
	}

	drain(p)
	due(11 * time.Second)
	if _, err := p.syncNode(ctx, "pi-1"); err != nil {
		t.Fatal(err)
	}
	if n := renewals(); n != 2 {
		t.Errorf("%d renewals in all without a backlog, want 2", n)
	}
}
