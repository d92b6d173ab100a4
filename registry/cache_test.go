package registry

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

func deviceNode(name, uid, nkey string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(uid),
		Labels:      map[string]string{LabelManaged: "true"},
		Annotations: map[string]string{AnnotationNKey: nkey}}}
}

// TestCacheKnowsAnEnrolledDeviceAtOnce: a device connects the moment its
// enrollment is answered; the callout must know its key before the
// informer has seen the Node, and forget it if the informer never does.
func TestCacheKnowsAnEnrolledDeviceAtOnce(t *testing.T) {
	cs := fake.NewClientset()
	c := NewCache(cs)
	now := time.Now()
	c.now = func() time.Time { return now }
	if err := c.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	var deleted []string
	c.OnDelete(func(name string) { deleted = append(deleted, name) })

	// Enrolled before the informer sees it: known at once.
	c.Enrolled(deviceNode("pi-1", "uid-1", "UKEY1"))
	if name, ok := c.DeviceByNKey("UKEY1"); !ok || name != "pi-1" {
		t.Fatalf("DeviceByNKey after Enrolled = %q, %v", name, ok)
	}
	if _, _, ok := c.Identity("pi-1"); !ok {
		t.Error("Identity of an enrolled device unknown")
	}

	// The informer confirms it: it stays past the pending time.
	if _, err := cs.CoreV1().Nodes().Create(t.Context(), deviceNode("pi-1", "uid-1", "UKEY1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the informer to confirm pi-1", func() bool {
		c.mu.RLock()
		defer c.mu.RUnlock()
		_, pending := c.pending["pi-1"]
		return !pending
	})

	// Never confirmed: it lapses.
	c.Enrolled(deviceNode("pi-2", "uid-2", "UKEY2"))
	now = now.Add(pendingFor + time.Second)
	if _, ok := c.DeviceByNKey("UKEY2"); ok {
		t.Error("a device the informer never saw is still known after pendingFor")
	}
	if !c.Has("pi-1") {
		t.Error("a confirmed device lapsed")
	}
	c.Enrolled(deviceNode("pi-3", "uid-3", "UKEY3")) // sweeps lapsed entries
	if len(deleted) != 1 || deleted[0] != "pi-2" {
		t.Errorf("OnDelete calls = %v, want [pi-2]", deleted)
	}

	// Deleted (revoked) before Enrolled is called: not brought back.
	if err := cs.CoreV1().Nodes().Delete(t.Context(), "pi-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the informer to see pi-1 deleted", func() bool { return !c.Has("pi-1") })
	c.Enrolled(deviceNode("pi-1", "uid-1", "UKEY1"))
	if _, ok := c.DeviceByNKey("UKEY1"); ok {
		t.Error("Enrolled brought back a deleted device")
	}
	// The same name enrolled again (a new Node, a new UID) is known.
	c.Enrolled(deviceNode("pi-1", "uid-1b", "UKEY1B"))
	if name, ok := c.DeviceByNKey("UKEY1B"); !ok || name != "pi-1" {
		t.Errorf("re-enrolled device = %q, %v", name, ok)
	}
}
