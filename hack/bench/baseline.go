package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"

	"github.com/vk-fleet/vk-fleet/test/framework/devcluster"
)

// baseline registers n Ready Nodes, keeps their leases fresh, and sets
// every pod bound to them Running the moment it appears: the least any
// kubelet could do, so its rollout shows what the control plane alone costs.
type baseline struct {
	cs    kubernetes.Interface
	n     int
	names map[string]bool // every node's, fixed before any goroutine starts

	mu         sync.Mutex
	registered []string // in the order they registered: the leases renewed

	capacity corev1.ResourceList
	ready    func(name string) bool // whether the Node is Ready (informer)
	paused   atomic.Bool            // the "kubelets" are down: nothing renewed or written

	leaseMu sync.Mutex
	leases  map[string]*coordinationv1.Lease // last written, by node
}

const baselineLabel = "bench=baseline"

func startBaseline(ctx context.Context, cs kubernetes.Interface, n, workers int) (*baseline, error) {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("4Gi"), corev1.ResourcePods: resource.MustParse("110"),
	}
	b := &baseline{cs: cs, n: n, names: map[string]bool{}, capacity: capacity, leases: map[string]*coordinationv1.Lease{}}
	for i := range n {
		b.names[fmt.Sprintf("base-%d", i)] = true
	}
	// As a kubelet: a node's lease is renewed from its registration on
	// (registering thousands takes longer than the node monitor's grace
	// period), and a Node the node lifecycle controller marked not Ready
	// gets its status written again.
	nodes := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = baselineLabel
	}))
	nodeLister := nodes.Core().V1().Nodes().Lister()
	nodes.Start(ctx.Done())
	b.ready = func(name string) bool {
		n, err := nodeLister.Get(name)
		return err != nil || devcluster.NodeReady(n) == corev1.ConditionTrue
	}
	go b.renewLeases(ctx)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range n {
		name := fmt.Sprintf("base-%d", i)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			node := &corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"bench": "baseline", corev1.LabelHostname: name}},
				Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "virtual-kubelet.io/provider", Value: "baseline", Effect: corev1.TaintEffectNoSchedule}}},
			}
			_, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
			if err == nil {
				err = b.writeReady(ctx, name, capacity)
			}
			if err == nil {
				b.mu.Lock()
				b.registered = append(b.registered, name)
				b.mu.Unlock()
			}
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("registering baseline node %s: %w", name, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	go b.runPods(ctx, workers)
	return b, nil
}

// writeReady writes node name's status Ready with a fresh heartbeat.
func (b *baseline) writeReady(ctx context.Context, name string, capacity corev1.ResourceList) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := b.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		cur.Status = corev1.NodeStatus{
			Capacity: capacity, Allocatable: capacity,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}},
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}},
		}
		_, err = b.cs.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

// renewLeases renews each registered node's lease every 10s, as kubelet
// does, from a pool of workers (each kubelet has its own connection and QPS
// budget); a node that is not ready gets its status written Ready. Nothing
// is written while the baseline is paused.
func (b *baseline) renewLeases(ctx context.Context) {
	for {
		if !b.paused.Load() {
			b.mu.Lock()
			names := slices.Clone(b.registered)
			b.mu.Unlock()
			b.renewAll(ctx, names, 16)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}

// renewAll renews the leases of names, and writes those not Ready Ready,
// with the given number of workers.
func (b *baseline) renewAll(ctx context.Context, names []string, workers int) {
	work := make(chan string)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				b.renew(ctx, name)
				if !b.ready(name) {
					_ = b.writeReady(ctx, name, b.capacity)
				}
			}
		}()
	}
	for _, name := range names {
		if b.paused.Load() {
			break
		}
		work <- name
	}
	close(work)
	wg.Wait()
}

// renew renews node name's lease, creating it the first time.
func (b *baseline) renew(ctx context.Context, name string) {
	dur := int32(40)
	leases := b.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	b.leaseMu.Lock()
	l := b.leases[name]
	b.leaseMu.Unlock()
	var err error
	if l == nil {
		l, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: corev1.NamespaceNodeLease},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: &dur, RenewTime: &now},
		}, metav1.CreateOptions{})
	} else {
		l = l.DeepCopy()
		l.Spec.RenewTime = &now
		l, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	}
	b.leaseMu.Lock()
	defer b.leaseMu.Unlock()
	if err == nil {
		b.leases[name] = l
		return
	}
	delete(b.leases, name)
	if got, gerr := leases.Get(ctx, name, metav1.GetOptions{}); gerr == nil {
		b.leases[name] = got
	}
}

