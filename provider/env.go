package provider

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// podIPEnvProtocol is the first protocol whose agents fill in env
// variables from the pod's and the host's IPs (bridge.EnvVar.FieldRef).
const podIPEnvProtocol = 8

// deviceFieldRefs are the downward API fields of env a device fills in
// when it creates the container: the provider does not know their values.
var deviceFieldRefs = []string{bridge.FieldPodIP, bridge.FieldPodIPs, bridge.FieldHostIP, bridge.FieldHostIPs}

// containerEnv resolves the environment of container c of pod as kubelet's
// makeEnvironmentVariables does: envFrom sources in order (names kubelet
// accepts since 1.34, any printable ASCII but '='), then env in order
// (values expand $(VAR) from the variables before them and the service
// variables; configMapKeyRef, secretKeyRef, fieldRef, resourceFieldRef),
// then the service variables not set yet. The variables are sorted by name.
//
// A variable whose value is the device's to fill in (a fieldRef to
// status.podIP(s) or status.hostIP(s)) has FieldRef set and no value.
// mapping maps every variable to its value, those to deferredMark: the
// mapping for expanding $(VAR) in command, args and subPathExpr (see
// expandKnown). An error wrapping errInvalidSpec is the spec's fault; any
// other may go away (a ConfigMap created later).
func (p *Provider) containerEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container) (env []bridge.EnvVar, mapping map[string]string, err error) {
	vals := map[string]string{}
	deferred := map[string]string{} // name → field path
	for _, ef := range c.EnvFrom {
		var data map[string]string
		switch {
		case ef.ConfigMapRef != nil:
			cm, err := p.envConfigMap(ctx, pod.Namespace, ef.ConfigMapRef.Name)
			if apierrors.IsNotFound(err) && optional(ef.ConfigMapRef.Optional) {
				continue
			}
			if err != nil {
				return nil, nil, fmt.Errorf("configmap %q: %w", ef.ConfigMapRef.Name, err)
			}
			data = cm.Data
		case ef.SecretRef != nil:
			s, err := p.envSecret(ctx, pod.Namespace, ef.SecretRef.Name)
			if apierrors.IsNotFound(err) && optional(ef.SecretRef.Optional) {
				continue
			}
			if err != nil {
				return nil, nil, fmt.Errorf("secret %q: %w", ef.SecretRef.Name, err)
			}
			data = make(map[string]string, len(s.Data))
			for k, v := range s.Data {
				data[k] = string(v)
			}
		}
		for k, v := range data {
			name := ef.Prefix + k
			if len(validation.IsRelaxedEnvVarName(name)) != 0 {
				continue // skipped by a kubelet too (with an event)
			}
			vals[name] = v
		}
	}

	svc, err := p.serviceEnv(ctx, pod)
	if err != nil {
		return nil, nil, fmt.Errorf("listing services: %w", err)
	}
	// current is what $(VAR) in a value refers to: the variables so far,
	// then the service variables.
	current := func() map[string]string {
		m := maps.Clone(svc)
		maps.Copy(m, vals)
		for name := range deferred {
			m[name] = deferredMark
		}
		return m
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			v, ok := expandKnown(e.Value, current())
			if !ok {
				return nil, nil, fmt.Errorf("%w: env %s: %s", errInvalidSpec, e.Name, errDeferredRef)
			}
			vals[e.Name] = v
			delete(deferred, e.Name)
			continue
		}
		v, set, err := p.envValueFrom(ctx, pod, c, e.ValueFrom)
		if err != nil {
			return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		switch {
		case e.ValueFrom.FieldRef != nil && slices.Contains(deviceFieldRefs, e.ValueFrom.FieldRef.FieldPath):
			delete(vals, e.Name)
			deferred[e.Name] = e.ValueFrom.FieldRef.FieldPath
		case set:
			vals[e.Name] = v
			delete(deferred, e.Name)
		}
	}
	for k, v := range svc {
		if _, ok := vals[k]; !ok && deferred[k] == "" {
			vals[k] = v
		}
	}
	for name, v := range vals {
		env = append(env, bridge.EnvVar{Name: name, Value: v})
	}
	for name, field := range deferred {
		env = append(env, bridge.EnvVar{Name: name, FieldRef: field})
	}
	slices.SortFunc(env, func(a, b bridge.EnvVar) int { return strings.Compare(a.Name, b.Name) })
	mapping = vals
	for name := range deferred {
		mapping[name] = deferredMark
	}
	return env, mapping, nil
}

// envValueFrom resolves one valueFrom of container c. set is false for an
// optional source that is missing, and for a field the device fills in.
func (p *Provider) envValueFrom(ctx context.Context, pod *corev1.Pod, c *corev1.Container, vf *corev1.EnvVarSource) (v string, set bool, err error) {
	switch {
	case vf.ConfigMapKeyRef != nil:
		ref := vf.ConfigMapKeyRef
		cm, err := p.envConfigMap(ctx, pod.Namespace, ref.Name)
		if apierrors.IsNotFound(err) && optional(ref.Optional) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("configmap %q: %w", ref.Name, err)
		}
		v, ok := cm.Data[ref.Key]
		if !ok {
			if optional(ref.Optional) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("configmap %q has no key %q", ref.Name, ref.Key)
		}
		return v, true, nil
	case vf.SecretKeyRef != nil:
		ref := vf.SecretKeyRef
		s, err := p.envSecret(ctx, pod.Namespace, ref.Name)
		if apierrors.IsNotFound(err) && optional(ref.Optional) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("secret %q: %w", ref.Name, err)
		}
		b, ok := s.Data[ref.Key]
		if !ok {
			if optional(ref.Optional) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("secret %q has no key %q", ref.Name, ref.Key)
		}
		return string(b), true, nil
	case vf.FieldRef != nil:
		if slices.Contains(deviceFieldRefs, vf.FieldRef.FieldPath) {
			return "", false, nil
		}
		v, err := envFieldValue(pod, vf.FieldRef.FieldPath)
		return v, err == nil, err
	case vf.ResourceFieldRef != nil:
		v, err := p.resourceFieldValue(pod, vf.ResourceFieldRef, c.Name)
		return v, err == nil, err
	case vf.FileKeyRef != nil:
		return "", false, fmt.Errorf("%w: fileKeyRef is not supported on devices", errInvalidSpec)
	}
	return "", false, fmt.Errorf("%w: valueFrom names no source", errInvalidSpec)
}

