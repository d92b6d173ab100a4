package provider

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vk-fleet/vk-fleet/internal/metrics"
)

// backlog has more devices coming back than make a backlog.
func backlog(p *Provider) { p.comingBack.Store(backlogDevices + 1) }

// drain has every device that came back written Ready.
func drain(p *Provider) { p.comingBack.Store(0) }

// A device back from silence is counted until the node loop has written its
// Node Ready, and a rollout's Node writes (devices not back from silence) are not.
func TestDevicesComingBackAreCounted(t *testing.T) {
	cs := fake.NewClientset(deviceNode("pi-1"), deviceNode("pi-2"))
	reg := &revocable{}
	p, err := New(Config{Client: cs, NATS: startNATS(t), Registry: reg,
		LeaseDurationSeconds: 40, HeartbeatTimeout: time.Minute, StatusUpdateInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, name := range []string{"pi-1", "pi-2"} {
		p.handleHeartbeat(ctx, heartbeat(t, name, 4))
		if _, err := p.syncNode(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	p.handleHeartbeat(ctx, heartbeat(t, "pi-2", 8)) // its Node changes
	if n := p.comingBack.Load(); n != 0 {
		t.Fatalf("%d devices coming back; none went silent", n)
	}
	p.mu.Lock()
	d := p.devices["pi-1"]
	p.mu.Unlock()
	d.mu.Lock()
	d.stale = true // the node loop found it silent
	d.statusAt = d.statusAt.Add(-time.Minute)
	d.mu.Unlock()
	p.handleHeartbeat(ctx, heartbeat(t, "pi-1", 4))
	p.handleHeartbeat(ctx, heartbeat(t, "pi-1", 4)) // counted once
	if n := p.comingBack.Load(); n != 1 {
		t.Fatalf("%d devices coming back, want 1", n)
	}
	if _, err := p.syncNode(ctx, "pi-1"); err != nil {
		t.Fatal(err)
	}
	if n := p.comingBack.Load(); n != 0 {
		t.Errorf("%d devices coming back after the node loop wrote the Node, want 0", n)
	}
	if got := nodeReadyStatus(ctx, cs, "pi-1"); got != corev1.ConditionTrue {
		t.Errorf("Node Ready %q, want True", got)
	}

	// Revoked before the node loop took it up: no longer counted, and its
	// Node not written.
	d.mu.Lock()
	d.stale = true
	d.mu.Unlock()
	p.handleHeartbeat(ctx, heartbeat(t, "pi-1", 4))
	reg.revoked.Store(true)
	writes := countActions(cs, "patch", "nodes", "pi-1")
	if _, err := p.syncNode(ctx, "pi-1"); err != nil {
		t.Fatal(err)
	}
	if n := p.comingBack.Load(); n != 0 {
		t.Errorf("%d devices coming back after the one back was revoked, want 0", n)
	}
	if n := countActions(cs, "patch", "nodes", "pi-1"); n != writes {
		t.Errorf("the revoked device's Node was written")
	}
}

// revocable is a registry in which every device is enrolled until revoked.
type revocable struct{ revoked atomic.Bool }

func (r *revocable) Has(string) bool       { return !r.revoked.Load() }
func (r *revocable) OnDelete(func(string)) {}

// A pod status write waits while Node writes are backed up, and goes out
// once they are not; one of the pod controller's own error statuses never
// waits (its sync workers write it); a backlog older than maxStatusDefer
// holds no write back.
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
	pods := nodeFirstPods{cs.CoreV1(), p.awaitNodeWrites}.Pods("default")
	done := make(chan error, 1)
	write := func(pod *corev1.Pod) {
		go func() { _, err := pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{}); done <- err }()
	}
	// written waits for the write to return, failing the test with stuck
	// if it does not within 20 s.
	written := func(stuck string) {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal(stuck)
		}
	}
	failed := pod.DeepCopy()
	failed.Status = corev1.PodStatus{Phase: corev1.PodPending, Reason: providerFailedReason, Message: "refused"}
	write(failed)
	written("the pod controller's error status waited for the Node writes")

	deferred := testutil.ToFloat64(metrics.PodStatusWritesDeferred)
	running := pod.DeepCopy()
	running.Status = corev1.PodStatus{Phase: corev1.PodRunning}
	write(running)
	poll(t, "the status write waiting", func() bool { return testutil.ToFloat64(metrics.PodStatusWritesDeferred) > deferred })
	// The backlog is still there: the write cannot have gone out.
	if got, _ := cs.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{}); got.Status.Phase == corev1.PodRunning {
		t.Fatal("the pod's status was written while Node writes were backed up")
	}
	drain(p)
	written("the status write still waits with no Node write queued")
	if got, _ := cs.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{}); got.Status.Phase != corev1.PodRunning {
		t.Errorf("pod phase %q after the write, want Running", got.Status.Phase)
	}

	// A backlog whose Node writes progress holds writes back past
	// maxStatusStall; one whose Node writes stalled that long does not.
	backlog(p)
	if !p.nodeBacklog() {
		t.Fatal("no backlog seen")
	}
	p.backlogSince.Store(time.Now().Add(-2 * maxStatusStall).UnixNano())
	p.backlogProgress.Store(time.Now().UnixNano())
	if !p.nodeBacklog() {
		t.Fatalf("a backlog %v old whose Node writes progress holds nothing back", 2*maxStatusStall)
	}
	p.backlogProgress.Store(time.Now().Add(-maxStatusStall).UnixNano())
	write(pod)
	written(fmt.Sprintf("a status write waits for a backlog whose Node writes stalled for %v", maxStatusStall))

	// Nor does a backlog that has lasted maxStatusDefer, progressing or not.
	drain(p)
	if p.nodeBacklog() {
		t.Fatal("a backlog seen with no device coming back")
	}
	backlog(p)
	if !p.nodeBacklog() {
		t.Fatal("no backlog seen")
	}
	p.backlogSince.Store(time.Now().Add(-maxStatusDefer).UnixNano())
	p.backlogProgress.Store(time.Now().UnixNano())
	write(pod)
	written(fmt.Sprintf("a status write waits for a backlog %v old", maxStatusDefer))
}