// reconnect measures the control plane's own mass reconnect: every
// "kubelet" stops at once, the Nodes go Unknown (and the node lifecycle
// controller marks their pods not ready), then all come back at once, each
// renewing its lease and writing its Node Ready and its pods ready again as
// a kubelet would, from many workers (kubelets are many clients). It
// returns how long until every Node was Ready again: the least any
// provider could take on this machine, for vk-fleet's figure beside it.
//
// It also returns the CPU time every process used meanwhile.
func (b *baseline) reconnect(ctx context.Context, timeout time.Duration) (time.Duration, cpuUse, error) {
	b.paused.Store(true)
	// The node lifecycle controller marks each Node Unknown, its pods not
	// ready and the Node tainted, within its own request budget: at
	// 5,000 Nodes that took more than 5 minutes here.
	if _, err := waitNodes(ctx, b.cs, baselineLabel, b.n, corev1.ConditionUnknown, 3*time.Minute+time.Duration(b.n)*80*time.Millisecond); err != nil {
		b.paused.Store(false)
		return 0, cpuUse{}, fmt.Errorf("baseline nodes going NotReady: %w", err)
	}
	start := time.Now()
	cpu0 := takeCPUSnapshot()
	b.paused.Store(false)
	b.mu.Lock()
	names := slices.Clone(b.registered)
	b.mu.Unlock()
	go b.renewAll(ctx, names, 128)
	if _, err := waitNodes(ctx, b.cs, baselineLabel, b.n, corev1.ConditionTrue, timeout); err != nil {
		return 0, cpuUse{}, fmt.Errorf("baseline reconnect: %w", err)
	}
	took := time.Since(start)
	return took, cpuUsedSince(cpu0, selfComm()), nil
}

// runPods sets pods on baseline nodes Running.
func (b *baseline) runPods(ctx context.Context, workers int) {
	f := informers.NewSharedInformerFactory(b.cs, 0)
	inf := f.Core().V1().Pods()
	q := workqueue.NewTypedDelayingQueue[string]()
	enqueue := func(o any) {
		p, ok := o.(*corev1.Pod)
		if ok && b.names[p.Spec.NodeName] && (p.Status.Phase == corev1.PodPending || p.DeletionTimestamp != nil || notReady(p)) {
			q.Add(p.Namespace + "/" + p.Name)
		}
	}
	_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }})
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	go func() { <-ctx.Done(); q.ShutDown() }()
	for range workers {
		go func() {
			for {
				key, quit := q.Get()
				if quit {
					return
				}
				ns, name, _ := cache.SplitMetaNamespaceKey(key)
				p, err := inf.Lister().Pods(ns).Get(name)
				if b.paused.Load() {
					// The "kubelet" is down; it sees the pod when back.
					q.Done(key)
					q.AddAfter(key, time.Second)
					continue
				}
				if err == nil && p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && notReady(p) {
					// Marked not ready while its Node was away: the
					// "kubelet" back says it is ready again.
					p = p.DeepCopy()
					now := metav1.Now()
					for i := range p.Status.Conditions {
						if c := &p.Status.Conditions[i]; (c.Type == corev1.PodReady || c.Type == corev1.ContainersReady) && c.Status != corev1.ConditionTrue {
							c.Status, c.LastTransitionTime, c.Reason, c.Message = corev1.ConditionTrue, now, "", ""
						}
					}
					if _, err := b.cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
						q.AddAfter(key, time.Second)
					}
				} else if err == nil && p.DeletionTimestamp != nil {
					// The "kubelet" confirms the deletion at once.
					zero := int64(0)
					_ = b.cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
				} else if err == nil && p.Status.Phase == corev1.PodPending {
					p = p.DeepCopy()
					now := metav1.Now()
					p.Status.Phase = corev1.PodRunning
					p.Status.StartTime = &now
					p.Status.HostIP = "127.0.0.1"
					p.Status.Conditions = []corev1.PodCondition{
						{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
						{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
						{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
						{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
					}
					p.Status.ContainerStatuses = nil
					for _, c := range p.Spec.Containers {
						p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
							Name: c.Name, Image: c.Image, Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
						})
					}
					if _, err := b.cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
						q.Add(key)
					}
				}
				q.Done(key)
			}
		}()
	}
}

// notReady reports whether running pod p has a Ready condition not True.
func notReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status != corev1.ConditionTrue
		}
	}
	return false
}

// remove deletes the baseline's Nodes and their leases, and waits until
// the Nodes are gone: what comes next (vk-fleet's enrollment) is not
// charged with the baseline's teardown.
func (b *baseline) remove(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := b.cs.CoreV1().Nodes().DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: baselineLabel}); err != nil {
		return fmt.Errorf("deleting the baseline's nodes: %w", err)
	}
	// Its leases are owned by nothing (the baseline keeps no Node UIDs):
	// deleted by name, as the garbage collector would a kubelet's.
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for name := range b.names {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = b.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Delete(ctx, name, metav1.DeleteOptions{})
		}()
	}
	wg.Wait()
	for {
		l, err := b.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: baselineLabel, Limit: 1})
		if err == nil && len(l.Items) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("baseline nodes not gone: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}
