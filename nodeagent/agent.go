package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// Config configures an Agent.
type Config struct {
	// Device is this device's name; see bridge.ValidateDeviceName.
	Device string
	// StateDir holds the local store of workloads.
	StateDir string
	// AgentVersion is reported in the inventory.
	AgentVersion string
	// SharedProcess is set when many agents run in one process (the
	// simulator), which keeps them apart itself: no state-directory lock
	// each (a file descriptor per device).
	SharedProcess bool
	// HeartbeatInterval is the time between heartbeats. Default 10s.
	HeartbeatInterval time.Duration
	// ResyncInterval is the time between full reconcile passes when nothing
	// happens. Default 15s.
	ResyncInterval time.Duration
	// Addresses overrides the IP addresses reported in the inventory.
	Addresses []string
	// SystemReserved is what the device keeps for its own system; nil
	// leaves it to the provider's --system-reserved.
	SystemReserved *bridge.ResourceAmounts
	// EvictionHard are the thresholds of the Node's pressure conditions
	// (kubelet's --eviction-hard); nil means DefaultEvictionHard.
	EvictionHard []Threshold
	// PressureTransitionPeriod holds a pressure condition true after its
	// threshold was last met. Default DefaultPressureTransitionPeriod.
	PressureTransitionPeriod time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 10 * time.Second
	}
	if c.ResyncInterval <= 0 {
		c.ResyncInterval = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.EvictionHard == nil {
		c.EvictionHard, _ = ParseEvictionHard(DefaultEvictionHard)
	}
	if c.PressureTransitionPeriod <= 0 {
		c.PressureTransitionPeriod = DefaultPressureTransitionPeriod
	}
}

// Agent runs one device's workloads. Create it with New and start it with Run.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	rt    Runtime
	nc    *nats.Conn
	store *Store
	lock  *os.File // held while the agent lives: see lockStateDir

	trigger chan struct{}
	// rewatch asks for the workload watch to start over: after a reconnect
	// the server may hold a new (or re-created) bucket, on which an
	// existing watch would wait for sequence numbers it never reaches.
	rewatch chan struct{}

	mu sync.Mutex
	// kv handles, set once the buckets are reachable.
	workloads *devBucket
	status    *devBucket
	// published holds the last status written per pod UID; dirty marks UIDs
	// whose status must be written (or deleted) again.
	published map[string]*bridge.PodStatus
	dirty     map[string]bool
	// runtimeErr is the last error of the runtime, "" when it answers.
	runtimeErr string
	// removing holds the grace period of workloads deleted from the store
	// whose pods still run.
	removing map[string]time.Duration
	// deadlineStops holds the pods past their activeDeadlineSeconds whose
	// containers are being stopped.
	deadlineStops map[string]bool
	// ephemeral holds the last start of each ephemeral container, by
	// "<pod UID>/<name>".
	ephemeral map[string]ephemeralStart
	// podCount is the number of pods in the runtime at the last pass.
	podCount int
	// index is the last DesiredIndex the provider wrote for this device
	// (nil until one is seen); present holds the UIDs whose workload keys
	// exist in the bucket now. Together they say which absences to trust.
	index map[string]bool
	// indexAt is when NATS stored the index. An index stored before a
	// workload was first published (Record.Published: the provider stopped
	// before it wrote the next index, or NATS lost the write) does not
	// list it, and is no reason to remove it. NATS's clock, not the
	// stream's revisions: a stream created anew (NATS lost its store)
	// starts its revisions over, not its clock.
	indexAt time.Time
	// providerProtocol is the protocol of the provider that wrote the last
	// index: from 7 on, heartbeats are quiet.
	providerProtocol int
	// noIndexSince is when the device, following, first found no index
	// (zero: it has one); used by syncDesired's goroutine only.
	noIndexSince time.Time
	// localKey and localAt are what the local status file last said and
	// when it was written (heartbeat loop only).
	localKey string
	localAt  time.Time
	present  map[string]bool
	orphans  map[string]bool
	// volumesStale counts, per UID, the workloads received whose volume
	// files the pod may not have yet (a count, so that a pass applying an
	// older workload does not clear the mark of one received meanwhile).
	volumesStale map[string]int

	rejects  rejections
	sessions sessions
	probes   prober
	hooks    hooks
	// initStarts holds when advanceInit started each container that is
	// still listed as created (reconcile's goroutine only).
	initStarts map[string]time.Time
	// creating holds the pods being created and since when; created how
	// each pod's last creation ended; createSlots bounds parallel creations.
	creating    map[string]time.Time
	created     map[string]createResult
	createSlots chan struct{}
	restarts    restartTracker
	seq         uint64
	// pressure turns the device's eviction signals into pressure;
	// imageStore is the runtime's image store once known.
	pressure   pressureMonitor
	imageStore string
}

