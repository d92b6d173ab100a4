package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"

	"github.com/nats-io/nats.go"
	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/internal/metrics"
	"github.com/vk-fleet/vk-fleet/registry"
)

// device is one device served by this process. Its Node and Lease are kept
// by the provider's one node loop (nodeLoop), not a controller per device.
type device struct {
	name string

	mu       sync.Mutex
	lastSeen time.Time
	// hb is the device's last full heartbeat: its inventory, runtime error
	// and pressure. Quiet heartbeats never replace it.
	hb *bridge.Heartbeat
	// served is set once the node loop keeps the device's Node.
	served bool
	// stale is set when the node loop found the heartbeats stopped: the
	// lease is no longer renewed, and the next heartbeat writes at once.
	stale bool
	// statusGen counts changes of what the Node should say; statusWritten
	// is the generation last written, at statusAt.
	statusGen, statusWritten uint64
	statusAt, leaseAt        time.Time
	// askedAt is when a full heartbeat was last asked for.
	askedAt time.Time
	// backAt is when the device came back after it went silent, until the
	// node loop has said so in an Event.
	backAt time.Time
	// backPending is set from its return until the node loop has written
	// its Node Ready (counted in Provider.comingBack).
	backPending bool
}

// handleHeartbeat takes a device's heartbeat: the device is alive, and a
// full heartbeat may change what its Node says. It never blocks on the API
// server: every device's heartbeats arrive on this one subscription.
func (p *Provider) handleHeartbeat(ctx context.Context, m *nats.Msg) {
	name, ok := bridge.DeviceFromHeartbeatSubject(m.Subject)
	if !ok {
		return
	}
	hb, err := bridge.Decode[bridge.Heartbeat](m.Data)
	if err == nil && hb.Device != "" && hb.Device != name {
		err = fmt.Errorf("heartbeat of %q on the subject of %q", hb.Device, name)
	}
	if err != nil {
		p.rejected("heartbeat", m.Subject, err)
		return
	}
	if !p.cfg.Registry.Has(name) {
		// Only an enrolled device can authenticate; this one was revoked
		// a moment ago, or NATS runs without the callout.
		p.log.Debug("ignoring heartbeat of a device that is not enrolled", "device", name)
		return
	}
	if !p.owns(name) {
		return // another replica serves it
	}
	p.mu.Lock()
	d, ok := p.devices[name]
	if !ok {
		d = &device{name: name}
		p.devices[name] = d
	}
	p.mu.Unlock()

	now := time.Now()
	d.mu.Lock()
	wasStale := d.served && (d.stale || now.Sub(d.lastSeen) > p.cfg.HeartbeatTimeout)
	d.lastSeen = now
	d.stale = false
	ask := false
	protocolNews := false
	switch {
	case hb.Full():
		if d.hb == nil || nodeChanged(d.hb, hb) {
			d.statusGen++
		}
		protocolNews = d.hb == nil || d.hb.Inventory.ProtocolVersion != hb.Inventory.ProtocolVersion
		d.hb = hb
	case d.hb == nil || hb.State != d.hb.State:
		// A state this process has not seen (it restarted, or missed the
		// full heartbeat): ask for it, once in a while.
		if now.Sub(d.askedAt) > 5*time.Second {
			d.askedAt, ask = now, true
		}
	}
	start := !d.served && d.hb != nil
	if start {
		d.served = true
	}
	write := start || wasStale || d.statusGen != d.statusWritten
	if wasStale {
		d.statusGen++ // Ready again: write the Node and renew the lease now
		if !d.backPending {
			d.backPending = true
			p.comingBack.Add(1)
		}
		d.backAt = now
	}
	hbNow := d.hb
	d.mu.Unlock()

	if ask {
		if err := p.cfg.NATS.Publish(bridge.InventoryRequestSubject(name), nil); err != nil {
			p.log.Debug("asking a device for its inventory", "device", name, "err", err)
		}
	}
	if write {
		p.nodes.Add(name)
	}
	if protocolNews {
		p.protocolEvent(name, hbNow.Inventory)
	}
	switch {
	case start:
		p.kickIndexes()
		p.log.Info("device online", "device", name, "arch", hbNow.Inventory.Architecture, "agent", hbNow.Inventory.AgentVersion)
	case wasStale:
		p.log.Info("device back", "device", name)
	}
}

