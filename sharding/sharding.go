// Package sharding splits a fleet's devices between vk-fleet replicas so
// that every device is served, and none by two replicas at once.
//
// Devices hash into a fixed number of slots. Replicas find each other
// through Kubernetes Leases (one per replica, renewed every RenewInterval);
// each slot's preferred owner is chosen by rendezvous hashing over the live
// replicas, so a replica joining or leaving moves only its share. Ownership
// itself is an exclusive claim in a NATS KV bucket whose entries expire
// after ClaimTTL: a replica serves a slot only while it holds and renews the
// claim, gives a slot up by first stopping its devices and then deleting the
// claim, and a dead replica's claims expire. A claim can only be created when
// none exists, so two replicas never hold one slot.
//
// Usage:
//
//	s, _ := sharding.New(sharding.Config{ID: podName, Client: cs, JetStream: js})
//	go s.Run(ctx)
//	s.OnChange(func() { ... })
//	if s.Owns("pi-1") { ... }
package sharding

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ClaimsBucket holds the slot claims: key "slot-<n>" → replica ID.
const ClaimsBucket = "vkf-owners"

// LabelReplica marks replica membership Leases.
const LabelReplica = "vk-fleet.io/replica"

// Config configures a Sharder.
type Config struct {
	// ID names this replica; unique among replicas (e.g. the pod name).
	ID        string
	Client    kubernetes.Interface
	JetStream jetstream.JetStream
	// Namespace holds the membership Leases.
	Namespace string
	// Slots is the number of slots; every replica must use the same. Default 64.
	Slots int
	// RenewInterval is how often leases and claims are renewed. Default 2s.
	RenewInterval time.Duration
	// MemberTTL is how long a replica counts as alive after its last renewal. Default 10s.
	MemberTTL time.Duration
	// ClaimTTL is how long a claim outlives its last renewal. Default 15s.
	ClaimTTL time.Duration
	Logger   *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Slots <= 0 {
		c.Slots = 64
	}
	if c.RenewInterval <= 0 {
		c.RenewInterval = 2 * time.Second
	}
	if c.MemberTTL <= 0 {
		c.MemberTTL = 10 * time.Second
	}
	if c.ClaimTTL <= 0 {
		c.ClaimTTL = 15 * time.Second
	}
	if c.Namespace == "" {
		c.Namespace = "kube-system"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Sharder tracks which slots this replica owns. Create it with New.
type Sharder struct {
	cfg    Config
	log    *slog.Logger
	claims jetstream.KeyValue

	// rounds counts completed claim rounds.
	rounds atomic.Int64

	mu       sync.RWMutex
	owned    map[int]claim
	members  []string
	onChange []func()
}

type claim struct {
	revision uint64
	renewed  time.Time
}

// New returns a Sharder; Run starts it.
func New(cfg Config) (*Sharder, error) {
	cfg.setDefaults()
	if cfg.ID == "" || cfg.Client == nil || cfg.JetStream == nil {
		return nil, errors.New("sharding needs a replica ID, a kubernetes client and jetstream")
	}
	return &Sharder{cfg: cfg, log: cfg.Logger.With("component", "sharding", "replica", cfg.ID), owned: map[int]claim{}}, nil
}

// SlotOf returns the slot of device among slots.
func SlotOf(device string, slots int) int {
	return int(hash64(device) % uint64(slots))
}

// hash64 is a well-mixed 64-bit hash, the same in every process. (FNV alone
// mixes too little: it ranks "r0…" and "r1…" alike for every slot.)
func hash64(parts ...string) uint64 {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return binary.BigEndian.Uint64(h.Sum(nil))
}

// Owns reports whether this replica serves device now.
func (s *Sharder) Owns(device string) bool {
	slot := SlotOf(device, s.cfg.Slots)
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.owned[slot]
	// A claim not renewed for half its TTL is not trusted any more: another
	// replica may take it over soon.
	return ok && time.Since(c.renewed) < s.cfg.ClaimTTL/2
}

// OwnedSlots returns the slots this replica holds.
func (s *Sharder) OwnedSlots() []int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]int, 0, len(s.owned))
	for slot := range s.owned {
		out = append(out, slot)
	}
	sort.Ints(out)
	return out
}

