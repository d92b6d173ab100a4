package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// fullReadInterval is how often a device following a protocol 7 provider
// reads all its keys, in case a change notice was lost.
const fullReadInterval = 10 * time.Minute

// noIndexWait is how long a device without an index waits for one, reading
// its keys again once, before it watches its keys instead.
const noIndexWait = 3 * time.Second

// errWatch and errFollow end one way of taking up desired state for the
// other: the provider is older than protocol 7 (watch), or is not (follow).
var (
	errWatch  = errors.New("the provider is older than protocol 7: watching the workload keys")
	errFollow = errors.New("the provider speaks protocol 7: following its change notices")
)

// followsProvider reports whether desired state is taken up by following
// the provider's change notices rather than a watch: the provider said, in
// the device's index, that it speaks protocol 7.
func (a *Agent) followsProvider() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.providerProtocol >= 7
}

// followDesired takes up desired state from a protocol 7 provider without
// a JetStream consumer: it reads all the device's keys (readAll), then each
// key the provider says it changed, until the connection comes back from a
// break (the next run reads all again), the full-read interval passes, or
// the provider turns out to be older (errWatch).
func (a *Agent) followDesired(ctx context.Context) error {
	wkv, _, err := a.buckets(ctx)
	if err != nil {
		return err
	}
	changed := make(chan string, 256)
	overflow := make(chan struct{}, 1)
	sub, err := a.nc.Subscribe(bridge.DesiredSubject(a.cfg.Device), func(m *nats.Msg) {
		select {
		case changed <- string(m.Data):
		default:
			select {
			case overflow <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		return fmt.Errorf("subscribing to desired state notices: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// Subscribed before reading: a change made while reading is noticed.
	if err := a.nc.FlushTimeout(10 * time.Second); err != nil {
		return fmt.Errorf("subscribing to desired state notices: %w", err)
	}
	indexed, err := a.readAll(ctx, wkv)
	if err != nil {
		return err
	}
	next := fullReadInterval
	switch {
	case indexed && !a.followsProvider():
		return errWatch
	case indexed:
		a.noIndexSince = time.Time{}
	default:
		// The provider writes a device's index when it first hears from
		// it, and says so: a device just enrolled reads its keys before
		// that. It follows and reads again shortly rather than create a
		// JetStream consumer for a moment (a fleet enrolling at once
		// created hundreds, and deleting one is not a device's right). A
		// device still without an index (a provider that writes none, or
		// not yet) watches its keys.
		if a.noIndexSince.IsZero() {
			a.noIndexSince = time.Now()
		}
		if time.Since(a.noIndexSince) >= noIndexWait {
			return errWatch
		}
		next = noIndexWait
	}
	full := time.NewTimer(next)
	defer full.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.rewatch:
			a.log.Info("re-reading workloads after a reconnect")
			return errRewatch
		case <-full.C:
			return errRewatch
		case <-overflow:
			return errRewatch
		case key := <-changed:
			if err := a.readKey(ctx, wkv, key); err != nil {
				return err
			}
			if !a.followsProvider() {
				return errWatch
			}
		}
	}
}

// readAll reads every key of the device: its index, then every pod the
// index lists or the store holds. It is the initial replay of a watch: what
// is present is learnt afresh, and stored pods that are neither listed nor
// present are forgotten.
// It reports whether the device has an index.
func (a *Agent) readAll(ctx context.Context, wkv *devBucket) (indexed bool, err error) {
	idx, err := wkv.Get(ctx, bridge.IndexKey(a.cfg.Device))
	if err != nil {
		return false, err
	}
	a.mu.Lock()
	a.present = map[string]bool{}
	if idx == nil {
		// A bucket NATS lost holds no index: the one read before says
		// nothing about the workloads published since.
		a.index = nil
	}
	a.mu.Unlock()
	if idx != nil {
		a.applyIndex(idx, true)
	}
	uids := a.store.UIDs()
	a.mu.Lock()
	for uid := range a.index {
		uids[uid] = true
	}
	a.mu.Unlock()
	for uid := range uids {
		e, err := wkv.Get(ctx, bridge.PodKey(a.cfg.Device, uid))
		if err != nil {
			return false, err
		}
		if e != nil {
			a.applyEntry(e, true)
		}
	}
	a.forgetUnindexed()
	a.markAllDirty()
	a.kick()
	return idx != nil, nil
}

// readKey reads one key the provider changed. A new index may list pods
// whose notices were lost: those are read too.
func (a *Agent) readKey(ctx context.Context, wkv *devBucket, key string) error {
	if dev, ok := bridge.IsIndexKey(key); ok {
		if dev != a.cfg.Device {
			return nil
		}
	} else if dev, _, ok := bridge.SplitPodKey(key); !ok || dev != a.cfg.Device {
		return nil // not a key of this device
	}
	e, err := wkv.Get(ctx, key)
	if err != nil || e == nil {
		return err
	}
	a.applyEntry(e, false)
	if _, ok := bridge.IsIndexKey(key); !ok {
		return nil
	}
	var missing []string
	a.mu.Lock()
	for uid := range a.index {
		if _, stored := a.store.Get(uid); !stored && !a.present[uid] {
			missing = append(missing, uid)
		}
	}
	a.mu.Unlock()
	for _, uid := range missing {
		e, err := wkv.Get(ctx, bridge.PodKey(a.cfg.Device, uid))
		if err != nil {
			return err
		}
		if e != nil {
			a.applyEntry(e, false)
		}
	}
	if len(missing) > 0 {
		a.kick()
	}
	return nil
}
