package provider

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// configHandler re-syncs the pods that mount a ConfigMap or Secret (kind
// "configmap" or "secret") when it is added or updated: a pod waiting for
// it is handed over, a running pod's volume files are updated in place on
// the device. Env taken from it does not change, as with a kubelet.
func (p *Provider) configHandler(ctx context.Context, kind string) cache.ResourceEventHandler {
	resync := func(obj any) {
		var ns, name string
		switch o := obj.(type) {
		case *corev1.ConfigMap:
			ns, name = o.Namespace, o.Name
		case *corev1.Secret:
			ns, name = o.Namespace, o.Name
		default:
			return
		}
		for _, id := range p.podsMounting(kind, ns, name) {
			go func() {
				if err := p.resyncPod(ctx, id); err != nil && ctx.Err() == nil {
					p.log.Debug("re-syncing pod after a "+kind+" change", "pod", id.namespace+"/"+id.name, "err", err)
				}
			}()
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { resync(obj) },
		UpdateFunc: func(_, obj any) { resync(obj) },
		// A deleted object empties the volumes that mount it optionally,
		// as kubelet does; the others keep their last files.
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			resync(obj)
		},
	}
}

// podsMounting returns the served pods that mount the ConfigMap
// or Secret ns/name as a volume, or pull their images with the Secret.
func (p *Provider) podsMounting(kind, ns, name string) []podID {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []podID
	for _, ent := range p.pods.byKey {
		if ent.pod == nil || ent.pod.Namespace != ns || ent.deleting || ent.refusal != nil {
			continue
		}
		if kind == "secret" && usesPullSecret(ent.pod, name) {
			out = append(out, idOf(ent.pod))
			continue
		}
		if volumesUse(ent.pod, kind, name) {
			out = append(out, idOf(ent.pod))
		}
	}
	return out
}

// volumesUse reports whether a volume of pod, or a source of a projected
// one, is the ConfigMap or Secret name.
func volumesUse(pod *corev1.Pod, kind, name string) bool {
	for _, v := range pod.Spec.Volumes {
		if kind == "configmap" && v.ConfigMap != nil && v.ConfigMap.Name == name ||
			kind == "secret" && v.Secret != nil && v.Secret.SecretName == name {
			return true
		}
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if kind == "configmap" && src.ConfigMap != nil && src.ConfigMap.Name == name ||
				kind == "secret" && src.Secret != nil && src.Secret.Name == name {
				return true
			}
		}
	}
	return false
}
