package registry

import (
	"context"
	"crypto/subtle"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// Keys vk-fleet adds to bootstrap-token Secrets.
const (
	// UsageEnrollment marks a bootstrap token as a vk-fleet enrollment token.
	UsageEnrollment = "usage-vk-fleet-enrollment"
	// KeyUsesLeft counts the enrollments the token still allows.
	KeyUsesLeft = "vk-fleet-uses-left"
	// KeyLabels holds the Node labels given at creation, as k=v,k=v.
	KeyLabels = "vk-fleet-labels"
)

// Token is an enrollment token.
type Token struct {
	ID       string
	Secret   string
	Expires  time.Time
	UsesLeft int
	Labels   map[string]string
}

// String returns the token as a device presents it: "<id>.<secret>".
func (t Token) String() string { return t.ID + "." + t.Secret }

// TokenOptions configures a new token.
type TokenOptions struct {
	TTL         time.Duration // required
	Uses        int           // default 1
	Labels      map[string]string
	Description string
}

// CreateToken creates an enrollment token.
func (r *Registry) CreateToken(ctx context.Context, o TokenOptions) (Token, error) {
	if o.TTL <= 0 {
		return Token{}, fmt.Errorf("%w: token TTL must be positive", ErrInvalidInput)
	}
	if o.Uses <= 0 {
		o.Uses = 1
	}
	if err := ValidateLabels(o.Labels); err != nil {
		return Token{}, err
	}
	raw, err := bootstraputil.GenerateBootstrapToken()
	if err != nil {
		return Token{}, fmt.Errorf("generating token: %w", err)
	}
	id, secret, _ := strings.Cut(raw, ".")
	t := Token{ID: id, Secret: secret, Expires: r.now().Add(o.TTL).UTC().Truncate(time.Second), UsesLeft: o.Uses, Labels: o.Labels}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      bootstraputil.BootstrapTokenSecretName(id),
			Namespace: r.tokenNamespace,
			Labels:    map[string]string{LabelManaged: "true"},
		},
		Type: corev1.SecretTypeBootstrapToken,
		StringData: map[string]string{
			bootstrapapi.BootstrapTokenIDKey:          id,
			bootstrapapi.BootstrapTokenSecretKey:      secret,
			bootstrapapi.BootstrapTokenExpirationKey:  t.Expires.Format(time.RFC3339),
			bootstrapapi.BootstrapTokenDescriptionKey: o.Description,
			UsageEnrollment:                           "true",
			KeyUsesLeft:                               strconv.Itoa(o.Uses),
			KeyLabels:                                 FormatLabels(o.Labels),
		},
	}
	if _, err := r.client.CoreV1().Secrets(r.tokenNamespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return Token{}, fmt.Errorf("storing token: %w", err)
	}
	return t, nil
}

