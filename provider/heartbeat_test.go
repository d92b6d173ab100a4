package provider

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// everyDevice is a registry in which every device is enrolled.
type everyDevice struct{}

func (everyDevice) Has(string) bool       { return true }
func (everyDevice) OnDelete(func(string)) {}
func heartbeat(t *testing.T, device string, cpus int) *nats.Msg {
	t.Helper()
	hb := &bridge.Heartbeat{Device: device, Inventory: bridge.Inventory{CPUs: cpus, MemoryBytes: 1 << 30, ProtocolVersion: bridge.ProtocolVersion}}
	hb.State = bridge.StateHash(hb)
	data, err := bridge.Encode(hb)
	if err != nil {
		t.Fatal(err)
	}
	return &nats.Msg{Subject: bridge.HeartbeatSubject(device), Data: data}
}

// quietHeartbeat is a protocol 7 heartbeat that carries only its state.
func quietHeartbeat(t *testing.T, device, state string) *nats.Msg {
	t.Helper()
	data, err := bridge.Encode(&bridge.Heartbeat{Seq: 9, Pods: 1, State: state})
	if err != nil {
		t.Fatal(err)
	}
	return &nats.Msg{Subject: bridge.HeartbeatSubject(device), Data: data}
}

// poll waits until cond holds.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.After(20 * time.Second); !cond(); {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting: %s", what)
		case <-tick.C:
		}
	}
}

// nodeReadyStatus is the status of Node name's Ready condition, or "".
func nodeReadyStatus(ctx context.Context, cs *fake.Clientset, name string) corev1.ConditionStatus {
	n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return ""
}

// countActions counts the client's actions of verb on resource for name.
func countActions(cs *fake.Clientset, verb, resource, name string) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() != verb || a.GetResource().Resource != resource {
			continue
		}
		if na, ok := a.(interface{ GetName() string }); ok && na.GetName() != name {
			continue
		}
		n++
	}
	return n
}

func deviceNode(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)}}
}

