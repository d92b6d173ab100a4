package provider

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/internal/metrics"
)

var (
	_ node.PodLifecycleHandler = (*Provider)(nil)
	_ node.PodNotifier         = (*Provider)(nil)
)

// errWaitingForDevice is returned by DeletePod until the device reports
// that the pod's containers are gone; the pod controller retries.
var errWaitingForDevice = errors.New("waiting for the device to remove the pod's containers")

// podEntry is what the provider holds of one pod.
type podEntry struct {
	pod     *corev1.Pod       // as last given by the pod controller
	status  *bridge.PodStatus // as last reported by the device; nil if none
	refusal *corev1.PodStatus // set when the pod cannot run on a device
	// waiting says why a pod never handed over yet waits (a ConfigMap it
	// mounts does not exist yet); it is retried.
	waiting string
	ignored []string // spec fields accepted but not honoured
	// resize says which in-place resize the device does not apply (see
	// holdResize); "" when none.
	resize   string
	deleting bool
}

// podTable indexes pods by namespace/name and by UID.
type podTable struct {
	byKey map[string]*podEntry
	// statusByKey holds device reports by KV key "<device>.<uid>",
	// including those of pods that the pod controller has not handed over
	// yet. A report counts only for a pod bound to the device under whose
	// key it was written.
	statusByKey map[string]*bridge.PodStatus
	// perDevice counts statusByKey's keys per device, to bound what one
	// device can make the provider hold.
	perDevice map[string]int
	// desired holds the encoded workload of every key in the workloads
	// bucket: "<device>.<uid>" → bytes.
	desired map[string][]byte
	// refs maps a KV key to the pod's coordinates, for pods known from
	// the workloads bucket: pods the provider itself gave to a device.
	refs map[string]podRef
	// byUID indexes byKey.
	byUID map[string]*podEntry
}

// podRef locates a pod known only from the buckets.
type podRef struct{ namespace, name, device string }

func newPodTable() podTable {
	return podTable{
		byKey:       map[string]*podEntry{},
		statusByKey: map[string]*bridge.PodStatus{},
		perDevice:   map[string]int{},
		desired:     map[string][]byte{},
		refs:        map[string]podRef{},
		byUID:       map[string]*podEntry{},
	}
}

func podKey(namespace, name string) string { return namespace + "/" + name }

// errConfigPending is returned by CreatePod and UpdatePod while a pod waits
// for a ConfigMap or Secret; the pod controller retries.
var errConfigPending = errors.New("waiting for the pod's configuration")

// retryWaitingForDevice retries a pod for as long as it takes, as a kubelet
// never gives up on a pod: a device may be away for days, a ConfigMap may be
// created later, the API server may be unreachable for a while. A pod that
// waits for its device is retried at a gentle pace; other errors back off
// exponentially up to a minute.
func retryWaitingForDevice(_ context.Context, _ string, timesTried int, _ time.Time, err error) (*time.Duration, error) {
	if errors.Is(err, errWaitingForDevice) {
		d := min(time.Duration(timesTried+1)*time.Second, 15*time.Second)
		return &d, nil
	}
	d := time.Minute
	if timesTried < 6 {
		d = min(time.Duration(1<<timesTried)*time.Second, time.Minute)
	}
	return &d, nil
}

