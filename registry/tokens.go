package registry

import (
	"context"
	"crypto/subtle"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
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
	if s.Type != corev1.SecretTypeBootstrapToken || string(s.Data[UsageEnrollment]) != "true" ||
		subtle.ConstantTimeCompare(s.Data[bootstrapapi.BootstrapTokenSecretKey], []byte(secret)) != 1 {
		return nil, nil, ErrTokenInvalid
	}
	t := &Token{ID: id}
	if exp := string(s.Data[bootstrapapi.BootstrapTokenExpirationKey]); exp != "" {
		if t.Expires, err = time.Parse(time.RFC3339, exp); err != nil {
			return nil, nil, ErrTokenInvalid
		}
	}
	t.UsesLeft, _ = strconv.Atoi(string(s.Data[KeyUsesLeft]))
	t.Labels, _ = ParseLabels(string(s.Data[KeyLabels]))
	return t, s, nil
}

// Usable reports why t cannot enroll a device now, or nil.
func (t *Token) Usable(now time.Time) error {
	if !t.Expires.IsZero() && !now.Before(t.Expires) {
		return fmt.Errorf("%w (at %s)", ErrTokenExpired, t.Expires.Format(time.RFC3339))
	}
	if t.UsesLeft <= 0 {
		return ErrTokenUsedUp
	}
	return nil
}

// consumeToken takes one use of the token, failing if another enrollment
// took the last one first.
func (r *Registry) consumeToken(ctx context.Context, raw string) (*Token, error) {
	for attempt := range 50 {
		if attempt > 0 {
			// Another enrollment took a use at the same moment: back off a
			// little, randomly, so that many devices enrolling with one
			// token do not keep colliding.
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(rand.IntN(20*attempt)+1) * time.Millisecond):
			}
		}
		t, s, err := r.LookupToken(ctx, raw)
		if err != nil {
			return nil, err
		}
		if err := t.Usable(r.now()); err != nil {
			return nil, err
		}
		s = s.DeepCopy()
		s.Data[KeyUsesLeft] = []byte(strconv.Itoa(t.UsesLeft - 1))
		_, err = r.client.CoreV1().Secrets(r.tokenNamespace).Update(ctx, s, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("consuming token: %w", err)
		}
		return t, nil
	}
	return nil, fmt.Errorf("consuming token: too many concurrent enrollments")
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