// OnChange registers fn to run after the owned slots changed. When a slot
// is given up, fn runs before the claim is released: fn must stop serving
// the devices that Owns no longer reports.
func (s *Sharder) OnChange(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onChange = append(s.onChange, fn)
}

func (s *Sharder) changed() {
	s.mu.RLock()
	fns := s.onChange
	s.mu.RUnlock()
	for _, fn := range fns {
		fn()
	}
}

// Run claims and renews slots until ctx ends, then releases them. Three
// loops run side by side so that none can hold up another: claims are
// renewed in NATS every RenewInterval whatever Kubernetes does; membership
// Leases are read and written in Kubernetes, each call bounded by a
// timeout; and a watchdog gives up (with OnChange, before anyone else may
// take them) the slots whose claims could not be renewed for ClaimTTL/2.
func (s *Sharder) Run(ctx context.Context) error {
	var err error
	s.claims, err = s.cfg.JetStream.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: ClaimsBucket, Description: "vk-fleet replica slot claims", History: 1, TTL: s.cfg.ClaimTTL,
		Storage: jetstream.MemoryStorage,
	})
	if err != nil {
		return fmt.Errorf("creating bucket %s: %w", ClaimsBucket, err)
	}
	// Know the members before the first claims.
	s.refreshMembers(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { s.every(ctx, s.cfg.RenewInterval, s.refreshMembers) })
	wg.Go(func() { s.every(ctx, s.cfg.RenewInterval/4, func(context.Context) { s.expireStale() }) })
	s.every(ctx, s.cfg.RenewInterval, s.round)
	wg.Wait()
	s.leave()
	return nil
}

// every runs f at once and then every d until ctx ends.
func (s *Sharder) every(ctx context.Context, d time.Duration, f func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		f(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refreshMembers renews this replica's Lease and reads the live members,
// each Kubernetes call bounded by RenewInterval.
func (s *Sharder) refreshMembers(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.RenewInterval)
	defer cancel()
	if err := s.renewMembership(cctx); err != nil && ctx.Err() == nil {
		s.log.Warn("renewing membership", "err", err)
	}
	cctx2, cancel2 := context.WithTimeout(ctx, s.cfg.RenewInterval)
	defer cancel2()
	members, err := s.liveMembers(cctx2)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("listing replicas", "err", err)
		}
		return
	}
	s.mu.Lock()
	s.members = members
	s.mu.Unlock()
}

// expireStale gives up the slots whose claims were not renewed for
// ClaimTTL/2: from then on Owns says no, and OnChange lets the provider
// stop serving their devices, well before the claims expire in NATS and
// another replica may take them.
func (s *Sharder) expireStale() {
	s.mu.Lock()
	var lost []int
	for slot, c := range s.owned {
		if time.Since(c.renewed) >= s.cfg.ClaimTTL/2 {
			lost = append(lost, slot)
			delete(s.owned, slot)
		}
	}
	s.mu.Unlock()
	if len(lost) > 0 {
		s.log.Warn("slot claims not renewed in time; serving their devices no more", "slots", len(lost))
		s.changed()
	}
}

func (s *Sharder) leaseName() string { return "vk-fleet-replica-" + s.cfg.ID }