// LookupToken finds the token whose "<id>.<secret>" is raw and checks its
// secret. It does not check expiry or uses: see Token.Usable.
func (r *Registry) LookupToken(ctx context.Context, raw string) (*Token, *corev1.Secret, error) {
	if !bootstraputil.IsValidBootstrapToken(raw) {
		return nil, nil, ErrTokenInvalid
	}
	id, secret, _ := strings.Cut(raw, ".")
	s, err := r.client.CoreV1().Secrets(r.tokenNamespace).Get(ctx, bootstraputil.BootstrapTokenSecretName(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, ErrTokenInvalid
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading token: %w", err)
	}
	t, err := parseToken(id, s)
	if err != nil {
		return nil, nil, err
	}
	if !secretMatches(s, secret) {
		return nil, nil, ErrTokenInvalid
	}
	return t, s, nil
}

// parseToken reads the enrollment token id from its Secret s, without
// checking a secret.
func parseToken(id string, s *corev1.Secret) (*Token, error) {
	if s.Type != corev1.SecretTypeBootstrapToken || string(s.Data[UsageEnrollment]) != "true" {
		return nil, ErrTokenInvalid
	}
	t := &Token{ID: id}
	if exp := string(s.Data[bootstrapapi.BootstrapTokenExpirationKey]); exp != "" {
		var err error
		if t.Expires, err = time.Parse(time.RFC3339, exp); err != nil {
			return nil, ErrTokenInvalid
		}
	}
	t.UsesLeft, _ = strconv.Atoi(string(s.Data[KeyUsesLeft]))
	t.Labels, _ = ParseLabels(string(s.Data[KeyLabels]))
	return t, nil
}

// secretMatches reports whether secret is the secret of token Secret s, in
// constant time.
func secretMatches(s *corev1.Secret, secret string) bool {
	return subtle.ConstantTimeCompare(s.Data[bootstrapapi.BootstrapTokenSecretKey], []byte(secret)) == 1
}

// Usable reports why t cannot enroll a device now, or nil.
func (t *Token) Usable(now time.Time) error {
	if err := t.checkExpiry(now); err != nil {
		return err
	}
	if t.UsesLeft <= 0 {
		return ErrTokenUsedUp
	}
	return nil
}

// checkExpiry returns an error wrapping ErrTokenExpired if t has expired
// at now.
func (t *Token) checkExpiry(now time.Time) error {
	if !t.Expires.IsZero() && !now.Before(t.Expires) {
		return fmt.Errorf("%w (at %s)", ErrTokenExpired, t.Expires.Format(time.RFC3339))
	}
	return nil
}

// Taking uses of a token.
//
// Every enrollment takes one use of its token. Devices enrolling together
// with one token would collide on the token Secret, each retrying a read
// and an update. Instead each token has a single writer in this process:
// consumeToken queues the request, and the writer takes every queued
// request at once, reads the Secret (or reuses the copy its last update
// returned), grants min(queued, uses left) uses with one update that carries
// the Secret's resourceVersion, and refuses the rest. On a conflict (another
// replica, or an administrator, changed the Secret) it reads the Secret again
// and retries: the API server's precondition, not this process, is what
// keeps the uses from being exceeded. A refusal is only ever decided on a
// fresh read, never on the copy of an earlier update.
//
// A use taken by an enrollment that then definitely did not create its Node
// (see giveBackUse) is given back in the writer's next update.

const (
	// roundTimeout bounds the API requests of one round of a token's writer.
	roundTimeout = 10 * time.Second
	// maxConflicts is how many conflicting updates in a row a round
	// tolerates before it fails its requests.
	maxConflicts = 50
)

// tokenWriters holds the queue of every token that has a writer running.
// The zero value is ready to use.
type tokenWriters struct {
	mu     sync.Mutex
	queues map[string]*useQueue // by namespace/Secret name; present while its writer runs
}

// useQueue is what waits for one token's writer.
type useQueue struct {
	requests []*useRequest
	giveBack int // uses to give back
}

// useRequest is one enrollment waiting for a use of its token.
type useRequest struct {
	secret string
	done   chan useResult // buffered: the writer never blocks on it
	// abandoned is set, under tokenWriters.mu, when the enrollment stopped
	// waiting: a use granted to it is given back.
	abandoned bool
}

type useResult struct {
	tok *Token
	err error
}

// consumeToken takes one use of the token raw, failing if it is invalid,
// expired or used up. Concurrent calls for one token are batched.
func (r *Registry) consumeToken(ctx context.Context, raw string) (*Token, error) {
	if !bootstraputil.IsValidBootstrapToken(raw) {
		return nil, ErrTokenInvalid
	}
	id, secret, _ := strings.Cut(raw, ".")
	req := &useRequest{secret: secret, done: make(chan useResult, 1)}
	w := &r.shared.tokens
	w.mu.Lock()
	q := r.queue(ctx, id)
	q.requests = append(q.requests, req)
	w.mu.Unlock()

	select {
	case res := <-req.done:
		if res.err == nil && ctx.Err() != nil {
			// Too late to create a Node with it.
			r.giveBackUse(ctx, id)
			return nil, ctx.Err()
		}
		return res.tok, res.err
	case <-ctx.Done():
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case res := <-req.done:
		if res.err == nil {
			r.queue(ctx, id).giveBack++
		}
	default:
		req.abandoned = true
	}
	return nil, ctx.Err()
}

// giveBackUse returns a use of token id that an enrollment took but did not
// use. It does not wait for the update.
func (r *Registry) giveBackUse(ctx context.Context, id string) {
	w := &r.shared.tokens
	w.mu.Lock()
	defer w.mu.Unlock()
	r.queue(ctx, id).giveBack++
}

// queue returns the queue of token id, starting its writer if none runs.
// The caller holds r.shared.tokens.mu.
func (r *Registry) queue(ctx context.Context, id string) *useQueue {
	w := &r.shared.tokens
	name := bootstraputil.BootstrapTokenSecretName(id)
	key := r.tokenNamespace + "/" + name
	if q := w.queues[key]; q != nil {
		return q
	}
	if w.queues == nil {
		w.queues = map[string]*useQueue{}
	}
	q := &useQueue{}
	w.queues[key] = q
	go r.writeUses(context.WithoutCancel(ctx), key, id, q)
	return q
}

// writeUses is the writer of token id: it serves q until q is empty.
func (r *Registry) writeUses(ctx context.Context, key, id string, q *useQueue) {
	w := &r.shared.tokens
	var cur *corev1.Secret // the Secret as of the last update; nil: read it
	conflicts := 0
	for {
		w.mu.Lock()
		batch := q.requests[:0:0]
		for _, req := range q.requests {
			if !req.abandoned {
				batch = append(batch, req)
			}
		}
		giveBack := q.giveBack
		q.requests, q.giveBack = nil, 0
		if len(batch) == 0 && giveBack == 0 {
			delete(w.queues, key)
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()

		rctx, cancel := context.WithTimeout(ctx, roundTimeout)
		next, results, retry := r.grantUses(rctx, id, cur, batch, giveBack)
		cancel()
		cur = next
		if retry {
			conflicts++
			if conflicts <= maxConflicts {
				w.mu.Lock()
				q.requests = append(batch, q.requests...)
				q.giveBack += giveBack
				w.mu.Unlock()
				backOff(ctx, conflicts)
				continue
			}
			// Someone else keeps changing the Secret. Refuse this batch
			// and drop the uses to give back (lost, as on any error).
			err := fmt.Errorf("consuming token: %d conflicting updates in a row", conflicts)
			results = make([]useResult, len(batch))
			for i := range results {
				results[i].err = err
			}
		}
		conflicts = 0

		w.mu.Lock()
		for i, req := range batch {
			if req.abandoned && results[i].err == nil {
				q.giveBack++
				continue
			}
			req.done <- results[i]
		}
		w.mu.Unlock()
	}
}

// backOff waits a little, randomly, after the attempt-th conflict in a
// row, so that writers of several replicas do not keep colliding.
func backOff(ctx context.Context, attempt int) {
	if attempt < 2 {
		return // the read that follows is delay enough
	}
	d := time.Duration(rand.IntN(5*min(attempt, 20))+1) * time.Millisecond
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// grantUses runs one round of a token's writer: it gives back giveBack
// uses and grants one use to as many requests of batch as the token allows,
// in order. cur is the Secret as the writer last wrote it, or nil to read
// it. It returns the Secret as now written (or nil if unknown), one result
// per request, or retry if the round must run again on a fresh read.
func (r *Registry) grantUses(ctx context.Context, id string, cur *corev1.Secret, batch []*useRequest, giveBack int) (_ *corev1.Secret, _ []useResult, retry bool) {
	results := make([]useResult, len(batch))
	fail := func(err error) (*corev1.Secret, []useResult, bool) {
		for i := range results {
			results[i].err = err
		}
		return nil, results, false
	}
	fresh := cur == nil
	if fresh {
		s, err := r.client.CoreV1().Secrets(r.tokenNamespace).Get(ctx, bootstraputil.BootstrapTokenSecretName(id), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return fail(ErrTokenInvalid)
		}
		if err != nil {
			return fail(fmt.Errorf("reading token: %w", err))
		}
		cur = s
	}
	t, err := parseToken(id, cur)
	if err != nil {
		if !fresh {
			return nil, nil, true
		}
		return fail(err)
	}
	expired := t.checkExpiry(r.now())
	left := t.UsesLeft + giveBack
	granted := 0
	refused := false
	for i, req := range batch {
		switch {
		case !secretMatches(cur, req.secret):
			results[i].err = ErrTokenInvalid
		case expired != nil:
			results[i].err = expired
		case granted >= left:
			results[i].err = ErrTokenUsedUp
		default:
			granted++
			continue
		}
		refused = true
	}
	if refused && !fresh {
		// Only a fresh read may refuse: an administrator may have given
		// the token more uses or time since the copy was written.
		return nil, nil, true
	}
	if expired != nil || (granted == 0 && giveBack == 0) {
		// Nothing to write; uses given back to an expired token are
		// dropped.
		return cur, results, false
	}
	s := cur.DeepCopy()
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[KeyUsesLeft] = []byte(strconv.Itoa(left - granted))
	// s carries cur's resourceVersion: the update fails with a conflict if
	// anyone changed the Secret since it was read.
	updated, err := r.client.CoreV1().Secrets(r.tokenNamespace).Update(ctx, s, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		// Changed or deleted meanwhile: decide again on a fresh read.
		return nil, nil, true
	}
	if err != nil {
		return fail(fmt.Errorf("consuming token: %w", err))
	}
	t.UsesLeft = left - granted
	for i := range results {
		if results[i].err == nil {
			results[i].tok = t
		}
	}
	return updated, results, false
}

// FormatLabels renders labels as k=v,k=v in key order.
func FormatLabels(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}

// ParseLabels parses k=v,k=v and validates the result.
func ParseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return nil, fmt.Errorf("%w: label %q is not key=value", ErrInvalidInput, kv)
		}
		out[k] = v
	}
	return out, ValidateLabels(out)
}

