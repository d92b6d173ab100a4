package registry

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nkeys"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// Labels, annotations and taint of device Nodes.
const (
	// LabelManaged marks Nodes (and tokens) that vk-fleet owns.
	LabelManaged = "vk-fleet.io/managed"
	// AnnotationNKey is the device's public nkey.
	AnnotationNKey = "vk-fleet.io/nkey"
	// AnnotationZitadelUser is the ID of the device's Zitadel machine user.
	AnnotationZitadelUser = "vk-fleet.io/zitadel-user-id"
	// AnnotationEnrolledAt is when the device enrolled.
	AnnotationEnrolledAt = "vk-fleet.io/enrolled-at"
	// AnnotationEnrollToken is the ID (not the secret) of the token used.
	AnnotationEnrollToken = "vk-fleet.io/enrollment-token-id"
	// AnnotationDeviceAddresses lists the device's own IP addresses.
	AnnotationDeviceAddresses = "vk-fleet.io/device-addresses"
	// AnnotationAgentVersion is the device agent's version.
	AnnotationAgentVersion = "vk-fleet.io/agent-version"
	// AnnotationProtocolVersion is the wire protocol the agent speaks.
	AnnotationProtocolVersion = "vk-fleet.io/protocol-version"
	// TaintKey is the virtual-kubelet convention for provider taints.
	TaintKey   = "virtual-kubelet.io/provider"
	TaintValue = "vk-fleet"
)

// DefaultTokenNamespace holds bootstrap-token Secrets, as in kubeadm.
const DefaultTokenNamespace = "kube-system"

// CAConfigMap is the ConfigMap (in the token namespace) that publishes the
// CA certificate of vk-fleet's NATS server under the key "ca.crt", for
// `fleetctl ca` and `fleetctl enroll --ca`.
const CAConfigMap = "vk-fleet-nats-ca"

// Registry reads and writes devices and enrollment tokens. Its methods are
// safe for concurrent use.
type Registry struct {
	client         kubernetes.Interface
	tokenNamespace string
	now            func() time.Time
	deviceByNKey   func(nkey string) (name string, ok bool)
	enrolled       func(*corev1.Node)
	deviceNamed    func(name string) bool
	shared         *shared
}

// shared is the state of a Registry that its copies share.
type shared struct {
	tokens tokenWriters
	nkeys  nkeyClaims
}

// New returns a Registry that keeps tokens in kube-system.
func New(client kubernetes.Interface) *Registry {
	return &Registry{client: client, tokenNamespace: DefaultTokenNamespace, now: time.Now, shared: &shared{}}
}

// WithTokenNamespace returns a copy of r that keeps tokens in ns.
func (r *Registry) WithTokenNamespace(ns string) *Registry {
	c := *r
	c.tokenNamespace = ns
	return &c
}

// WithDeviceNames returns a copy of r whose Enroll asks has, rather than
// the API server, whether a device's name is taken by an enrolled device:
// (*Cache).Has. A name taken by another Node (a kubelet's) is found when
// the Node is created, and the use of the token taken for it given back.
func (r *Registry) WithDeviceNames(has func(name string) bool) *Registry {
	c := *r
	c.deviceNamed = has
	return &c
}

// WithEnrolledHook returns a copy of r whose Enroll calls fn with each
// Node it creates, before the Node's informer event: (*Cache).Enrolled, so
// that the callout knows a device's key the moment its enrollment is
// answered.
func (r *Registry) WithEnrolledHook(fn func(*corev1.Node)) *Registry {
	c := *r
	c.enrolled = fn
	return &c
}

// WithDeviceLookup returns a copy of r whose Enroll asks lookup, rather
// than listing every device Node, whether a device key is already enrolled
// and as which device. (*Cache).DeviceByNKey is such a lookup.
func (r *Registry) WithDeviceLookup(lookup func(nkey string) (name string, ok bool)) *Registry {
	c := *r
	c.deviceByNKey = lookup
	return &c
}

// Enrollment is a device's request to join.
type Enrollment struct {
	Token string // "<id>.<secret>"
	Name  string
	// NKey is the device's public user nkey; ZitadelUserID the device's
	// Zitadel machine user. Exactly one is set.
	NKey          string
	ZitadelUserID string
	Labels        map[string]string
}

