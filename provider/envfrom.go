package provider

import (
	"context"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// relaxedEnvFrom returns the variables container c's envFrom sources give
// that virtual-kubelet's pod controller dropped. It resolves envFrom with
// the rule Kubernetes had before 1.34, a name that is a C identifier
// (with '-' and '.'), and skips the others; kubelet and the API server now
// accept any printable ASCII but '=' (a prefix "1-" gives "1-key"). have
// holds the container's resolved environment: explicit env and the
// variables already resolved win, as they do in a kubelet.
func (p *Provider) relaxedEnvFrom(ctx context.Context, pod *corev1.Pod, c *corev1.Container, have map[string]string) ([]bridge.EnvVar, error) {
	got := map[string]string{}
	for _, ef := range c.EnvFrom {
		var data map[string]string
		switch {
		case ef.ConfigMapRef != nil:
			cm, err := p.envConfigMap(ctx, pod.Namespace, ef.ConfigMapRef.Name)
			if apierrors.IsNotFound(err) && optional(ef.ConfigMapRef.Optional) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("configmap %q: %w", ef.ConfigMapRef.Name, err)
			}
			data = cm.Data
		case ef.SecretRef != nil:
			s, err := p.envSecret(ctx, pod.Namespace, ef.SecretRef.Name)
			if apierrors.IsNotFound(err) && optional(ef.SecretRef.Optional) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("secret %q: %w", ef.SecretRef.Name, err)
			}
			data = make(map[string]string, len(s.Data))
			for k, v := range s.Data {
				data[k] = string(v)
			}
		}
		for k, v := range data {
			name := ef.Prefix + k
			if len(validation.IsEnvVarName(name)) == 0 || len(validation.IsRelaxedEnvVarName(name)) != 0 {
				continue // resolved by the pod controller already, or invalid for a kubelet too
			}
			got[name] = v
		}
	}
	var out []bridge.EnvVar
	for _, name := range slices.Sorted(maps.Keys(got)) {
		if _, ok := have[name]; !ok {
			out = append(out, bridge.EnvVar{Name: name, Value: got[name]})
		}
	}
	return out, nil
}

func (p *Provider) envConfigMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	if p.cmLister != nil {
		if cm, err := p.cmLister.ConfigMaps(ns).Get(name); err == nil {
			return cm, nil
		}
	}
	return p.cfg.Client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
}

func (p *Provider) envSecret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	if p.secretLister != nil {
		if s, err := p.secretLister.Secrets(ns).Get(name); err == nil {
			return s, nil
		}
	}
	return p.cfg.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
}
