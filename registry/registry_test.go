package registry

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/nats-io/nkeys"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

func newNKey(t *testing.T) string {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// enrollAll enrolls es concurrently and returns the errors, in order.
func enrollAll(t *testing.T, r *Registry, es []Enrollment) []error {
	t.Helper()
	errs := make([]error, len(es))
	var wg sync.WaitGroup
	for i, e := range es {
		wg.Go(func() { _, errs[i] = r.Enroll(t.Context(), e) })
	}
	wg.Wait()
	return errs
}

func devices(t *testing.T, tok Token, n int) []Enrollment {
	t.Helper()
	es := make([]Enrollment, n)
	for i := range es {
		es[i] = Enrollment{Token: tok.String(), Name: fmt.Sprintf("pi-%d", i), NKey: newNKey(t)}
	}
	return es
}

func noDevices(string) (string, bool) { return "", false }

// Concurrent enrollments with one token register exactly its uses as
// NotReady Nodes, with one create per Node and no list of all Nodes.
func TestEnrollConcurrently(t *testing.T) {
	cs, _ := newSecretStore(t)
	r := New(cs).WithDeviceLookup(noDevices)
	tok := createToken(t, r, 20)

	ok, refused := tally(t, enrollAll(t, r, devices(t, tok, 30)), ErrTokenUsedUp)
	if ok != 20 || refused[0] != 10 {
		t.Errorf("%d enrolled, %d used up; want 20 and 10", ok, refused[0])
	}
	nodes, err := cs.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 20 {
		t.Errorf("%d Nodes, want 20", len(nodes.Items))
	}
	for _, n := range nodes.Items {
		c := readyCondition(&n)
		if c == nil || c.Status != corev1.ConditionFalse || c.Reason != "DeviceNotConnected" {
			t.Errorf("node %s: Ready condition %+v, want False/DeviceNotConnected", n.Name, c)
		}
		if n.Labels[LabelManaged] != "true" || n.Annotations[AnnotationEnrollToken] != tok.ID || n.Annotations[AnnotationNKey] == "" {
			t.Errorf("node %s: labels %v annotations %v", n.Name, n.Labels, n.Annotations)
		}
		// Registered as a kubelet registers: not schedulable until Ready.
		var taints []string
		for _, tn := range n.Spec.Taints {
			taints = append(taints, tn.Key+":"+string(tn.Effect))
		}
		if want := []string{TaintKey + ":NoSchedule", corev1.TaintNodeNotReady + ":NoSchedule"}; !slices.Equal(taints, want) {
			t.Errorf("node %s: taints %v, want %v", n.Name, taints, want)
		}
	}
	if n := countActions(cs, "list", "nodes"); n != 1 { // the test's own
		t.Errorf("%d lists of Nodes, want none by Enroll", n-1)
	}
	if n := countActions(cs, "update", "nodes"); n != 0 {
		t.Errorf("%d Node (status) updates, want 0", n)
	}
}

// A device key that the lookup knows is refused without a use of the
// token.
func TestEnrollKnownNKey(t *testing.T) {
	cs, st := newSecretStore(t)
	known := newNKey(t)
	r := New(cs).WithDeviceLookup(func(k string) (string, bool) { return "pi-old", k == known })
	tok := createToken(t, r, 1)

	_, err := r.Enroll(t.Context(), Enrollment{Token: tok.String(), Name: "pi-new", NKey: known})
	if !errors.Is(err, ErrNameTaken) {
		t.Fatalf("enrolling a known key: %v, want %v", err, ErrNameTaken)
	}
	if n := st.usesLeft(t, tok.ID); n != 1 {
		t.Errorf("uses left %d, want 1", n)
	}
	if n := countActions(cs, "list", "nodes"); n != 0 {
		t.Errorf("%d lists of Nodes, want 0", n)
	}
}

// Without a lookup, Enroll lists the devices; of concurrent enrollments
// of one key, one succeeds.
func TestEnrollSameNKeyConcurrently(t *testing.T) {
	cs, _ := newSecretStore(t)
	r := New(cs)
	tok := createToken(t, r, 10)
	es := devices(t, tok, 10)
	for i := range es {
		es[i].NKey = es[0].NKey
	}
	ok, refused := tally(t, enrollAll(t, r, es), ErrNameTaken)
	if ok != 1 || refused[0] != 9 {
		t.Errorf("%d enrolled, %d refused; want 1 and 9", ok, refused[0])
	}
}

// A use taken by an enrollment whose Node the API server then refused is
// given back; one whose Node may exist is not.
func TestEnrollNodeCreateFails(t *testing.T) {
	cs, st := newSecretStore(t)
	r := New(cs).WithDeviceLookup(noDevices)
	tok := createToken(t, r, 2)
	cs.PrependReactor("create", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		n := a.(k8stesting.CreateAction).GetObject().(*corev1.Node)
		switch n.Name {
		case "taken": // created by someone else since Enroll's check
			return true, nil, apierrors.NewAlreadyExists(a.GetResource().GroupResource(), n.Name)
		case "timeout": // the Node may or may not exist
			return true, nil, apierrors.NewTimeoutError("request timed out", 1)
		}
		return false, nil, nil
	})

	_, err := r.Enroll(t.Context(), Enrollment{Token: tok.String(), Name: "taken", NKey: newNKey(t)})
	if !errors.Is(err, ErrNameTaken) {
		t.Fatalf("name taken at create: %v, want %v", err, ErrNameTaken)
	}
	waitFor(t, "the use to be given back", func() bool { return st.usesLeft(t, tok.ID) == 2 })

	if _, err := r.Enroll(t.Context(), Enrollment{Token: tok.String(), Name: "timeout", NKey: newNKey(t)}); err == nil {
		t.Fatal("create timed out, but Enroll succeeded")
	}
	if _, err := r.Enroll(t.Context(), Enrollment{Token: tok.String(), Name: "pi-1", NKey: newNKey(t)}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Enroll(t.Context(), Enrollment{Token: tok.String(), Name: "pi-2", NKey: newNKey(t)}); !errors.Is(err, ErrTokenUsedUp) {
		t.Errorf("third enrollment of a 2-use token after a timeout: %v, want %v", err, ErrTokenUsedUp)
	}
}

// A name that exists is refused before the token is used.
func TestEnrollNameTaken(t *testing.T) {
	cs, st := newSecretStore(t)
	r := New(cs).WithDeviceLookup(noDevices)
	tok := createToken(t, r, 1)
	if _, err := cs.CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "pi-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Enroll(t.Context(), Enrollment{Token: tok.String(), Name: "pi-1", NKey: newNKey(t)}); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("existing name: %v, want %v", err, ErrNameTaken)
	}
	if n := st.usesLeft(t, tok.ID); n != 1 {
		t.Errorf("uses left %d, want 1", n)
	}
	if n := countActions(cs, "update", "secrets"); n != 0 {
		t.Errorf("%d token updates, want 0", n)
	}
}