// Validate checks the request without looking anything up.
func (e *Enrollment) Validate() error {
	if err := bridge.ValidateDeviceName(e.Name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidInput, err)
	}
	switch {
	case e.NKey != "" && e.ZitadelUserID != "":
		return fmt.Errorf("%w: give a device key or a Zitadel user, not both", ErrInvalidInput)
	case e.NKey != "":
		if !nkeys.IsValidPublicUserKey(e.NKey) {
			return fmt.Errorf("%w: device key is not a public user nkey", ErrInvalidInput)
		}
	case e.ZitadelUserID == "":
		return fmt.Errorf("%w: a device key or a Zitadel user is required", ErrInvalidInput)
	}
	return ValidateLabels(e.Labels)
}

// Enroll checks and consumes the token and registers the device as a Node
// that is NotReady until the device first connects.
//
// Concurrent enrollments with one token share its updates (see
// consumeToken). A use whose enrollment then definitely created no Node
// (the name was taken meanwhile, the API server refused the Node) is given
// back; after an error that leaves that open, such as a timeout, it stays
// taken, so that the token never admits more devices than its uses.
func (r *Registry) Enroll(ctx context.Context, e Enrollment) (*corev1.Node, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	// Checked before a use is taken, so that a device retrying under a
	// taken name does not use up the token.
	if r.deviceNamed != nil {
		if r.deviceNamed(e.Name) {
			return nil, fmt.Errorf("%w: %s", ErrNameTaken, e.Name)
		}
	} else if _, err := r.client.CoreV1().Nodes().Get(ctx, e.Name, metav1.GetOptions{}); err == nil {
		return nil, fmt.Errorf("%w: %s", ErrNameTaken, e.Name)
	} else if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("checking device name: %w", err)
	}
	if e.NKey != "" {
		// The claim covers concurrent enrollments of one key in this
		// process, the lookup (or the list) enrolled devices. A lookup fed
		// by an informer sees a new Node a moment after it is created, and
		// neither sees another replica's enrollment in flight: within that
		// moment one key can enroll twice, each time with a use of a
		// token, as it could between replicas before.
		if other, ok := r.shared.nkeys.claim(e.NKey, e.Name); !ok {
			return nil, fmt.Errorf("%w: this device key is being enrolled as %s", ErrNameTaken, other)
		}
		defer r.shared.nkeys.release(e.NKey)
		if existing, err := r.deviceWithNKey(ctx, e.NKey); err != nil {
			return nil, err
		} else if existing != "" {
			return nil, fmt.Errorf("%w: this device key is already enrolled as %s", ErrNameTaken, existing)
		}
	}
	tok, err := r.consumeToken(ctx, e.Token)
	if err != nil {
		return nil, err
	}
	n := r.deviceNode(e, tok)
	created, err := r.client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		if notCreated(err) {
			r.giveBackUse(ctx, tok.ID)
		}
		if apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("%w: %s", ErrNameTaken, e.Name)
		}
		return nil, fmt.Errorf("registering device: %w", err)
	}
	if readyCondition(created) == nil {
		// Kubernetes keeps the status a Node is created with (kubelets
		// rely on it); an API server that dropped it gets it in a second
		// request.
		created.Status.Conditions = n.Status.Conditions
		if updated, err := r.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err == nil {
			created = updated
		}
	}
	if r.enrolled != nil {
		r.enrolled(created)
	}
	return created, nil
}

