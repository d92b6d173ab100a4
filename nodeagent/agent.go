package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	// HeartbeatInterval is the time between heartbeats. Default 5s.
	HeartbeatInterval time.Duration
	// ResyncInterval is the time between full reconcile passes when nothing
	// happens. Default 15s.
	ResyncInterval time.Duration
	// Addresses overrides the IP addresses reported in the inventory.
	Addresses []string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 5 * time.Second
	}
	if c.ResyncInterval <= 0 {
		c.ResyncInterval = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Agent runs one device's workloads. Create it with New and start it with Run.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	rt    Runtime
	nc    *nats.Conn
	store *Store

	trigger chan struct{}

	mu sync.Mutex
	// kv handles, set once the buckets are reachable.
	workloads jetstream.KeyValue
	status    jetstream.KeyValue
	// published holds the last status written per pod UID; dirty marks UIDs
	// whose status must be written (or deleted) again.
	published map[string]*bridge.PodStatus
	dirty     map[string]bool
	// runtimeErr is the last error of the runtime, "" when it answers.
	runtimeErr string
	// removing holds the grace period of workloads deleted from the store
	// whose pods still run.
	removing map[string]time.Duration
	// podCount is the number of pods in the runtime at the last pass.
	podCount int

	restarts restartTracker
	seq      uint64
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
	store, err := OpenStore(cfg.StateDir + "/workloads")
	if err != nil {
		return nil, err
	}
	return &Agent{
		cfg:       cfg,
		log:       cfg.Logger.With("device", cfg.Device),
		rt:        rt,
		nc:        nc,
		store:     store,
		trigger:   make(chan struct{}, 1),
		published: map[string]*bridge.PodStatus{},
		dirty:     map[string]bool{},
		removing:  map[string]time.Duration{},
		restarts:  restartTracker{next: map[string]time.Time{}, backoff: map[string]time.Duration{}},
	}, nil
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
	a.nc.SetReconnectHandler(func(*nats.Conn) {
		a.log.Info("nats reconnected")
		a.markAllDirty()
		a.kick()
	})
	a.reconcileLoop(ctx)
	cancel()
	wg.Wait()
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
func (a *Agent) buckets(ctx context.Context) (workloads, status jetstream.KeyValue, err error) {
	a.mu.Lock()
	w, s := a.workloads, a.status
	a.mu.Unlock()
	if w != nil && s != nil {
		return w, s, nil
	}
	if !a.nc.IsConnected() {
		return nil, nil, errors.New("nats not connected")
	}
	js, err := jetstream.New(a.nc)
	if err != nil {
		return nil, nil, fmt.Errorf("opening jetstream: %w", err)
	}
	if w, err = js.KeyValue(ctx, bridge.WorkloadsBucket); err != nil {
		return nil, nil, fmt.Errorf("opening bucket %s: %w", bridge.WorkloadsBucket, err)
	}
	if s, err = js.KeyValue(ctx, bridge.StatusBucket); err != nil {
		return nil, nil, fmt.Errorf("opening bucket %s: %w", bridge.StatusBucket, err)
	}
	a.mu.Lock()
	a.workloads, a.status = w, s
	a.mu.Unlock()
	return w, s, nil
}

// syncDesired mirrors this device's keys of the workloads bucket into the
// local store, re-establishing the watch whenever it breaks.
func (a *Agent) syncDesired(ctx context.Context) {
	delay := time.Second
	for ctx.Err() == nil {
		err := a.watchDesired(ctx)
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("workload watch ended; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 15*time.Second)
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

	snapshot := map[string]bool{}
	initial := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			if e == nil {
				// End of the initial values: whatever the store holds that
				// the bucket does not is gone, however old its tombstone.
				initial = false
				for uid := range a.store.UIDs() {
					if !snapshot[uid] {
						a.log.Info("workload gone while away", "pod", uid)
						if err := a.store.Delete(uid); err != nil {
							a.log.Error("deleting workload", "pod", uid, "err", err)
						}
					}
				}
				a.markAllDirty()
				a.kick()
				continue
			}
			a.applyEntry(e, initial, snapshot)
		}
	}
}

func (a *Agent) applyEntry(e jetstream.KeyValueEntry, initial bool, snapshot map[string]bool) {
	device, uid, ok := bridge.SplitPodKey(e.Key())
	if !ok || device != a.cfg.Device {
		return
	}
	switch e.Operation() {
	case jetstream.KeyValuePut:
		w, err := bridge.Decode[bridge.Workload](e.Value())
		if err != nil || w.UID != uid {
			a.log.Error("ignoring malformed workload", "key", e.Key(), "err", err)
			return
		}
		if initial {
			snapshot[uid] = true
		}
		changed, err := a.store.PutWorkload(*w, time.Now())
		if err != nil {
			a.log.Error("storing workload", "pod", uid, "err", err)
			return
		}
		if changed {
			a.log.Info("workload received", "pod", w.Namespace+"/"+w.Name, "uid", uid, "generation", w.Generation)
		}
	default: // delete or purge
		if r, ok := a.store.Get(uid); ok {
			a.log.Info("workload removed", "pod", r.Workload.Namespace+"/"+r.Workload.Name, "uid", uid)
			a.mu.Lock()
			a.removing[uid] = grace(&r.Workload)
			a.mu.Unlock()
		}
		if err := a.store.Delete(uid); err != nil {
			a.log.Error("deleting workload", "pod", uid, "err", err)
			return
		}
		a.mu.Lock()
		a.dirty[uid] = true
		a.mu.Unlock()
	}
	if !initial {
		a.kick()
	}
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
