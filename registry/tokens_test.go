package registry

import (
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func createToken(t *testing.T, r *Registry, uses int) Token {
	t.Helper()
	tok, err := r.CreateToken(t.Context(), TokenOptions{TTL: time.Hour, Uses: uses})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// consumeAll takes a use of each of raws concurrently and returns the
// errors, in order.
func consumeAll(t *testing.T, r *Registry, raws []string) []error {
	t.Helper()
	errs := make([]error, len(raws))
	var wg sync.WaitGroup
	for i, raw := range raws {
		wg.Go(func() { _, errs[i] = r.consumeToken(t.Context(), raw) })
	}
	wg.Wait()
	return errs
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// tally counts nil errors and errors matching each of want; any other
// error fails the test.
func tally(t *testing.T, errs []error, want ...error) (ok int, counts []int) {
	t.Helper()
	counts = make([]int, len(want))
next:
	for _, err := range errs {
		if err == nil {
			ok++
			continue
		}
		for i, w := range want {
			if errors.Is(err, w) {
				counts[i]++
				continue next
			}
		}
		t.Errorf("unexpected error: %v", err)
	}
	return ok, counts
}

// queued returns how many requests wait for the writer of token id.
func queued(r *Registry, id string) int {
	w := &r.shared.tokens
	w.mu.Lock()
	defer w.mu.Unlock()
	q := w.queues[r.tokenNamespace+"/bootstrap-token-"+id]
	if q == nil {
		return 0
	}
	return len(q.requests)
}

// Of M concurrent enrollments with an N-use token, exactly N get a use and
// the rest are told the token is used up.
func TestConsumeTokenGrantsExactlyItsUses(t *testing.T) {
	cs, st := newSecretStore(t)
	r := New(cs)
	tok := createToken(t, r, 10)

	ok, refused := tally(t, consumeAll(t, r, repeat(tok.String(), 50)), ErrTokenUsedUp)
	if ok != 10 || refused[0] != 40 {
		t.Errorf("%d granted, %d used up; want 10 and 40", ok, refused[0])
	}
	if n := st.usesLeft(t, tok.ID); n != 0 {
		t.Errorf("uses left %d, want 0", n)
	}
	if st.updates > 10 {
		t.Errorf("%d updates for 10 uses: every update must grant at least one", st.updates)
	}
}

// Requests that queue while the writer reads the Secret are granted with
// one update.
func TestConsumeTokenBatchesQueuedRequests(t *testing.T) {
	cs, st := newSecretStore(t)
	r := New(cs)
	tok := createToken(t, r, 30)
	const m = 40

	reading, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	st.afterGet = func(*corev1.Secret) { once.Do(func() { close(reading); <-release }) }
	// The first request's writer reads the Secret and waits there.
	first := make(chan error, 1)
	go func() { _, err := r.consumeToken(t.Context(), tok.String()); first <- err }()
	select {
	case <-reading:
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for the writer to read the token")
	}
	var errs []error
	done := make(chan struct{})
	go func() { errs = consumeAll(t, r, repeat(tok.String(), m-1)); close(done) }()
	waitFor(t, "the other requests to queue", func() bool { return queued(r, tok.ID) == m-1 })
	close(release)
	<-done
	errs = append(errs, <-first)

	ok, refused := tally(t, errs, ErrTokenUsedUp)
	if ok != 30 || refused[0] != 10 {
		t.Errorf("%d granted, %d used up; want 30 and 10", ok, refused[0])
	}
	// One update for the first request, one for the 39 queued behind it.
	if st.updates != 2 {
		t.Errorf("%d updates, want 2", st.updates)
	}
	if n := st.usesLeft(t, tok.ID); n != 0 {
		t.Errorf("uses left %d, want 0", n)
	}
}

func TestConsumeTokenExpired(t *testing.T) {
	cs, st := newSecretStore(t)
	r := New(cs)
	tok := createToken(t, r, 10)
	r.now = func() time.Time { return time.Now().Add(2 * time.Hour) }

	ok, refused := tally(t, consumeAll(t, r, repeat(tok.String(), 5)), ErrTokenExpired)
	if ok != 0 || refused[0] != 5 {
		t.Errorf("%d granted, %d expired; want 0 and 5", ok, refused[0])
	}
	if n := st.usesLeft(t, tok.ID); n != 10 {
		t.Errorf("uses left %d, want 10", n)
	}
}

// A wrong secret is refused without taking a use, also in a batch with
// right ones.
func TestConsumeTokenWrongSecret(t *testing.T) {
	cs, st := newSecretStore(t)
	r := New(cs)
	tok := createToken(t, r, 10)
	wrong := tok
	wrong.Secret = "0123456789abcdef"
	if wrong.Secret == tok.Secret {
		wrong.Secret = "fedcba9876543210"
	}

	raws := append(repeat(tok.String(), 5), repeat(wrong.String(), 5)...)
	raws = append(raws, "not-a-token")
	ok, refused := tally(t, consumeAll(t, r, raws), ErrTokenInvalid)
	if ok != 5 || refused[0] != 6 {
		t.Errorf("%d granted, %d invalid; want 5 and 6", ok, refused[0])
	}
	if n := st.usesLeft(t, tok.ID); n != 5 {
		t.Errorf("uses left %d, want 5", n)
	}
}

// A deleted (revoked) token is refused, also when it is deleted between
// the writer's read and its update.
func TestConsumeTokenDeleted(t *testing.T) {
	cs, st := newSecretStore(t)
	r := New(cs)
	tok := createToken(t, r, 10)
	st.beforeUpdate = func(key string) { delete(st.secrets, key) }

	ok, refused := tally(t, consumeAll(t, r, repeat(tok.String(), 5)), ErrTokenInvalid)
	if ok != 0 || refused[0] != 5 {
		t.Errorf("deleted while enrolling: %d granted, %d invalid; want 0 and 5", ok, refused[0])
	}
	ok, refused = tally(t, consumeAll(t, r, repeat(tok.String(), 5)), ErrTokenInvalid)
	if ok != 0 || refused[0] != 5 {
		t.Errorf("deleted: %d granted, %d invalid; want 0 and 5", ok, refused[0])
	}
}

// Another writer (another replica) takes uses between this writer's read
// and update: the update conflicts, and the uses are never exceeded.
func TestConsumeTokenConflictingWriter(t *testing.T) {
	cs, st := newSecretStore(t)
	r := New(cs)
	tok := createToken(t, r, 100)
	other := 0
	st.afterGet = func(s *corev1.Secret) {
		left, _ := strconv.Atoi(string(s.Data[KeyUsesLeft]))
		if other < 30 && left > 0 {
			other++
			s.Data[KeyUsesLeft] = []byte(strconv.Itoa(left - 1))
			st.bump(s)
		}
	}

	ok, refused := tally(t, consumeAll(t, r, repeat(tok.String(), 100)), ErrTokenUsedUp)
	if other == 0 {
		t.Fatal("the other writer took no use: the test tests nothing")
	}
	if ok+other != 100 || refused[0] != other {
		t.Errorf("granted %d here and %d by the other writer, %d used up; want %d, %d and %d",
			ok, other, refused[0], 100-other, other, other)
	}
	if n := st.usesLeft(t, tok.ID); n != 0 {
		t.Errorf("uses left %d, want 0", n)
	}
}

// Two Registries (two replicas) enrolling with one token never exceed it.
func TestConsumeTokenTwoReplicas(t *testing.T) {
	cs, st := newSecretStore(t)
	a, b := New(cs), New(cs)
	tok := createToken(t, a, 100)

	var errsA, errsB []error
	var wg sync.WaitGroup
	wg.Go(func() { errsA = consumeAll(t, a, repeat(tok.String(), 70)) })
	wg.Go(func() { errsB = consumeAll(t, b, repeat(tok.String(), 70)) })
	wg.Wait()
	ok, refused := tally(t, append(errsA, errsB...), ErrTokenUsedUp)
	if ok != 100 || refused[0] != 40 {
		t.Errorf("%d granted, %d used up; want 100 and 40", ok, refused[0])
	}
	if n := st.usesLeft(t, tok.ID); n != 0 {
		t.Errorf("uses left %d, want 0", n)
	}
}

// A use given back is granted again.
func TestGiveBackUse(t *testing.T) {
	cs, st := newSecretStore(t)
	r := New(cs)
	tok := createToken(t, r, 1)
	if _, err := r.consumeToken(t.Context(), tok.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.consumeToken(t.Context(), tok.String()); !errors.Is(err, ErrTokenUsedUp) {
		t.Fatalf("second use: %v, want %v", err, ErrTokenUsedUp)
	}
	r.giveBackUse(t.Context(), tok.ID)
	waitFor(t, "the use to be given back", func() bool { return st.usesLeft(t, tok.ID) == 1 })
	if _, err := r.consumeToken(t.Context(), tok.String()); err != nil {
		t.Fatalf("use given back: %v", err)
	}
}

// The writer's requests go to the token namespace of the Registry copy
// that made them.
func TestConsumeTokenNamespaces(t *testing.T) {
	cs, _ := newSecretStore(t)
	base := New(cs)
	a, b := base.WithTokenNamespace("a"), base.WithTokenNamespace("b")
	ta, tb := createToken(t, a, 1), createToken(t, b, 1)
	if _, err := a.consumeToken(t.Context(), tb.String()); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("token of namespace b in a: %v, want %v", err, ErrTokenInvalid)
	}
	if _, err := a.consumeToken(t.Context(), ta.String()); err != nil {
		t.Error(err)
	}
	if _, err := b.consumeToken(t.Context(), tb.String()); err != nil {
		t.Error(err)
	}
}