// envFieldValue resolves a downward API fieldRef of env that the provider
// knows, as kubelet's podFieldSelectorRuntimeValue does.
func envFieldValue(pod *corev1.Pod, fieldPath string) (string, error) {
	switch fieldPath {
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "metadata.labels", "metadata.annotations":
		return "", fmt.Errorf("%w: downward API field %q is not supported in env", errInvalidSpec, fieldPath)
	}
	v, err := podFieldValue(pod, fieldPath)
	if err != nil {
		return "", fmt.Errorf("%w: downward API field %q is not supported in env", errInvalidSpec, fieldPath)
	}
	return v, nil
}

// deferredMark stands for a deferred variable while expanding: no value
// of a variable can hold a NUL byte.
const deferredMark = "\x00deferred\x00"

// errDeferredRef says why $(VAR) cannot refer to a variable the device
// fills in.
const errDeferredRef = "$(VAR) refers to a variable from status.podIP(s) or status.hostIP(s), whose value only the device knows: devices do not expand such references yet"

// expandKnown expands $(VAR) in s from mapping, as kubelet does, and
// reports false when s refers to a variable the device fills in (mapped to
// deferredMark).
func expandKnown(s string, mapping map[string]string) (string, bool) {
	out := expandEnv(s, mapping)
	return out, !strings.Contains(out, deferredMark)
}

// serviceEnv returns the service variables kubelet gives a container of
// pod: those of the "kubernetes" service in the default namespace, and of
// every service of the pod's namespace unless enableServiceLinks is false.
func (p *Provider) serviceEnv(ctx context.Context, pod *corev1.Pod) (map[string]string, error) {
	links := pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks
	var services []*corev1.Service
	p.mu.Lock()
	l := p.svcLister
	p.mu.Unlock()
	if l != nil {
		var err error
		if services, err = l.List(labels.Everything()); err != nil {
			return nil, err
		}
	} else {
		list, err := p.cfg.Client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for i := range list.Items {
			services = append(services, &list.Items[i])
		}
	}
	byName := map[string]*corev1.Service{}
	for _, s := range services {
		if s.Spec.ClusterIP == "" || s.Spec.ClusterIP == corev1.ClusterIPNone || len(s.Spec.Ports) == 0 {
			continue
		}
		switch {
		case s.Namespace == metav1.NamespaceDefault && s.Name == "kubernetes":
			if _, ok := byName[s.Name]; !ok {
				byName[s.Name] = s
			}
		case s.Namespace == pod.Namespace && links:
			byName[s.Name] = s
		}
	}
	out := map[string]string{}
	for _, s := range byName {
		serviceVars(s, out)
	}
	return out, nil
}

// serviceVars adds the variables of service s to out, as kubelet's
// envvars.FromServices spells them.
func serviceVars(s *corev1.Service, out map[string]string) {
	name := strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
	ip := s.Spec.ClusterIP
	out[name+"_SERVICE_HOST"] = ip
	out[name+"_SERVICE_PORT"] = strconv.Itoa(int(s.Spec.Ports[0].Port))
	for i, sp := range s.Spec.Ports {
		if sp.Name != "" {
			out[name+"_SERVICE_PORT_"+strings.ToUpper(strings.ReplaceAll(sp.Name, "-", "_"))] = strconv.Itoa(int(sp.Port))
		}
		proto := string(corev1.ProtocolTCP)
		if sp.Protocol != "" {
			proto = string(sp.Protocol)
		}
		url := strings.ToLower(proto) + "://" + net.JoinHostPort(ip, strconv.Itoa(int(sp.Port)))
		if i == 0 {
			out[name+"_PORT"] = url
		}
		prefix := fmt.Sprintf("%s_PORT_%d_%s", name, sp.Port, strings.ToUpper(proto))
		out[prefix] = url
		out[prefix+"_PROTO"] = strings.ToLower(proto)
		out[prefix+"_PORT"] = strconv.Itoa(int(sp.Port))
		out[prefix+"_ADDR"] = ip
	}
}

// usesDeviceEnv names a variable of w filled in on the device, or "".
func usesDeviceEnv(w *bridge.Workload) string {
	for _, c := range append(slices.Clone(w.InitContainers), w.Containers...) {
		for _, e := range c.Env {
			if e.FieldRef != "" {
				return fmt.Sprintf("env %s from %s", e.Name, e.FieldRef)
			}
		}
	}
	return ""
}

// envConfigMap reads ConfigMap ns/name for env: from the informer's cache,
// else from the API server.
func (p *Provider) envConfigMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	if p.cmLister != nil {
		if cm, err := p.cmLister.ConfigMaps(ns).Get(name); err == nil {
			return cm, nil
		}
	}
	return p.cfg.Client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
}

// envSecret reads Secret ns/name for env, as envConfigMap does.
func (p *Provider) envSecret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	if p.secretLister != nil {
		if s, err := p.secretLister.Secrets(ns).Get(name); err == nil {
			return s, nil
		}
	}
	return p.cfg.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
}