// round renews this replica's claims, gives up slots that belong elsewhere
// (by the members last read from Kubernetes), and claims the free slots
// that belong here.
func (s *Sharder) round(ctx context.Context) {
	// Every NATS call of a round is bounded, so that a round never outlasts
	// the claims it renews.
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ClaimTTL/4)
	defer cancel()
	s.mu.RLock()
	members := s.members
	s.mu.RUnlock()
	if len(members) == 0 {
		members = []string{s.cfg.ID}
	}
	changed := false

	// Give up what belongs to others: stop serving first, then release.
	var release []int
	s.mu.RLock()
	for slot := range s.owned {
		if preferred(slot, members) != s.cfg.ID {
			release = append(release, slot)
		}
	}
	s.mu.RUnlock()
	if len(release) > 0 {
		s.mu.Lock()
		revs := map[int]uint64{}
		for _, slot := range release {
			revs[slot] = s.owned[slot].revision
			delete(s.owned, slot)
		}
		s.mu.Unlock()
		s.changed()
		for slot, rev := range revs {
			if err := s.claims.Delete(ctx, slotKey(slot), jetstream.LastRevision(rev)); err != nil {
				s.log.Debug("releasing slot", "slot", slot, "err", err)
			}
		}
		s.log.Info("slots handed over", "count", len(release), "members", len(members))
	}

	// Renew what we hold; a failed renewal means we may have lost it.
	s.mu.RLock()
	held := make(map[int]uint64, len(s.owned))
	for slot, c := range s.owned {
		held[slot] = c.revision
	}
	s.mu.RUnlock()
	for slot, rev := range held {
		nrev, err := s.claims.Update(ctx, slotKey(slot), []byte(s.cfg.ID), rev)
		s.mu.Lock()
		if err != nil {
			delete(s.owned, slot)
			changed = true
			s.log.Warn("lost slot claim", "slot", slot, "err", err)
		} else {
			s.owned[slot] = claim{revision: nrev, renewed: time.Now()}
		}
		s.mu.Unlock()
	}

	// Claim what is ours and free.
	gained := 0
	for slot := range s.cfg.Slots {
		if preferred(slot, members) != s.cfg.ID {
			continue
		}
		s.mu.RLock()
		_, ok := s.owned[slot]
		s.mu.RUnlock()
		if ok {
			continue
		}
		rev, err := s.claims.Create(ctx, slotKey(slot), []byte(s.cfg.ID))
		if err != nil {
			continue // still held by its previous owner; it expires or is released
		}
		s.mu.Lock()
		s.owned[slot] = claim{revision: rev, renewed: time.Now()}
		s.mu.Unlock()
		gained++
	}
	if gained > 0 {
		s.log.Info("slots claimed", "count", gained, "members", len(members))
		changed = true
	}
	s.rounds.Add(1)
	if changed {
		s.changed()
	}
}

// Claimed reports whether a round of claims has completed: the replica
// holds the slots it should (or knows others hold them).
func (s *Sharder) Claimed() bool { return s.rounds.Load() > 0 }

func (s *Sharder) renewMembership(ctx context.Context) error {
	leases := s.cfg.Client.CoordinationV1().Leases(s.cfg.Namespace)
	now := metav1.NewMicroTime(time.Now())
	dur := int32(s.cfg.MemberTTL / time.Second)
	l, err := leases.Get(ctx, s.leaseName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: s.leaseName(), Namespace: s.cfg.Namespace, Labels: map[string]string{LabelReplica: "true"}},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &s.cfg.ID, LeaseDurationSeconds: &dur, RenewTime: &now, AcquireTime: &now},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime, l.Spec.LeaseDurationSeconds, l.Spec.HolderIdentity = &now, &dur, &s.cfg.ID
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

func (s *Sharder) liveMembers(ctx context.Context) ([]string, error) {
	l, err := s.cfg.Client.CoordinationV1().Leases(s.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelReplica + "=true"})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, lease := range l.Items {
		sp := lease.Spec
		if sp.HolderIdentity == nil || sp.RenewTime == nil || sp.LeaseDurationSeconds == nil {
			continue
		}
		if time.Since(sp.RenewTime.Time) < time.Duration(*sp.LeaseDurationSeconds)*time.Second {
			out = append(out, *sp.HolderIdentity)
		}
	}
	found := false
	for _, m := range out {
		found = found || m == s.cfg.ID
	}
	if !found {
		out = append(out, s.cfg.ID)
	}
	sort.Strings(out)
	return out, nil
}

// leave gives up every slot and the membership lease.
func (s *Sharder) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.mu.Lock()
	owned := s.owned
	s.owned = map[int]claim{}
	s.mu.Unlock()
	s.changed()
	for slot, c := range owned {
		_ = s.claims.Delete(ctx, slotKey(slot), jetstream.LastRevision(c.revision))
	}
	_ = s.cfg.Client.CoordinationV1().Leases(s.cfg.Namespace).Delete(ctx, s.leaseName(), metav1.DeleteOptions{})
	s.log.Info("left the replica set", "slots", len(owned))
}

// preferred picks slot's owner among members by rendezvous hashing.
func preferred(slot int, members []string) string {
	best, bestScore := "", uint64(0)
	for _, m := range members {
		if sc := hash64(m, strconv.Itoa(slot)); best == "" || sc > bestScore {
			best, bestScore = m, sc
		}
	}
	return best
}

func slotKey(slot int) string { return "slot-" + strconv.Itoa(slot) }
