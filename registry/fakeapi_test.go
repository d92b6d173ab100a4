package registry

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// secretStore serves the Secrets of a fake clientset as the API server
// does and the fake's tracker does not: every write bumps the
// resourceVersion, an update with a stale resourceVersion fails with a
// conflict, and StringData is merged into Data. The zero value is not
// usable: see newSecretStore.
type secretStore struct {
	mu      sync.Mutex
	rv      int
	secrets map[string]*corev1.Secret // by namespace/name
	updates int                       // successful updates
	gets    int

	// afterGet, if set, runs after each get, with mu held: a stand-in for
	// another writer changing the Secret right after this one read it.
	afterGet func(s *corev1.Secret)
	// beforeUpdate, if set, runs before each update, with mu held.
	beforeUpdate func(key string)
}

// newSecretStore returns a fake clientset whose Secrets are in the store.
func newSecretStore(t *testing.T) (*fake.Clientset, *secretStore) {
	t.Helper()
	cs := fake.NewClientset()
	st := &secretStore{secrets: map[string]*corev1.Secret{}}
	cs.PrependReactor("*", "secrets", st.react)
	return cs, st
}

func (st *secretStore) react(a k8stesting.Action) (bool, runtime.Object, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	gr := a.GetResource().GroupResource()
	switch a.GetVerb() {
	case "get":
		a := a.(k8stesting.GetAction)
		key := a.GetNamespace() + "/" + a.GetName()
		s := st.secrets[key]
		if s == nil {
			return true, nil, apierrors.NewNotFound(gr, a.GetName())
		}
		st.gets++
		out := s.DeepCopy()
		if st.afterGet != nil {
			st.afterGet(s)
		}
		return true, out, nil
	case "create":
		a := a.(k8stesting.CreateAction)
		s := a.GetObject().(*corev1.Secret).DeepCopy()
		key := a.GetNamespace() + "/" + s.Name
		if st.secrets[key] != nil {
			return true, nil, apierrors.NewAlreadyExists(gr, s.Name)
		}
		if s.Data == nil {
			s.Data = map[string][]byte{}
		}
		for k, v := range s.StringData {
			s.Data[k] = []byte(v)
		}
		s.StringData = nil
		s.Namespace = a.GetNamespace()
		st.bump(s)
		st.secrets[key] = s
		return true, s.DeepCopy(), nil
	case "update":
		a := a.(k8stesting.UpdateAction)
		s := a.GetObject().(*corev1.Secret).DeepCopy()
		key := a.GetNamespace() + "/" + s.Name
		if st.beforeUpdate != nil {
			st.beforeUpdate(key)
		}
		old := st.secrets[key]
		if old == nil {
			return true, nil, apierrors.NewNotFound(gr, s.Name)
		}
		if s.ResourceVersion != "" && s.ResourceVersion != old.ResourceVersion {
			return true, nil, apierrors.NewConflict(gr, s.Name, nil)
		}
		st.bump(s)
		st.secrets[key] = s
		st.updates++
		return true, s.DeepCopy(), nil
	case "delete":
		a := a.(k8stesting.DeleteAction)
		key := a.GetNamespace() + "/" + a.GetName()
		if st.secrets[key] == nil {
			return true, nil, apierrors.NewNotFound(gr, a.GetName())
		}
		delete(st.secrets, key)
		return true, nil, nil
	}
	return false, nil, nil
}

// bump gives s the next resourceVersion. The caller holds mu.
func (st *secretStore) bump(s *corev1.Secret) {
	st.rv++
	s.ResourceVersion = strconv.Itoa(st.rv)
}

// usesLeft returns the uses left of token id.
func (st *secretStore) usesLeft(t *testing.T, id string) int {
	t.Helper()
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.secrets[DefaultTokenNamespace+"/bootstrap-token-"+id]
	if s == nil {
		t.Fatalf("token %s not stored", id)
	}
	n, err := strconv.Atoi(string(s.Data[KeyUsesLeft]))
	if err != nil {
		t.Fatalf("token %s: %s: %v", id, KeyUsesLeft, err)
	}
	return n
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// countActions returns how many requests cs received for verb on resource.
func countActions(cs *fake.Clientset, verb, resource string) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == resource {
			n++
		}
	}
	return n
}