// deviceNode returns the Node of a device enrolling with e and tok, NotReady
// with reason DeviceNotConnected.
func (r *Registry) deviceNode(e Enrollment, tok *Token) *corev1.Node {
	labels := map[string]string{}
	for k, v := range tok.Labels {
		labels[k] = v
	}
	for k, v := range e.Labels {
		labels[k] = v
	}
	labels[LabelManaged] = "true"
	labels["type"] = "virtual-kubelet"
	labels[corev1.LabelHostname] = e.Name
	ann := map[string]string{
		AnnotationEnrolledAt:  r.now().UTC().Format(time.RFC3339),
		AnnotationEnrollToken: tok.ID,
	}
	if e.NKey != "" {
		ann[AnnotationNKey] = e.NKey
	} else {
		ann[AnnotationZitadelUser] = e.ZitadelUserID
	}
	now := metav1.NewTime(r.now())
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: e.Name, Labels: labels, Annotations: ann},
		Spec: corev1.NodeSpec{
			Taints: []corev1.Taint{
				{Key: TaintKey, Value: TaintValue, Effect: corev1.TaintEffectNoSchedule},
				// As a kubelet registers its Node: nothing is scheduled
				// here until the device is Ready, when the node lifecycle
				// controller removes the taint. Without it that controller
				// adds it, one more write per enrollment.
				{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule},
			},
		},
		// Sent with the Node itself: the API server keeps a new Node's
		// status, which saves an UpdateStatus per enrollment.
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "DeviceNotConnected",
			Message: "device enrolled; waiting for its first connection", LastHeartbeatTime: now, LastTransitionTime: now,
		}}},
	}
}

func readyCondition(n *corev1.Node) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// notCreated reports whether err, from creating an object, means that the
// API server certainly did not create it. A timeout or a lost connection
// does not: the object may exist.
func notCreated(err error) bool {
	return apierrors.IsAlreadyExists(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) ||
		apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err)
}

// deviceWithNKey returns the device enrolled with nkey, or "".
func (r *Registry) deviceWithNKey(ctx context.Context, nkey string) (string, error) {
	if r.deviceByNKey != nil {
		name, _ := r.deviceByNKey(nkey)
		return name, nil
	}
	return r.deviceByAnnotation(ctx, AnnotationNKey, nkey)
}

func (r *Registry) deviceByAnnotation(ctx context.Context, key, value string) (string, error) {
	nodes, err := r.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: LabelManaged + "=true"})
	if err != nil {
		return "", fmt.Errorf("listing devices: %w", err)
	}
	for _, n := range nodes.Items {
		if n.Annotations[key] == value {
			return n.Name, nil
		}
	}
	return "", nil
}

// nkeyClaims are the device keys being enrolled in this process, so that
// concurrent enrollments of one key cannot both pass the "already
// enrolled?" check. The zero value is ready to use.
type nkeyClaims struct {
	mu     sync.Mutex
	byNKey map[string]string // device name
}

// claim records that nkey is being enrolled as name. If another enrollment
// holds it, claim returns that device's name and false.
func (c *nkeyClaims) claim(nkey, name string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if other, ok := c.byNKey[nkey]; ok {
		return other, false
	}
	if c.byNKey == nil {
		c.byNKey = map[string]string{}
	}
	c.byNKey[nkey] = name
	return "", true
}

func (c *nkeyClaims) release(nkey string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.byNKey, nkey)
}

// Revoke deletes the device's Node: the device can no longer connect, and
// vk-fleet disconnects it and withdraws its workloads.
func (r *Registry) Revoke(ctx context.Context, name string) error {
	n, err := r.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return fmt.Errorf("reading device %s: %w", name, err)
	}
	if n.Labels[LabelManaged] != "true" {
		return fmt.Errorf("%w: node %s is not a vk-fleet device", ErrNotFound, name)
	}
	err = r.client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &n.UID}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("revoking device %s: %w", name, err)
	}
	return nil
}

// Device summarises one enrolled device.
type Device struct {
	Name         string
	Ready        corev1.ConditionStatus
	LastSeen     time.Time
	Labels       map[string]string
	AgentVersion string
	Identity     string // "nkey" or "zitadel"
}

// List returns every enrolled device, by name.
func (r *Registry) List(ctx context.Context) ([]Device, error) {
	nodes, err := r.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: LabelManaged + "=true"})
	if err != nil {
		return nil, fmt.Errorf("listing devices: %w", err)
	}
	out := make([]Device, 0, len(nodes.Items))
	for _, n := range nodes.Items {
		d := Device{Name: n.Name, Ready: corev1.ConditionUnknown, Labels: n.Labels, AgentVersion: n.Annotations[AnnotationAgentVersion]}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				d.Ready = c.Status
				if c.Status == corev1.ConditionTrue || c.Reason != "DeviceNotConnected" {
					d.LastSeen = c.LastHeartbeatTime.Time
				}
			}
		}
		d.Identity = "nkey"
		if n.Annotations[AnnotationZitadelUser] != "" {
			d.Identity = "zitadel"
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