// With the device cache answering for names, an enrolled device's name is
// refused without a use taken and without an API read, and another Node's
// (a kubelet's, not in the cache) when its Node is created, the use given
// back; the enrolled-hook sees each Node created.
func TestEnrollNamesFromTheCache(t *testing.T) {
	cs, st := newSecretStore(t)
	var created []string
	r := New(cs).WithDeviceLookup(noDevices).
		WithDeviceNames(func(name string) bool { return name == "pi-known" }).
		WithEnrolledHook(func(n *corev1.Node) { created = append(created, n.Name) })
	tok := createToken(t, r, 1)
	if _, err := cs.CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Enroll(t.Context(), Enrollment{Token: tok.String(), Name: "pi-known", NKey: newNKey(t)}); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("an enrolled device's name: %v, want %v", err, ErrNameTaken)
	}
	if _, err := r.Enroll(t.Context(), Enrollment{Token: tok.String(), Name: "worker-1", NKey: newNKey(t)}); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("a kubelet's Node's name: %v, want %v", err, ErrNameTaken)
	}
	waitFor(t, "the use to be given back", func() bool { return st.usesLeft(t, tok.ID) == 1 })
	if n := countActions(cs, "get", "nodes"); n != 0 {
		t.Errorf("%d Node reads, want 0", n)
	}
	if _, err := r.Enroll(t.Context(), Enrollment{Token: tok.String(), Name: "pi-1", NKey: newNKey(t)}); err != nil {
		t.Fatal(err)
	}
	if len(created) != 1 || created[0] != "pi-1" {
		t.Errorf("enrolled hook saw %v, want [pi-1]", created)
	}
}