// New returns an Agent for cfg.Device that runs pods on rt and talks over nc.
// nc should be created with nats.RetryOnFailedConnect and unlimited
// reconnects: the agent runs from its local store while NATS is unreachable.
func New(cfg Config, rt Runtime, nc *nats.Conn) (*Agent, error) {
	cfg.setDefaults()
	if err := bridge.ValidateDeviceName(cfg.Device); err != nil {
		return nil, err
	}
	if cfg.StateDir == "" {
		return nil, errors.New("state directory is required")
	}
	var lock *os.File
	var err error
	if !cfg.SharedProcess {
		lock, err = lockStateDir(cfg.StateDir)
	}
	if err != nil {
		return nil, err
	}
	store, err := OpenStore(cfg.StateDir + "/workloads")
	if err != nil {
		lock.Close()
		return nil, err
	}
	a := &Agent{
		cfg:           cfg,
		log:           cfg.Logger.With("device", cfg.Device),
		rt:            rt,
		nc:            nc,
		store:         store,
		lock:          lock,
		trigger:       make(chan struct{}, 1),
		rewatch:       make(chan struct{}, 1),
		createSlots:   make(chan struct{}, maxParallelCreates),
		published:     map[string]*bridge.PodStatus{},
		dirty:         map[string]bool{},
		removing:      map[string]time.Duration{},
		deadlineStops: map[string]bool{},
		ephemeral:     map[string]ephemeralStart{},
		present:       map[string]bool{},
		// After a restart, check every pod's files once.
		volumesStale: staleMarks(store.UIDs()),
		restarts:     restartTracker{next: map[string]time.Time{}, backoff: map[string]time.Duration{}},
	}
	a.probes.a = a
	a.pressure = pressureMonitor{thresholds: cfg.EvictionHard, period: cfg.PressureTransitionPeriod, host: realHost}
	return a, nil
}

// Store returns the agent's local store of workloads.
func (a *Agent) Store() *Store { return a.store }

// Run runs the agent until ctx ends. It starts the pods of the local store
// at once, whether or not NATS is reachable.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	a.log.Info("agent starting", "pods", len(a.store.UIDs()), "protocol", bridge.ProtocolVersion)
	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
		}()
	}
	run(a.syncDesired)
	run(a.watchRuntime)
	run(a.heartbeatLoop)
	run(a.serveSessions)
	a.nc.SetReconnectHandler(func(*nats.Conn) {
		a.log.Info("nats reconnected")
		select {
		case a.rewatch <- struct{}{}:
		default:
		}
		a.markAllDirty()
		a.kick()
	})
	a.reconcileLoop(ctx)
	cancel()
	wg.Wait()
	if a.lock != nil {
		a.lock.Close()
	}
	return nil
}

// kick asks for a reconcile pass.
func (a *Agent) kick() {
	select {
	case a.trigger <- struct{}{}:
	default:
	}
}

func (a *Agent) markAllDirty() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for uid := range a.published {
		a.dirty[uid] = true
	}
	for uid := range a.store.UIDs() {
		a.dirty[uid] = true
	}
}

// buckets returns the KV handles, opening them when NATS is reachable.
func (a *Agent) buckets(context.Context) (workloads, status *devBucket, err error) {
	a.mu.Lock()
	w, s := a.workloads, a.status
	a.mu.Unlock()
	if w != nil && s != nil {
		return w, s, nil
	}
	if !a.nc.IsConnected() {
		return nil, nil, errors.New("nats not connected")
	}
	if w, err = newDevBucket(a.nc, bridge.WorkloadsBucket); err != nil {
		return nil, nil, err
	}
	if s, err = newDevBucket(a.nc, bridge.StatusBucket); err != nil {
		return nil, nil, err
	}
	a.mu.Lock()
	a.workloads, a.status = w, s
	a.mu.Unlock()
	return w, s, nil
}