// settleBack ends d's count in comingBack: its Node's Ready write was
// made (or failed, to be retried as any other), or it no longer needs one.
// The caller holds d.mu.
func (p *Provider) settleBack(d *device) {
	if d.backPending {
		d.backPending = false
		p.comingBack.Add(-1)
		p.backlogProgress.Store(time.Now().UnixNano())
	}
}

// nodeChanged reports whether b describes a different Node than a.
func nodeChanged(a, b *bridge.Heartbeat) bool {
	if a.State != "" && b.State != "" {
		return a.State != b.State
	}
	return bridge.StateHash(a) != bridge.StateHash(b)
}

// minStatusGap is the shortest time between two writes of a device's Node
// status.
const minStatusGap = time.Second

// nodeWorkers is the number of goroutines that write Nodes and Leases for
// every device of this process. The Node writes of a mass reconnect compete
// with the pod status writes (DefaultPodSyncWorkers) for the API server: at
// 2,000 devices with 32 node workers every Node was Ready again after 44.0 s,
// with 64 after 29.4 s (one run each; docs/benchmarks.md).
const nodeWorkers = 64

// newNodeQueue returns the node loop's queue: one key per device, retried
// with back-off when the API server refuses a write.
func newNodeQueue() workqueue.TypedRateLimitingInterface[string] {
	return workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 30*time.Second),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "vk-fleet-nodes"})
}

// runNodeLoop keeps the Nodes and Leases of every served device, as a
// kubelet keeps its own: the lease renewed every quarter of its duration
// while heartbeats arrive, the Node's status written when it changed and
// otherwise every StatusUpdateInterval. One queue and a few workers serve
// every device; each device is in the queue's timer heap until its next
// renewal, and put in front when its heartbeat changes something.
func (p *Provider) runNodeLoop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		<-ctx.Done()
		p.nodes.ShutDown()
	}()
	for range nodeWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				name, quit := p.nodes.Get()
				if quit {
					return
				}
				next, err := p.syncNode(ctx, name)
				switch {
				case err != nil:
					p.log.Warn("writing a device's Node", "node", name, "err", err)
					p.nodes.AddRateLimited(name)
				case next > 0:
					p.nodes.Forget(name)
					p.nodes.AddAfter(name, next)
				default:
					p.nodes.Forget(name)
				}
				p.nodes.Done(name)
			}
		}()
	}
}

// leaseRenewInterval is how often a lease is renewed: a quarter of its
// duration, as a kubelet does.
func (p *Provider) leaseRenewInterval() time.Duration {
	return time.Duration(p.cfg.LeaseDurationSeconds) * time.Second / 4
}