// ValidateLabels checks Kubernetes label syntax and keeps vk-fleet's and
// Kubernetes' own label prefixes out of user hands.
func ValidateLabels(l map[string]string) error {
	for k, v := range l {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("%w: label key %q: %s", ErrInvalidInput, k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("%w: label %s value %q: %s", ErrInvalidInput, k, v, strings.Join(errs, "; "))
		}
		if reservedLabel(k) {
			return fmt.Errorf("%w: label %q is reserved", ErrInvalidInput, k)
		}
	}
	return nil
}

func reservedLabel(k string) bool {
	prefix, _, ok := strings.Cut(k, "/")
	if !ok {
		return k == "type"
	}
	return prefix == "vk-fleet.io" || prefix == "kubernetes.io" || prefix == "k8s.io" ||
		strings.HasSuffix(prefix, ".kubernetes.io") || strings.HasSuffix(prefix, ".k8s.io")
}

// CheckEnrollmentToken reports whether raw is a genuine enrollment token:
// its ID exists and its secret matches. Expiry and uses are checked at
// enrollment, where the client can be told which it was.
func (r *Registry) CheckEnrollmentToken(ctx context.Context, raw string) (string, error) {
	t, _, err := r.LookupToken(ctx, raw)
	if err != nil {
		return "", err
	}
	return t.ID, nil
}
