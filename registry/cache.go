package registry

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Cache is an in-memory index of enrolled devices, kept current by a Node
// informer. It answers the callout's lookups without API calls.
type Cache struct {
	informer cache.SharedIndexInformer

	mu      sync.RWMutex
	byNKey  map[string]string
	byZUser map[string]string
	devices map[string]*corev1.Node
	// pending holds the devices Enrolled added before the informer saw
	// their Nodes, until when the entry stands without it.
	pending map[string]time.Time
	// removed holds the UIDs of Nodes the informer saw deleted, for
	// pendingFor: Enrolled must not bring back a device deleted (revoked)
	// between its enrollment and the call.
	removed  map[types.UID]time.Time
	now      func() time.Time
	onDelete []func(name string)
	onAdd    []func(node *corev1.Node)
}

// pendingFor is how long a device Enrolled added counts as enrolled
// without the informer confirming its Node: far longer than an informer
// lags, short enough that a Node deleted while its watch was re-listed
// (so that the informer saw neither its creation nor its deletion) does
// not stay enrolled.
const pendingFor = time.Minute

// NewCache returns a Cache over every Node labelled vk-fleet.io/managed=true.
// Call Run to start it.
func NewCache(client kubernetes.Interface) *Cache {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = LabelManaged + "=true"
	}))
	c := &Cache{
		informer: f.Core().V1().Nodes().Informer(),
		byNKey:   map[string]string{},
		byZUser:  map[string]string{},
		devices:  map[string]*corev1.Node{},
		pending:  map[string]time.Time{},
		removed:  map[types.UID]time.Time{},
		now:      time.Now,
	}
	// The cache answers who a device is: it keeps each Node's identity,
	// labels and annotations and drops the rest (status, managed fields),
	// most of a Node's size, for a fleet of thousands.
	_ = c.informer.SetTransform(slimNode)
	_, _ = c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { c.put(o) },
		UpdateFunc: func(_, o any) { c.put(o) },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if n, ok := o.(*corev1.Node); ok {
				c.remove(n.Name)
			}
		},
	})
	return c
}

// slimNode keeps what the cache reads of a Node.
func slimNode(o any) (any, error) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return o, nil
	}
	ann := make(map[string]string, len(n.Annotations))
	for k, v := range n.Annotations {
		if !strings.HasPrefix(k, "virtual-kubelet.io/last-applied-") {
			ann[k] = v
		}
	}
	return &corev1.Node{
		TypeMeta: n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Generation: n.Generation,
			CreationTimestamp: n.CreationTimestamp, DeletionTimestamp: n.DeletionTimestamp,
			Labels: n.Labels, Annotations: ann,
		},
	}, nil
}

// OnAdd registers fn to run when a device appears (or changes).
func (c *Cache) OnAdd(fn func(*corev1.Node)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onAdd = append(c.onAdd, fn)
}

// OnDelete registers fn to run when a device's Node is deleted: it is revoked.
func (c *Cache) OnDelete(fn func(name string)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onDelete = append(c.onDelete, fn)
}

// Run starts the informer and waits for its first sync; it returns then,
// and the informer runs until ctx ends.
func (c *Cache) Run(ctx context.Context) error {
	go c.informer.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.informer.HasSynced) {
		return fmt.Errorf("syncing device cache: %w", ctx.Err())
	}
	return nil
}

func (c *Cache) put(o any) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return
	}
	c.add(n, false)
}

// Enrolled adds the Node of a device this process has just enrolled, before
// the informer sees it: the device connects the moment its enrollment is
// answered, and the callout, which asks this cache, would refuse its key
// while the informer lags (under load, for seconds). The informer's view
// replaces the entry when it arrives; without it, the entry lapses after
// pendingFor.
func (c *Cache) Enrolled(n *corev1.Node) {
	slim, _ := slimNode(n)
	n = slim.(*corev1.Node)
	now := c.now()
	var lapsed []string
	c.mu.Lock()
	for name, until := range c.pending {
		if now.After(until) {
			lapsed = append(lapsed, name)
		}
	}
	for uid, at := range c.removed {
		if now.Sub(at) > pendingFor {
			delete(c.removed, uid)
		}
	}
	_, known := c.devices[n.Name]
	_, deleted := c.removed[n.UID]
	c.mu.Unlock()
	for _, name := range lapsed {
		c.removeIf(name, true)
	}
	if !known && !deleted {
		c.add(n, true)
	}
}

// live reports whether the entry of device name stands: it is the
// informer's, or Enrolled's and not lapsed. The caller holds c.mu.
func (c *Cache) live(name string) bool {
	until, pending := c.pending[name]
	return !pending || !c.now().After(until)
}

func (c *Cache) add(n *corev1.Node, pending bool) {
	c.mu.Lock()
	if pending {
		if _, known := c.devices[n.Name]; known {
			// The informer was first after all.
			c.mu.Unlock()
			return
		}
		c.pending[n.Name] = c.now().Add(pendingFor)
	} else {
		delete(c.pending, n.Name)
	}
	if old := c.devices[n.Name]; old != nil {
		delete(c.byNKey, old.Annotations[AnnotationNKey])
		delete(c.byZUser, old.Annotations[AnnotationZitadelUser])
	}
	c.devices[n.Name] = n
	if k := n.Annotations[AnnotationNKey]; k != "" {
		c.byNKey[k] = n.Name
	}
	if u := n.Annotations[AnnotationZitadelUser]; u != "" {
		c.byZUser[u] = n.Name
	}
	fns := c.onAdd
	c.mu.Unlock()
	for _, fn := range fns {
		fn(n)
	}
}

func (c *Cache) remove(name string) { c.removeIf(name, false) }

// removeIf removes device name, if lapsed only while its entry is still
// Enrolled's and past its time.
func (c *Cache) removeIf(name string, lapsed bool) {
	c.mu.Lock()
	old := c.devices[name]
	if old == nil || lapsed && c.live(name) {
		c.mu.Unlock()
		return
	}
	if lapsed {
		if _, pending := c.pending[name]; !pending {
			c.mu.Unlock()
			return
		}
	}
	delete(c.devices, name)
	delete(c.pending, name)
	if old.UID != "" {
		c.removed[old.UID] = c.now()
	}
	delete(c.byNKey, old.Annotations[AnnotationNKey])
	delete(c.byZUser, old.Annotations[AnnotationZitadelUser])
	fns := c.onDelete
	c.mu.Unlock()
	for _, fn := range fns {
		fn(name)
	}
}

// DeviceByNKey returns the device registered with the public nkey.
func (c *Cache) DeviceByNKey(pub string) (string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	name, ok := c.byNKey[pub]
	if !ok || !c.live(name) {
		return "", false
	}
	return name, true
}

// DeviceByZitadelUser returns the device of a Zitadel machine user.
func (c *Cache) DeviceByZitadelUser(id string) (string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	name, ok := c.byZUser[id]
	if !ok || !c.live(name) {
		return "", false
	}
	return name, true
}

// Has reports whether name is an enrolled device.
func (c *Cache) Has(name string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.devices[name]
	return ok && c.live(name)
}

// Identity returns the UID and creation time of device name's Node.
func (c *Cache) Identity(name string) (types.UID, time.Time, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n, ok := c.devices[name]
	if !ok || n.UID == "" || !c.live(name) {
		return "", time.Time{}, false
	}
	return n.UID, n.CreationTimestamp.Time, true
}

// Names returns every enrolled device.
func (c *Cache) Names() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.devices))
	for n := range c.devices {
		if c.live(n) {
			out = append(out, n)
		}
	}
	return out
}