// lastWrite is the later of two write times.
func lastWrite(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// syncNode writes what is due for device name and returns when it should
// run again (0: not until a heartbeat asks).
func (p *Provider) syncNode(ctx context.Context, name string) (time.Duration, error) {
	p.mu.Lock()
	d := p.devices[name]
	p.mu.Unlock()
	if d == nil {
		return 0, nil
	}
	if !p.cfg.Registry.Has(name) || !p.owns(name) {
		// Revoked or handed over: never re-create its Node or lease.
		d.mu.Lock()
		p.settleBack(d)
		d.mu.Unlock()
		return 0, nil
	}
	now := time.Now()
	renew := p.leaseRenewInterval()
	const slack = 100 * time.Millisecond
	d.mu.Lock()
	if !d.served || d.hb == nil {
		p.settleBack(d)
		d.mu.Unlock()
		return 0, nil
	}
	if since := now.Sub(d.lastSeen); since > p.cfg.HeartbeatTimeout {
		// The lease lapses, and the node lifecycle controller marks the
		// Node NotReady, as for a kubelet that stopped.
		first, last := !d.stale, d.lastSeen
		d.stale = true
		p.settleBack(d)
		d.mu.Unlock()
		if first {
			p.log.Info("device silent; its lease is no longer renewed", "device", name, "lastSeen", since.Round(time.Second))
			p.markLinkDown(ctx, name, last)
		}
		return 0, nil
	}
	hb, gen := d.hb, d.statusGen
	statusDue := gen != d.statusWritten || now.Sub(d.statusAt) >= p.cfg.StatusUpdateInterval-slack
	if !d.statusAt.IsZero() && now.Sub(lastWrite(d.leaseAt, d.statusAt)) >= time.Duration(p.cfg.LeaseDurationSeconds)*time.Second {
		// Neither the lease nor the Node was written for a lease's
		// duration (an API server too busy for the renewals): the node
		// lifecycle controller may have marked the Node Unknown, which
		// only a status write undoes — a kubelet reads its Node back
		// every 10 s and would see it. Without this, a Node stayed
		// NotReady until the next periodic status write, 5 minutes.
		statusDue = true
	}
	if wait := minStatusGap - now.Sub(d.statusAt); gen != d.statusWritten && wait > 0 && !d.statusAt.IsZero() {
		// A device whose state keeps changing (or says it does) gets
		// its Node written at most once per minStatusGap.
		d.mu.Unlock()
		return wait, nil
	}
	leaseDue := now.Sub(d.leaseAt) >= renew-slack
	firstLease := d.leaseAt.IsZero() // none renewed by this process yet
	first := d.statusAt.IsZero()
	back := d.backAt
	d.backAt = time.Time{}
	d.mu.Unlock()

	if !back.IsZero() {
		p.nodeEvent(name, corev1.EventTypeNormal, "NodeReady", "Node %s status is now: NodeReady (device-agent connected again)", name)
	}
	if statusDue {
		gone, err := p.writeNodeStatus(ctx, name, hb, first)
		metrics.NodeWrites.WithLabelValues("status", result(err)).Inc()
		d.mu.Lock()
		p.settleBack(d)
		d.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if gone {
			return 0, nil // the Node was deleted: the device is being revoked
		}
		d.mu.Lock()
		d.statusWritten, d.statusAt = gen, now
		d.mu.Unlock()
		if leaseDue {
			// The status just written carries a fresh heartbeat time,
			// which the node lifecycle controller takes as liveness as
			// it takes a renewed lease: a lease this process has
			// renewed before is renewed an interval later. When many
			// devices come back at once, every Node turns Ready before
			// their lease writes compete with the status writes (at
			// 2,000 devices, renewing a moment later doubled the writes
			// in the reconnect). A first lease follows at once, as a
			// kubelet's does when it starts.
			if firstLease {
				return slack, nil
			}
			return renew, nil
		}
	}
	if leaseDue {
		err := p.renewLease(ctx, name, now, firstLease)
		metrics.NodeWrites.WithLabelValues("lease", result(err)).Inc()
		if err != nil {
			return 0, err
		}
		d.mu.Lock()
		d.leaseAt = now
		d.mu.Unlock()
	}
	d.mu.Lock()
	next := min(time.Until(d.leaseAt.Add(renew)), time.Until(d.statusAt.Add(p.cfg.StatusUpdateInterval)))
	d.mu.Unlock()
	return max(next, slack), nil
}

// Annotations virtual-kubelet's NodeController kept on every Node (a copy
// of the last status it wrote); the node loop removes them.
const (
	vkLastAppliedStatus     = "virtual-kubelet.io/last-applied-node-status"
	vkLastAppliedObjectMeta = "virtual-kubelet.io/last-applied-object-meta"
)

// writeNodeStatus writes the labels, annotations and status of device's
// Node in one strategic merge patch of its status: what others add (labels,
// conditions, extended resources) is kept. It reports gone when the Node
// does not exist.
func (p *Provider) writeNodeStatus(ctx context.Context, name string, hb *bridge.Heartbeat, first bool) (gone bool, err error) {
	n := p.buildNode(name, hb)
	ann := map[string]*string{}
	for k, v := range n.Annotations {
		ann[k] = &v
	}
	if first {
		ann[vkLastAppliedStatus], ann[vkLastAppliedObjectMeta] = nil, nil
	}
	type meta struct {
		Labels      map[string]string  `json:"labels"`
		Annotations map[string]*string `json:"annotations"`
	}
	patch, err := json.Marshal(struct {
		Metadata meta              `json:"metadata"`
		Status   corev1.NodeStatus `json:"status"`
	}{meta{n.Labels, ann}, n.Status})
	if err != nil {
		return false, fmt.Errorf("encoding the status of node %s: %w", name, err)
	}
	_, err = p.cfg.Client.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("writing the status of node %s: %w", name, err)
	}
	return false, nil
}