// One device whose Node cannot be written must not stop the heartbeats and
// Nodes of every other device: heartbeats all arrive on one subscription,
// and one loop writes every Node.
func TestAStuckNodeDoesNotStopHeartbeats(t *testing.T) {
	cs := fake.NewClientset(deviceNode("dev-stuck"), deviceNode("dev-ok"))
	cs.PrependReactor("patch", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.(k8stesting.PatchAction).GetName() == "dev-stuck" {
			return true, nil, errors.New("the API server refuses this node")
		}
		return false, nil, nil
	})
	p, err := New(Config{Client: cs, NATS: &nats.Conn{}, Registry: everyDevice{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	go p.runNodeLoop(ctx)

	p.handleHeartbeat(ctx, heartbeat(t, "dev-stuck", 1))
	poll(t, "the stuck device's Node attempted", func() bool { return countActions(cs, "patch", "nodes", "dev-stuck") > 0 })
	handled := make(chan struct{})
	go func() {
		defer close(handled)
		// Each heartbeat changes the inventory, so each asks for a write.
		for i := 2; i <= 20; i++ {
			p.handleHeartbeat(ctx, heartbeat(t, "dev-stuck", i))
			p.handleHeartbeat(ctx, heartbeat(t, "dev-ok", i))
		}
	}()
	select {
	case <-handled:
	case <-time.After(30 * time.Second):
		t.Fatal("heartbeat handling blocked behind a device whose Node cannot be written")
	}
	poll(t, "dev-ok's Node written with its last inventory", func() bool {
		n, err := cs.CoreV1().Nodes().Get(ctx, "dev-ok", metav1.GetOptions{})
		return err == nil && n.Status.Capacity.Cpu().Value() == 20
	})
}

// The node loop keeps a device's Node and lease as a kubelet does: the
// lease renewed every quarter of its duration while heartbeats arrive, the
// Node written when the device's state changes and not for heartbeats that
// change nothing; a state it does not know makes it ask the device; a
// silent device's lease lapses; its next heartbeat writes the Node at once.
func TestNodeLoopWritesOnlyWhatChanged(t *testing.T) {
	nc := startNATS(t)
	asked := make(chan struct{}, 10)
	if _, err := nc.Subscribe(bridge.InventoryRequestSubject("pi-1"), func(*nats.Msg) { asked <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	cs := fake.NewClientset(deviceNode("pi-1"))
	p, err := New(Config{Client: cs, NATS: nc, Registry: everyDevice{},
		LeaseDurationSeconds: 1, HeartbeatTimeout: 3 * time.Second, StatusUpdateInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	go p.runNodeLoop(ctx)

	full := heartbeat(t, "pi-1", 4)
	p.handleHeartbeat(ctx, full)
	poll(t, "Node Ready", func() bool { return nodeReadyStatus(ctx, cs, "pi-1") == corev1.ConditionTrue })
	// The lease follows the status write (which carries a fresh heartbeat
	// time) a moment later.
	var lease *coordinationv1.Lease
	poll(t, "the lease", func() bool {
		lease, err = cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, "pi-1", metav1.GetOptions{})
		return err == nil
	})
	if len(lease.OwnerReferences) != 1 || lease.OwnerReferences[0].UID != "uid-pi-1" || *lease.Spec.HolderIdentity != "pi-1" {
		t.Errorf("lease not owned by its Node: %+v", lease)
	}

	// Quiet heartbeats in the same state: the lease is renewed, the Node
	// is left alone.
	hb, _ := bridge.Decode[bridge.Heartbeat](full.Data)
	writes := countActions(cs, "patch", "nodes", "pi-1")
	renewals := countActions(cs, "patch", "leases", "pi-1")
	poll(t, "three lease renewals", func() bool {
		p.handleHeartbeat(ctx, quietHeartbeat(t, "pi-1", hb.State))
		return countActions(cs, "patch", "leases", "pi-1") >= renewals+3
	})
	if got := countActions(cs, "patch", "nodes", "pi-1"); got != writes {
		t.Errorf("heartbeats that changed nothing wrote the Node %d times", got-writes)
	}
	select {
	case <-asked:
		t.Error("the provider asked for an inventory it had")
	default:
	}

	// A state the provider does not know: it asks the device.
	p.handleHeartbeat(ctx, quietHeartbeat(t, "pi-1", "0123456789abcdef"))
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the provider did not ask for the inventory of an unknown state")
	}

	if got, want := p.ConnectedDevices(), p.FleetState().Connected; got != 1 || want != 1 {
		t.Errorf("a device heard from: ConnectedDevices %d, FleetState().Connected %d, want 1", got, want)
	}
	// Silence: the loop stops renewing.
	p.mu.Lock()
	d := p.devices["pi-1"]
	p.mu.Unlock()
	d.mu.Lock()
	d.lastSeen = time.Now().Add(-time.Minute)
	d.mu.Unlock()
	if got, want := p.ConnectedDevices(), p.FleetState().Connected; got != 0 || want != 0 {
		t.Errorf("a silent device: ConnectedDevices %d, FleetState().Connected %d, want 0", got, want)
	}
	before := countActions(cs, "patch", "leases", "pi-1")
	if next, err := p.syncNode(ctx, "pi-1"); err != nil || next != 0 {
		t.Fatalf("sync of a silent device: next %v, err %v", next, err)
	}
	if got := countActions(cs, "patch", "leases", "pi-1"); got != before {
		t.Errorf("a silent device's lease was renewed")
	}
	// Its Node says why it is not Ready.
	n, err := cs.CoreV1().Nodes().Get(ctx, "pi-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && (c.Status != corev1.ConditionUnknown || c.Reason != "DeviceLinkDown") {
			t.Errorf("a silent device's Node is %s/%s, want Unknown/DeviceLinkDown", c.Status, c.Reason)
		}
	}
	// Back: written at once, though its state did not change.
	writes = countActions(cs, "patch", "nodes", "pi-1")
	p.handleHeartbeat(ctx, quietHeartbeat(t, "pi-1", hb.State))
	poll(t, "the Node written when the device came back", func() bool {
		return countActions(cs, "patch", "nodes", "pi-1") > writes
	})
}

// One device cannot make the provider hold statuses without bound.
func TestStatusesPerDeviceAreBounded(t *testing.T) {
	p := testProvider(t)
	st := &bridge.PodStatus{Phase: bridge.PhaseRunning}
	for i := range maxStatusesPerDevice {
		if !p.putStatus(bridge.PodKey("greedy", fmt.Sprint(i)), "greedy", st) {
			t.Fatalf("status %d refused below the limit", i)
		}
	}
	if p.putStatus(bridge.PodKey("greedy", "one-more"), "greedy", st) {
		t.Fatal("a status over the limit was accepted")
	}
	if !p.putStatus(bridge.PodKey("greedy", "0"), "greedy", st) {
		t.Fatal("an update of a known status was refused")
	}
	if !p.putStatus(bridge.PodKey("modest", "0"), "modest", st) {
		t.Fatal("another device was refused because of the greedy one")
	}
	p.deleteStatus(bridge.PodKey("greedy", "0"), "greedy")
	if !p.putStatus(bridge.PodKey("greedy", "one-more"), "greedy", st) {
		t.Fatal("a status refused after the device dropped one")
	}
}

// A device whose state keeps changing cannot make the provider write its
// Node at its own pace: writes are at least minStatusGap apart, and the last
// state wins.
func TestAFlappingDeviceIsWrittenAtMostOncePerGap(t *testing.T) {
	cs := fake.NewClientset(deviceNode("pi-flap"))
	p, err := New(Config{Client: cs, NATS: &nats.Conn{}, Registry: everyDevice{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	go p.runNodeLoop(ctx)
	p.handleHeartbeat(ctx, heartbeat(t, "pi-flap", 1))
	poll(t, "the first write", func() bool { return countActions(cs, "patch", "nodes", "pi-flap") == 1 })
	for i := 2; i <= 50; i++ {
		p.handleHeartbeat(ctx, heartbeat(t, "pi-flap", i))
	}
	poll(t, "the last state written", func() bool {
		n, err := cs.CoreV1().Nodes().Get(ctx, "pi-flap", metav1.GetOptions{})
		return err == nil && n.Status.Capacity.Cpu().Value() == 50
	})
	if got := countActions(cs, "patch", "nodes", "pi-flap"); got > 3 {
		t.Errorf("49 state changes in a burst wrote the Node %d times", got-1)
	}
}

// A device whose agent speaks an older or newer protocol says so in an
// Event on its Node, once.
func TestAgentProtocolEvents(t *testing.T) {
	p, err := New(Config{Client: fake.NewClientset(deviceNode("pi-old")), NATS: &nats.Conn{}, Registry: everyDevice{}})
	if err != nil {
		t.Fatal(err)
	}
	rec := record.NewFakeRecorder(10)
	p.recorder = rec
	send := func(v int) {
		hb := &bridge.Heartbeat{Device: "pi-old", Inventory: bridge.Inventory{CPUs: 1, ProtocolVersion: v, AgentVersion: "v0.0.9"}}
		hb.State = bridge.StateHash(hb)
		data, _ := bridge.Encode(hb)
		p.handleHeartbeat(t.Context(), &nats.Msg{Subject: bridge.HeartbeatSubject("pi-old"), Data: data})
	}
	send(5)
	send(5)
	send(bridge.ProtocolVersion + 1)
	send(bridge.ProtocolVersion)
	var got []string
	for len(rec.Events) > 0 {
		got = append(got, <-rec.Events)
	}
	if len(got) != 2 || !strings.HasPrefix(got[0], "Warning AgentProtocolOld device-agent v0.0.9 speaks protocol 5") ||
		!strings.HasPrefix(got[1], "Warning AgentProtocolNewer") {
		t.Errorf("events %q", got)
	}
}

// cachedDevices is a registry that keeps the devices' Node UIDs and
// creation times, as *registry.Cache does.
type cachedDevices struct {
	everyDevice
	created time.Time
}

func (c cachedDevices) Identity(name string) (types.UID, time.Time, bool) {
	return types.UID("uid-" + name), c.created, true
}

// A device's first lease is owned by its Node, whose UID comes from the
// registry's cache: a fleet enrolling at once makes no Node read per lease.
// The lease of a Node enrolled while the process runs is created without
// first trying to renew it; an older Node's lease is renewed first.
func TestFirstLeaseTakesItsOwnerFromTheCache(t *testing.T) {
	for _, tc := range []struct {
		name    string
		created time.Duration // relative to the provider's start
		patches int           // lease patches before the lease exists
	}{
		{"enrolled now", time.Second, 0},
		{"enrolled before", -time.Hour, 1},
	} {
		t.Run(tc.name, func(t *testing.T) { firstLease(t, tc.created, tc.patches) })
	}
}

func firstLease(t *testing.T, created time.Duration, patches int) {
	nc := startNATS(t)
	cs := fake.NewClientset(deviceNode("pi-1"))
	reg := cachedDevices{created: time.Now().Add(created)}
	p, err := New(Config{Client: cs, NATS: nc, Registry: reg,
		LeaseDurationSeconds: 40, HeartbeatTimeout: time.Minute, StatusUpdateInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	go p.runNodeLoop(ctx)
	p.handleHeartbeat(ctx, heartbeat(t, "pi-1", 4))
	var lease *coordinationv1.Lease
	poll(t, "the lease", func() bool {
		lease, err = cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, "pi-1", metav1.GetOptions{})
		return err == nil
	})
	if len(lease.OwnerReferences) != 1 || lease.OwnerReferences[0].UID != "uid-pi-1" {
		t.Errorf("lease owners %+v, want the Node uid-pi-1", lease.OwnerReferences)
	}
	if n := countActions(cs, "get", "nodes", "pi-1"); n != 0 {
		t.Errorf("the Node was read %d times for its lease; the cache has its UID", n)
	}
	if n := countActions(cs, "patch", "leases", "pi-1"); n != patches {
		t.Errorf("%d lease patches before the lease was created, want %d", n, patches)
	}

	// Renewals after that are one patch each, never another create.
	p.cfg.LeaseDurationSeconds = 1 // renewed every 250 ms from now on
	p.mu.Lock()
	d := p.devices["pi-1"]
	p.mu.Unlock()
	d.mu.Lock()
	d.leaseAt = time.Time{}.Add(time.Nanosecond) // due, and not the first
	d.mu.Unlock()
	p.nodes.Add("pi-1")
	renewals := countActions(cs, "patch", "leases", "pi-1")
	poll(t, "three renewals", func() bool {
		p.handleHeartbeat(ctx, heartbeat(t, "pi-1", 4))
		return countActions(cs, "patch", "leases", "pi-1") >= renewals+3
	})
	if n := countActions(cs, "create", "leases", ""); n != 1 {
		t.Errorf("%d lease creates, want the first one only", n)
	}
}

// An API server too busy for a device's lease renewals lets the node
// lifecycle controller mark its Node Unknown; once the renewals get
// through, the Node is written Ready again at once, not at the next
// periodic status write.
func TestNodeMarkedUnknownWhileRenewalsFailIsWrittenReadyAgain(t *testing.T) {
	nc := startNATS(t)
	cs := fake.NewClientset(deviceNode("pi-1"))
	var failing atomic.Bool
	cs.PrependReactor("patch", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failing.Load() {
			return true, nil, errors.New("the server is currently unable to handle the request")
		}
		return false, nil, nil
	})
	p, err := New(Config{Client: cs, NATS: nc, Registry: everyDevice{},
		LeaseDurationSeconds: 1, HeartbeatTimeout: 30 * time.Second, StatusUpdateInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	go p.runNodeLoop(ctx)
	ready := func() corev1.ConditionStatus { return nodeReadyStatus(ctx, cs, "pi-1") }
	full := heartbeat(t, "pi-1", 4)
	p.handleHeartbeat(ctx, full)
	poll(t, "Node Ready", func() bool { return ready() == corev1.ConditionTrue })
	poll(t, "the lease", func() bool {
		_, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, "pi-1", metav1.GetOptions{})
		return err == nil
	})

	// Renewals fail; the controller marks the Node Unknown.
	failing.Store(true)
	hb, _ := bridge.Decode[bridge.Heartbeat](full.Data)
	failedSince := time.Now()
	poll(t, "renewals failing for over a lease duration", func() bool {
		p.handleHeartbeat(ctx, quietHeartbeat(t, "pi-1", hb.State))
		return time.Since(failedSince) > 1500*time.Millisecond
	})
	n, err := cs.CoreV1().Nodes().Get(ctx, "pi-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			n.Status.Conditions[i].Status, n.Status.Conditions[i].Reason = corev1.ConditionUnknown, "NodeStatusUnknown"
		}
	}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The API server answers again.
	failing.Store(false)
	poll(t, "the Node written Ready again", func() bool {
		p.handleHeartbeat(ctx, quietHeartbeat(t, "pi-1", hb.State))
		return ready() == corev1.ConditionTrue
	})
}