// loadState reads both buckets once, so that the provider knows what the
// devices run before the pod controller asks.
func (p *Provider) loadState(ctx context.Context) error {
	load := func(kv jetstream.KeyValue, fn func(jetstream.KeyValueEntry)) error {
		w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
		if err != nil {
			return err
		}
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case e := <-w.Updates():
				if e == nil {
					return nil
				}
				fn(e)
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := load(p.workloads, func(e jetstream.KeyValueEntry) {
		device, _, ok := bridge.SplitPodKey(e.Key())
		if !ok {
			return // an index, written afresh once the pod informer syncs
		}
		p.pods.desired[e.Key()] = e.Value()
		if w, err := bridge.Decode[bridge.Workload](e.Value()); err == nil {
			p.pods.refs[e.Key()] = podRef{w.Namespace, w.Name, device}
		}
	}); err != nil {
		return fmt.Errorf("reading bucket %s: %w", bridge.WorkloadsBucket, err)
	}
	if err := load(p.status, func(e jetstream.KeyValueEntry) {
		device, uid, ok := bridge.SplitPodKey(e.Key())
		if !ok {
			return
		}
		if st, err := bridge.Decode[bridge.PodStatus](e.Value()); err == nil && st.UID == uid {
			p.putStatus(e.Key(), device, st)
		}
	}); err != nil {
		return fmt.Errorf("reading bucket %s: %w", bridge.StatusBucket, err)
	}
	return nil
}

// watchStatus applies device reports as they arrive.
func (p *Provider) watchStatus(ctx context.Context) {
	delay := time.Second
	for ctx.Err() == nil {
		w, err := p.status.WatchAll(ctx, jetstream.UpdatesOnly())
		rewatch := false
		if err == nil {
			delay = time.Second
		watch:
			for {
				select {
				case <-ctx.Done():
					break watch
				case <-p.statusRewatch:
					// A reconnect: the bucket may be new, and an existing
					// watch would wait for sequence numbers it never reaches.
					rewatch = true
					break watch
				case e, ok := <-w.Updates():
					if !ok {
						break watch
					}
					if e != nil {
						p.applyStatus(e)
					}
				}
			}
			w.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		if rewatch {
			delay = time.Second
			continue
		}
		p.log.Warn("status watch ended; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 15*time.Second)
	}
}

func (p *Provider) applyStatus(e jetstream.KeyValueEntry) {
	device, uid, ok := bridge.SplitPodKey(e.Key())
	if !ok {
		return
	}
	var st *bridge.PodStatus
	if e.Operation() == jetstream.KeyValuePut {
		var err error
		if st, err = bridge.Decode[bridge.PodStatus](e.Value()); err == nil && st.UID != uid {
			err = fmt.Errorf("status of pod %q at the key of pod %q", st.UID, uid)
		}
		if err != nil {
			p.rejected("status", e.Key(), err)
			return
		}
		metrics.StatusReports.Inc()
	}
	p.mu.Lock()
	if st != nil {
		if !p.putStatus(e.Key(), device, st) {
			p.mu.Unlock()
			p.rejected("status", e.Key(), fmt.Errorf("device %s holds more than %d pod statuses", device, maxStatusesPerDevice))
			// Nor may it fill the bucket that every device shares.
			go p.status.Purge(context.Background(), e.Key())
			return
		}
	} else {
		p.deleteStatus(e.Key(), device)
	}
	ent := p.pods.byUID[uid]
	var out, pod *corev1.Pod
	var old *bridge.PodStatus
	if ent != nil && ent.pod.Spec.NodeName == device && p.owns(device) {
		old, pod = ent.status, ent.pod
		ent.status = st
		out = p.podWithStatus(ent)
	}
	cb := p.notifyPod
	p.mu.Unlock()
	if out != nil && cb != nil {
		cb(out)
	}
	p.podEvents(pod, old, st)
}

// NotifyPods keeps cb to push pod status changes.
func (p *Provider) NotifyPods(_ context.Context, cb func(*corev1.Pod)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.notifyPod = cb
}

// CreatePod hands pod to its device.
func (p *Provider) CreatePod(ctx context.Context, pod *corev1.Pod) error {
	return p.syncPod(ctx, pod)
}

// UpdatePod hands the changed pod to its device.
func (p *Provider) UpdatePod(ctx context.Context, pod *corev1.Pod) error {
	return p.syncPod(ctx, pod)
}

func (p *Provider) syncPod(ctx context.Context, pod *corev1.Pod) error {
	l := p.syncLock(podKey(pod.Namespace, pod.Name))
	l.Lock()
	defer l.Unlock()
	return p.syncPodLocked(ctx, pod)
}

// podID names one pod: a re-sync finds its current copy by it.
type podID struct {
	namespace, name string
	uid             types.UID
}

func idOf(pod *corev1.Pod) podID { return podID{pod.Namespace, pod.Name, pod.UID} }

// resyncPod hands pod id to its device again, from the copy the provider
// holds when its turn comes: a ConfigMap or Secret it uses changed, or NATS
// lost the workloads. A copy taken earlier could be older than one the pod
// controller handed over meanwhile, and publish a spec already replaced. A
// pod gone, being deleted or refused is left alone.
func (p *Provider) resyncPod(ctx context.Context, id podID) error {
	key := podKey(id.namespace, id.name)
	l := p.syncLock(key)
	l.Lock()
	defer l.Unlock()
	p.mu.Lock()
	ent := p.pods.byKey[key]
	if ent == nil || ent.pod == nil || ent.pod.UID != id.uid || ent.deleting || ent.refusal != nil {
		p.mu.Unlock()
		return nil
	}
	pod := ent.pod.DeepCopy()
	p.mu.Unlock()
	return p.syncPodLocked(ctx, pod)
}

// syncLock returns the lock that serialises syncs of the pod key: each
// reads the pod's ConfigMaps and Secrets and then publishes, and two at
// once (a ConfigMap and a Secret deleted together) could publish in the
// other order, leaving the device the older of the two.
func (p *Provider) syncLock(key string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return &p.syncLocks[h.Sum32()%uint32(len(p.syncLocks))]
}

// syncPodLocked is syncPod; the caller holds the pod's syncLock.
func (p *Provider) syncPodLocked(ctx context.Context, pod *corev1.Pod) error {
	device := pod.Spec.NodeName
	w, ignored, refusal, pending := p.translate(ctx, pod)
	key := podKey(pod.Namespace, pod.Name)
	kvKey := bridge.PodKey(device, string(pod.UID))

	p.mu.Lock()
	ent := p.pods.byKey[key]
	var replaced string // KV key of an older pod of the same name
	if ent == nil || ent.pod.UID != pod.UID {
		if ent != nil {
			delete(p.pods.byUID, string(ent.pod.UID))
			replaced = bridge.PodKey(ent.pod.Spec.NodeName, string(ent.pod.UID))
		}
		ent = &podEntry{}
		p.pods.byKey[key] = ent
		p.pods.byUID[string(pod.UID)] = ent
	}
	ent.pod = pod.DeepCopy()
	ent.ignored = ignored
	ent.status = p.pods.statusByKey[kvKey]
	oldRefusal := ent.refusal
	ent.refusal = nil
	ent.waiting = ""
	if refusal == "" && pending != nil {
		ent.waiting = pending.Error()
	}
	if refusal != "" {
		ent.refusal = &corev1.PodStatus{Phase: corev1.PodPending, Reason: "UnsupportedPodSpec",
			Message: "vk-fleet cannot run this pod on a device: " + refusal}
	}
	prev := p.pods.desired[kvKey]
	_, replacedPublished := p.pods.desired[replaced]
	p.mu.Unlock()

	if replaced != "" && replacedPublished {
		// A pod deleted and re-created under the same name (a StatefulSet,
		// a force delete): the old pod's containers must go, whatever
		// order the deletion and the creation are seen in.
		if err := p.workloads.Delete(ctx, replaced); err != nil {
			return fmt.Errorf("withdrawing the workload of the previous pod %s (%s): %w", key, replaced, err)
		}
		p.tellDevice(device, replaced)
		metrics.WorkloadWrites.WithLabelValues("withdraw").Inc()
		p.mu.Lock()
		delete(p.pods.desired, replaced)
		delete(p.pods.refs, replaced)
		p.mu.Unlock()
		p.log.Info("workload of a replaced pod withdrawn", "pod", key, "key", replaced)
		p.kickIndexes()
	}

	if refusal != "" {
		p.log.Warn("refusing pod", "pod", key, "node", device, "reason", refusal)
		msg := "vk-fleet cannot run this pod on a device: " + refusal
		if r := p.recorder; r != nil && (oldRefusal == nil || oldRefusal.Message != msg) {
			// Once per reason, not on every resync.
			r.Event(pod, corev1.EventTypeWarning, "UnsupportedPodSpec", msg)
		}
		p.notify(ent)
		return nil
	}
	if pending != nil {
		// Never withdraw or change what a device already runs because a
		// ConfigMap went missing or a read failed: it keeps running as it
		// was (as with a kubelet); a pod never handed over says why it waits.
		if prev == nil {
			p.notify(ent)
			// The pod controller answers the error below by writing the
			// pod's status itself (Pending, ProviderFailed) from its cached
			// copy: when that write lands after ours, the container
			// statuses saying why the pod waits are gone, and an unchanged
			// status is not sent again. Look once more a moment later.
			uid := pod.UID
			time.AfterFunc(waitingRecheckDelay, func() { p.reassertWaiting(key, uid) })
		}
		p.log.Info("pod waits for its configuration", "pod", key, "node", device, "reason", pending)
		return fmt.Errorf("pod %s: %w: %v", key, errConfigPending, pending)
	}
	data, err := bridge.Encode(w)
	if err != nil {
		return err
	}
	resize := ""
	if prev != nil && !bytes.Equal(prev, data) {
		// Only a changed workload can be a resize: an unchanged one is
		// not decoded again.
		if resize = holdResize(w, prev); resize != "" {
			if data, err = bridge.Encode(w); err != nil {
				return err
			}
		}
	}
	p.mu.Lock()
	oldResize := ent.resize
	ent.resize = resize
	p.mu.Unlock()
	if resize != "" && resize != oldResize {
		p.log.Info("in-place resize not applied", "pod", key, "node", device, "resize", resize)
		if r := p.recorder; r != nil {
			r.Event(pod, corev1.EventTypeWarning, "ResizeInfeasible", resize)
		}
	}
	if !bytes.Equal(prev, data) {
		if _, err := p.workloads.Put(ctx, kvKey, data); err != nil {
			return fmt.Errorf("publishing workload of pod %s to device %s: %w", key, device, err)
		}
		p.tellDevice(device, kvKey)
		metrics.WorkloadWrites.WithLabelValues("publish").Inc()
		p.mu.Lock()
		p.pods.desired[kvKey] = data
		p.pods.refs[kvKey] = podRef{pod.Namespace, pod.Name, device}
		p.mu.Unlock()
		p.log.Info("workload published", "pod", key, "node", device)
	}
	p.mu.Lock()
	reported := ent.status != nil
	p.mu.Unlock()
	if reported || !p.deviceFresh(device) {
		p.notify(ent)
		return nil
	}
	// The device is online and answers within moments; say "waiting for
	// device" only if it does not. This saves a status write per pod.
	time.AfterFunc(waitingReportDelay, func() {
		p.mu.Lock()
		still := ent.status == nil && p.pods.byUID[string(pod.UID)] == ent
		p.mu.Unlock()
		if still {
			p.notify(ent)
		}
	})
	return nil
}

// waitingRecheckDelay is when a pod that waits for its configuration is
// checked for the container statuses that say why (reassertWaiting).
const waitingRecheckDelay = 2 * time.Second

// reassertWaiting writes the status of pod key (uid), which waits for its
// configuration, once more if the Pod in the API server has lost its
// container statuses to the pod controller's own error status.
func (p *Provider) reassertWaiting(key string, uid types.UID) {
	p.mu.Lock()
	ent := p.pods.byKey[key]
	if ent == nil || ent.pod.UID != uid || ent.status != nil || ent.waiting == "" || ent.deleting || ent.refusal != nil {
		p.mu.Unlock()
		return
	}
	want := p.podWithStatus(ent)
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods := p.cfg.Client.CoreV1().Pods(want.Namespace)
	cur, err := pods.Get(ctx, want.Name, metav1.GetOptions{})
	if err != nil || cur.UID != uid || len(cur.Status.ContainerStatuses) > 0 {
		return
	}
	cur.Status = want.Status
	if _, err := pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
		p.log.Warn("writing the status of a pod that waits for its configuration", "pod", key, "err", err)
	}
}

// waitingReportDelay is how long an online device may take to report a new
// pod before the Pod says it is waiting for the device.
const waitingReportDelay = 5 * time.Second

// deviceFresh reports whether device's heartbeats are current.
func (p *Provider) deviceFresh(device string) bool {
	p.mu.Lock()
	d := p.devices[device]
	p.mu.Unlock()
	if d == nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return time.Since(d.lastSeen) <= p.cfg.HeartbeatTimeout
}

// notify pushes ent's current status.
func (p *Provider) notify(ent *podEntry) {
	p.mu.Lock()
	out := p.podWithStatus(ent)
	cb := p.notifyPod
	p.mu.Unlock()
	if cb != nil && out != nil {
		cb(out)
	}
}

// DeletePod asks the device to remove the pod's containers. It returns
// errWaitingForDevice until the device confirms, so that the Pod object
// outlives its containers.
func (p *Provider) DeletePod(ctx context.Context, pod *corev1.Pod) error {
	device := pod.Spec.NodeName
	uid := string(pod.UID)
	kvKey := bridge.PodKey(device, uid)
	key := podKey(pod.Namespace, pod.Name)

	p.mu.Lock()
	ent := p.pods.byKey[key]
	if ent == nil || ent.pod.UID != pod.UID {
		if ent = p.pods.byUID[uid]; ent == nil {
			// A pod known only from the buckets (left over from before a
			// restart): index it by UID so the device's answer finds it.
			ent = &podEntry{pod: pod.DeepCopy(), status: p.pods.statusByKey[kvKey]}
			p.pods.byUID[uid] = ent
		}
	}
	ent.deleting = true
	_, published := p.pods.desired[kvKey]
	p.mu.Unlock()

	if published {
		if err := p.workloads.Delete(ctx, kvKey); err != nil {
			return fmt.Errorf("withdrawing workload of pod %s from device %s: %w", key, device, err)
		}
		p.tellDevice(device, kvKey)
		metrics.WorkloadWrites.WithLabelValues("withdraw").Inc()
		p.mu.Lock()
		delete(p.pods.desired, kvKey)
		p.mu.Unlock()
		p.log.Info("workload withdrawn", "pod", key, "node", device)
		p.kickIndexes()
	}

	p.mu.Lock()
	_, running := p.pods.statusByKey[kvKey]
	p.mu.Unlock()
	if running {
		return fmt.Errorf("pod %s on %s: %w", key, device, errWaitingForDevice)
	}
	p.mu.Lock()
	out := p.podWithStatus(ent)
	if cur := p.pods.byKey[key]; cur == ent {
		delete(p.pods.byKey, key)
	}
	if cur := p.pods.byUID[uid]; cur == ent {
		delete(p.pods.byUID, uid)
	}
	delete(p.pods.refs, kvKey)
	cb := p.notifyPod
	p.mu.Unlock()
	if cb != nil && out != nil {
		cb(out)
	}
	return nil
}

// GetPod returns the pod as the provider knows it.
func (p *Provider) GetPod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ent := p.pods.byKey[podKey(namespace, name)]
	if ent == nil {
		return nil, errdefs.NotFoundf("pod %s/%s is not known to vk-fleet", namespace, name)
	}
	return p.podWithStatus(ent), nil
}

// GetPodStatus returns the pod's status as its device reports it.
func (p *Provider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods returns every pod the provider or its devices know of, including
// pods only found in the buckets (for the pod controller's start-up cleanup).
func (p *Provider) GetPods(context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[string]bool{}
	var out []*corev1.Pod
	for _, ent := range p.pods.byKey {
		seen[string(ent.pod.UID)] = true
		if p.owns(ent.pod.Spec.NodeName) {
			out = append(out, p.podWithStatus(ent))
		}
	}
	for key, ref := range p.pods.refs {
		_, uid, _ := bridge.SplitPodKey(key)
		if seen[uid] || !p.owns(ref.device) {
			continue
		}
		pod := &corev1.Pod{}
		pod.Namespace, pod.Name, pod.UID = ref.namespace, ref.name, types.UID(uid)
		pod.Spec.NodeName = ref.device
		out = append(out, pod)
	}
	return out, nil
}

// maxStatusesPerDevice bounds the pod statuses the provider holds for one
// device: a device can report no more pods than this.
const maxStatusesPerDevice = 1000

// putStatus records st, reported by device under key. It refuses a new key
// of a device that is at its limit. Callers hold p.mu.
func (p *Provider) putStatus(key, device string, st *bridge.PodStatus) bool {
	if _, ok := p.pods.statusByKey[key]; !ok {
		if p.pods.perDevice[device] >= maxStatusesPerDevice {
			return false
		}
		p.pods.perDevice[device]++
	}
	p.pods.statusByKey[key] = st
	return true
}

// deleteStatus forgets the status at key. Callers hold p.mu.
func (p *Provider) deleteStatus(key, device string) {
	if _, ok := p.pods.statusByKey[key]; !ok {
		return
	}
	delete(p.pods.statusByKey, key)
	if p.pods.perDevice[device]--; p.pods.perDevice[device] <= 0 {
		delete(p.pods.perDevice, device)
	}
}