// renewLease renews device's node lease, creating it (owned by the Node,
// as a kubelet's) when it does not exist. The first lease this process
// writes for a Node created since it started is created at once (there is
// none to renew: a fleet enrolling saves a request per device); else it is
// renewed, and created when missing.
func (p *Provider) renewLease(ctx context.Context, name string, now time.Time, first bool) error {
	leases := p.cfg.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	renewTime := metav1.NewMicroTime(now)
	spec := coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: &p.cfg.LeaseDurationSeconds, RenewTime: &renewTime}
	create := func(uid types.UID) (exists bool, err error) {
		lease := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name: name, Namespace: corev1.NamespaceNodeLease,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: name, UID: uid}},
			},
			Spec: spec,
		}
		_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("creating the lease of node %s: %w", name, err)
		}
		return false, nil
	}
	if r, ok := p.cfg.Registry.(nodeIdentities); ok && first {
		if uid, created, ok := r.Identity(name); ok && created.After(p.started) {
			if exists, err := create(uid); err != nil || !exists {
				return err
			}
		}
	}
	patch, err := json.Marshal(map[string]any{"spec": spec})
	if err != nil {
		return err
	}
	_, err = leases.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	if !apierrors.IsNotFound(err) {
		if err != nil {
			return fmt.Errorf("renewing the lease of node %s: %w", name, err)
		}
		return nil
	}
	uid, err := p.nodeUID(ctx, name)
	if apierrors.IsNotFound(err) {
		return nil // revoked
	}
	if err != nil {
		return fmt.Errorf("reading node %s for its lease: %w", name, err)
	}
	_, err = create(uid)
	return err
}

// nodeIdentities is what a DeviceRegistry that keeps the devices' Nodes
// (*registry.Cache) also offers.
type nodeIdentities interface {
	// Identity returns the UID and creation time of device name's Node.
	Identity(name string) (uid types.UID, created time.Time, ok bool)
}

// nodeUID returns the UID of device name's Node, from the registry's cache
// when it has it (a fleet enrolling at once creates a thousand leases:
// without a read each), else from the API server.
func (p *Provider) nodeUID(ctx context.Context, name string) (types.UID, error) {
	if r, ok := p.cfg.Registry.(nodeIdentities); ok {
		if uid, _, ok := r.Identity(name); ok {
			return uid, nil
		}
	}
	node, err := p.cfg.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	return node.UID, nil
}

// buildNode returns the Node of a device as its last heartbeat describes it.
func (p *Provider) buildNode(name string, hb *bridge.Heartbeat) *corev1.Node {
	inv := hb.Inventory
	arch, os := inv.Architecture, inv.OS
	if arch == "" {
		arch = "unknown"
	}
	if os == "" {
		os = "linux"
	}
	maxPods := inv.MaxPods
	if maxPods <= 0 {
		maxPods = 110
	}
	capacity, allocatable := p.nodeResources(&inv, maxPods)
	now := metav1.Now()
	ready := corev1.NodeCondition{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue,
		Reason: "KubeletReady", Message: "device agent is posting heartbeats",
		LastHeartbeatTime: now,
	}
	if hb.RuntimeError != "" {
		ready.Status = corev1.ConditionFalse
		ready.Reason = "ContainerRuntimeUnavailable"
		ready.Message = "podman on the device: " + hb.RuntimeError
	}
	ready.LastTransitionTime = p.conds.transition(name, corev1.NodeReady, ready.Status, now)
	cond := func(t corev1.NodeConditionType, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, Message: msg,
			LastHeartbeatTime: now, LastTransitionTime: p.conds.transition(name, t, corev1.ConditionFalse, now)}
	}
	runtimeVersion := "podman://unknown"
	if inv.PodmanVersion != "" {
		runtimeVersion = "podman://" + inv.PodmanVersion
	}
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				"type":                 "virtual-kubelet",
				"kubernetes.io/role":   "agent",
				corev1.LabelArchStable: arch,
				corev1.LabelOSStable:   os,
				corev1.LabelHostname:   name,
				registry.LabelManaged:  "true",
			},
			Annotations: map[string]string{
				registry.AnnotationDeviceAddresses: strings.Join(inv.Addresses, ","),
				registry.AnnotationAgentVersion:    inv.AgentVersion,
				registry.AnnotationProtocolVersion: strconv.Itoa(inv.ProtocolVersion),
			},
		},
		Spec: corev1.NodeSpec{
			Taints: []corev1.Taint{{Key: registry.TaintKey, Value: registry.TaintValue, Effect: corev1.TaintEffectNoSchedule}},
		},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: allocatable,
			Conditions: append(append([]corev1.NodeCondition{ready},
				pressureConditions(&p.conds, name, hb, now)...),
				cond(corev1.NodeNetworkUnavailable, "RouteCreated", "device network is managed by the device"),
			),
			Addresses: []corev1.NodeAddress{
				// No Hostname address: the API server tries it first, and
				// a device's name does not resolve to vk-fleet.
				{Type: corev1.NodeInternalIP, Address: p.cfg.NodeAddress},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{
				KubeletEndpoint: corev1.DaemonEndpoint{Port: p.kubeletPort(name)},
			},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID:               inv.MachineID,
				BootID:                  inv.BootID,
				KernelVersion:           inv.KernelVersion,
				OSImage:                 inv.OSImage,
				ContainerRuntimeVersion: runtimeVersion,
				KubeletVersion:          p.cfg.Version,
				KubeProxyVersion:        "",
				OperatingSystem:         os,
				Architecture:            arch,
			},
		},
	}
	return n
}