// syncDesired mirrors this device's keys of the workloads bucket into the
// local store, re-establishing the watch whenever it breaks.
// syncDesired takes up the provider's desired state until ctx ends: by
// following its change notices (protocol 7, no JetStream consumer per
// device: followDesired), or by watching the device's keys, as older
// providers need. It starts following; a device whose index says nothing
// of a protocol 7 provider watches instead.
func (a *Agent) syncDesired(ctx context.Context) {
	delay := time.Second
	watch := false
	for ctx.Err() == nil {
		var err error
		if watch {
			err = a.watchDesired(ctx)
		} else {
			err = a.followDesired(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		switch {
		case errors.Is(err, errWatch):
			a.log.Info("taking up desired state by watching", "why", err)
			watch = true
			continue
		case errors.Is(err, errFollow):
			a.log.Info("taking up desired state by following the provider", "why", err)
			watch = false
			continue
		}
		if errors.Is(err, errRewatch) {
			delay = time.Second
			continue
		}
		if a.nc.IsConnected() {
			a.log.Warn("workload watch ended; retrying", "err", err, "in", delay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(delay*2, 15*time.Second)
			continue
		}
		// Offline: start again as soon as the connection is back.
		a.waitConnected(ctx)
		delay = time.Second
	}
}

func (a *Agent) watchDesired(ctx context.Context) error {
	wkv, _, err := a.buckets(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := wkv.Watch(ctx, bridge.DeviceKeys(a.cfg.Device))
	if err != nil {
		return fmt.Errorf("watching workloads: %w", err)
	}
	defer w.Stop()

	// A new watch replays the bucket: what is present, and the index, are
	// learnt afresh. A bucket NATS lost holds no index: the one read
	// before says nothing about the workloads published since.
	a.mu.Lock()
	a.present = map[string]bool{}
	a.index = nil
	a.mu.Unlock()
	initial := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.rewatch:
			a.log.Info("re-reading workloads after a reconnect")
			return errRewatch
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			if e == nil {
				// End of the initial values. A key missing from them is not
				// a reason to remove anything: the bucket may be new or lost.
				// Only an index written from Kubernetes is (forgetUnindexed).
				initial = false
				a.forgetUnindexed()
				a.markAllDirty()
				a.kick()
				continue
			}
			a.applyEntry(e, initial)
			if a.followsProvider() {
				return errFollow // the provider was upgraded
			}
		}
	}
}

// errRewatch ends a workload watch that must start over.
var errRewatch = errors.New("watch restarted after a reconnect")

// forgetUnindexed deletes stored workloads that the provider's index does
// not list and whose keys are gone. Without an index it does nothing.
func (a *Agent) forgetUnindexed() {
	a.mu.Lock()
	if a.index == nil {
		a.mu.Unlock()
		return
	}
	var gone []string
	for uid := range a.store.UIDs() {
		if a.index[uid] || a.present[uid] {
			continue
		}
		if r, ok := a.store.Get(uid); ok && r.Published.After(a.indexAt) {
			a.log.Debug("kept a workload the provider's index predates", "uid", uid, "published", r.Published, "index_at", a.indexAt)
			continue
		}
		gone = append(gone, uid)
	}
	a.mu.Unlock()
	for _, uid := range gone {
		a.forget(uid, "not in the provider's index")
	}
}

// forget deletes uid's workload from the store; the next pass removes its pod.
//
// The pod is marked for removal even when the store no longer holds it: an
// agent stopped half-way through a removal finds the pod, and the status
// key the provider waits for, only through the withdrawal it sees again.
func (a *Agent) forget(uid, why string) {
	g := defaultGrace
	if r, ok := a.store.Get(uid); ok {
		a.log.Info("workload removed", "pod", r.Workload.Namespace+"/"+r.Workload.Name, "uid", uid, "why", why)
		g = grace(&r.Workload)
	} else {
		// Told again (a second notice, a full read): keep the grace
		// period the workload gave when it was first withdrawn.
		a.mu.Lock()
		if prev, ok := a.removing[uid]; ok {
			g = prev
		}
		a.mu.Unlock()
	}
	a.mu.Lock()
	a.removing[uid] = g
	a.mu.Unlock()
	if r, ok := a.store.Get(uid); ok {
		a.hooks.mu.Lock()
		if a.hooks.stopping == nil {
			a.hooks.stopping = map[string]*bridge.Workload{}
		}
		a.hooks.stopping[uid] = &r.Workload
		a.hooks.mu.Unlock()
	}
	if err := a.store.Delete(uid); err != nil {
		a.log.Error("deleting workload", "pod", uid, "err", err)
		return
	}
	a.mu.Lock()
	a.dirty[uid] = true
	a.mu.Unlock()
}

func (a *Agent) applyEntry(e jetstream.KeyValueEntry, initial bool) {
	if dev, ok := bridge.IsIndexKey(e.Key()); ok {
		if dev == a.cfg.Device {
			a.applyIndex(e, initial)
		}
		return
	}
	device, uid, ok := bridge.SplitPodKey(e.Key())
	if !ok || device != a.cfg.Device {
		return
	}
	switch e.Operation() {
	case jetstream.KeyValuePut:
		w, err := bridge.Decode[bridge.Workload](e.Value())
		if err == nil {
			err = validWorkload(w, uid)
		}
		if err != nil {
			a.rejected("workload", e.Key(), err)
			return
		}
		a.mu.Lock()
		a.present[uid] = true
		a.mu.Unlock()
		changed, err := a.store.PutWorkload(*w, time.Now(), e.Created())
		if err != nil {
			a.log.Error("storing workload", "pod", uid, "err", err)
			return
		}
		if changed {
			a.log.Info("workload received", "pod", w.Namespace+"/"+w.Name, "uid", uid, "generation", w.Generation)
			a.mu.Lock()
			a.volumesStale[uid]++
			a.mu.Unlock()
		}
	default: // delete or purge: the provider withdrew the workload
		a.mu.Lock()
		delete(a.present, uid)
		a.mu.Unlock()
		a.forget(uid, "withdrawn")
	}
	if !initial {
		a.kick()
	}
}

// applyIndex takes up the provider's DesiredIndex of this device.
func (a *Agent) applyIndex(e jetstream.KeyValueEntry, initial bool) {
	if e.Operation() != jetstream.KeyValuePut {
		// A withdrawn index (revocation) says nothing about absence.
		a.mu.Lock()
		a.index = nil
		a.mu.Unlock()
		return
	}
	idx, err := bridge.Decode[bridge.DesiredIndex](e.Value())
	if err == nil && idx.Device != a.cfg.Device {
		err = fmt.Errorf("index of device %q", idx.Device)
	}
	if err != nil {
		a.rejected("index", e.Key(), err)
		return
	}
	set := make(map[string]bool, len(idx.PodUIDs))
	for _, uid := range idx.PodUIDs {
		set[uid] = true
	}
	a.mu.Lock()
	a.index = set
	a.indexAt = e.Created()
	a.providerProtocol = idx.ProviderProtocol
	a.mu.Unlock()
	if !initial {
		a.forgetUnindexed()
		a.kick()
	}
}

// indexed reports whether the provider's index is known and lists uid.
func (a *Agent) indexed(uid string) (known, listed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.index != nil, a.index[uid]
}

// watchRuntime turns runtime events into reconcile passes.
func (a *Agent) watchRuntime(ctx context.Context) {
	delay := time.Second
	for ctx.Err() == nil {
		ch, err := a.rt.Events(ctx)
		if err == nil {
			delay = time.Second
			for range ch {
				a.kick()
			}
		}
		if ctx.Err() != nil {
			return
		}
		a.log.Debug("runtime event stream ended; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
}

// waitConnected returns once the NATS connection is up, or ctx ends.
func (a *Agent) waitConnected(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for !a.nc.IsConnected() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// staleMarks marks every UID of uids once.
func staleMarks(uids map[string]bool) map[string]int {
	m := make(map[string]int, len(uids))
	for uid := range uids {
		m[uid] = 1
	}
	return m
}