// kubeletPort is the kubelet port advertised on device's Node: its own,
// or the shared one.
func (p *Provider) kubeletPort(device string) int32 {
	if p.ports != nil {
		if port, ok := p.ports.port(device); ok {
			return int32(port)
		}
	}
	return p.cfg.KubeletPort
}

// result is the result label of a write.
func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// markLinkDown says on device's Node that its heartbeats stopped: Ready
// turns Unknown with reason DeviceLinkDown (kubectl describe node shows when
// the device was last heard from), and a NodeNotReady Event is recorded.
// The node lifecycle controller would say Unknown too, a grace period
// later and without the reason. A device whose runtime is down still sends
// heartbeats: its Node says ContainerRuntimeUnavailable instead.
func (p *Provider) markLinkDown(ctx context.Context, name string, lastSeen time.Time) {
	now := metav1.Now()
	p.conds.transition(name, corev1.NodeReady, corev1.ConditionUnknown, now)
	cond := corev1.NodeCondition{
		Type: corev1.NodeReady, Status: corev1.ConditionUnknown, Reason: "DeviceLinkDown",
		Message: fmt.Sprintf("no heartbeat from the device since %s: its link is down or device-agent stopped (containers keep running on the device)",
			lastSeen.UTC().Format(time.RFC3339)),
		LastHeartbeatTime: metav1.NewTime(lastSeen), LastTransitionTime: now,
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err == nil {
		_, err = p.cfg.Client.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	}
	metrics.NodeWrites.WithLabelValues("status", result(err)).Inc()
	if err != nil && !apierrors.IsNotFound(err) {
		p.log.Warn("marking a silent device's Node", "node", name, "err", err)
	}
	p.nodeEvent(name, corev1.EventTypeWarning, "NodeNotReady", "Node %s status is now: NodeNotReady (no heartbeat from device-agent since %s)",
		name, lastSeen.UTC().Format(time.RFC3339))
}

// nodeEvent records an Event on device's Node, as a kubelet does on its own.
func (p *Provider) nodeEvent(name, typ, reason, format string, args ...any) {
	if p.recorder == nil {
		return
	}
	ref := &corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: name, UID: types.UID(name)}
	p.recorder.Eventf(ref, typ, reason, format, args...)
}

// protocolEvent says on device's Node when its agent speaks another
// protocol than this vk-fleet: what an older agent cannot do, or that
// vk-fleet should be upgraded.
func (p *Provider) protocolEvent(name string, inv bridge.Inventory) {
	v := inv.ProtocolVersion
	switch {
	case v == 0 || v == bridge.ProtocolVersion:
	case v < bridge.ProtocolVersion:
		p.nodeEvent(name, corev1.EventTypeWarning, "AgentProtocolOld",
			"device-agent %s speaks protocol %d, vk-fleet %d: pod features newer than protocol %d are refused on this device (the Pod says which), and it keeps a JetStream consumer and full heartbeats; upgrade the agent",
			inv.AgentVersion, v, bridge.ProtocolVersion, v)
	default:
		p.nodeEvent(name, corev1.EventTypeWarning, "AgentProtocolNewer",
			"device-agent %s speaks protocol %d, newer than this vk-fleet's %d: the agent talks down to it; upgrade vk-fleet",
			inv.AgentVersion, v, bridge.ProtocolVersion)
	}
}
