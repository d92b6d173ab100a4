package provider

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// errInvalidSpec marks what no retry can fix in a pod spec.
var errInvalidSpec = errors.New("invalid pod spec")

// translate turns a pod into the Workload its device runs. ignored lists
// spec fields that are accepted but not honoured; refusal, when not empty,
// says why the pod cannot run on a device at all.
//
// Env is already resolved by the pod controller (values from ConfigMaps,
// Secrets and the downward API).
//
// pending, when not nil, says why the pod cannot be handed over yet but may
// be later: a ConfigMap or Secret it mounts does not exist (yet), or could
// not be read. The caller shows it on the Pod and retries, as a kubelet does.
func (p *Provider) translate(ctx context.Context, pod *corev1.Pod) (w *bridge.Workload, ignored []string, refusal string, pending error) {
	spec := &pod.Spec
	var refusals []string
	refuse := func(format string, a ...any) { refusals = append(refusals, fmt.Sprintf(format, a...)) }
	ignore := func(format string, a ...any) { ignored = append(ignored, fmt.Sprintf(format, a...)) }

	if v := p.deviceProtocol(spec.NodeName); v > 0 && v < podSemanticsProtocol && (len(spec.InitContainers) > 0 || hasProbes(spec) || hasHooks(spec)) {
		refuse("device %s runs an agent too old for init containers, probes and lifecycle hooks (protocol %d, needs %d): upgrade its device-agent", spec.NodeName, v, podSemanticsProtocol)
	}
	pullKeys, missingPullSecrets, err := p.podKeyring(ctx, pod)
	if err != nil {
		pending = errors.Join(pending, err)
	}

	w = &bridge.Workload{
		UID:                           string(pod.UID),
		Namespace:                     pod.Namespace,
		Name:                          pod.Name,
		Generation:                    pod.Generation,
		RestartPolicy:                 string(spec.RestartPolicy),
		HostNetwork:                   spec.HostNetwork,
		Hostname:                      spec.Hostname,
		TerminationGracePeriodSeconds: spec.TerminationGracePeriodSeconds,
	}
	if pod.DeletionGracePeriodSeconds != nil {
		w.TerminationGracePeriodSeconds = pod.DeletionGracePeriodSeconds
	}
	if w.RestartPolicy == "" {
		w.RestartPolicy = bridge.RestartAlways
	}
	podNetwork(pod, w, refuse, ignore)
	podSecurity(pod, w, refuse, ignore)

	// Volumes.
	skipMounts := map[string]bool{}
	for _, v := range spec.Volumes {
		bv := bridge.Volume{Name: v.Name}
		switch {
		case v.EmptyDir != nil:
			bv.EmptyDir = true
		case v.HostPath != nil:
			bv.HostPath = v.HostPath.Path
		case v.ConfigMap != nil:
			files, err := p.configMapFiles(ctx, pod.Namespace, v.ConfigMap)
			if errors.Is(err, errInvalidSpec) {
				refuse("volume %q: %v", v.Name, err)
				continue
			}
			if err != nil {
				pending = errors.Join(pending, fmt.Errorf("volume %q: %w", v.Name, err))
				continue
			}
			bv.Files = files
		case v.Secret != nil:
			files, err := p.secretFiles(ctx, pod.Namespace, v.Secret)
			if errors.Is(err, errInvalidSpec) {
				refuse("volume %q: %v", v.Name, err)
				continue
			}
			if err != nil {
				pending = errors.Join(pending, fmt.Errorf("volume %q: %w", v.Name, err))
				continue
			}
			bv.Files = files
		case v.Projected != nil && isServiceAccountVolume(v.Projected):
			// The API server's token volume: devices do not talk to the
			// API server, so it is left out on purpose.
			skipMounts[v.Name] = true
			continue
		default:
			refuse("volume %q: only emptyDir, hostPath, configMap and secret volumes are supported", v.Name)
			continue
		}
		w.Volumes = append(w.Volumes, bv)
	}

	type specContainer struct {
		corev1.Container
		init bool
	}
	var specContainers []specContainer
	for _, c := range spec.InitContainers {
		specContainers = append(specContainers, specContainer{c, true})
	}
	for _, c := range spec.Containers {
		specContainers = append(specContainers, specContainer{c, false})
	}
	for _, sc := range specContainers {
		c := sc.Container
		bc := bridge.Container{
			Name:            c.Name,
			Image:           c.Image,
			ImagePullPolicy: string(c.ImagePullPolicy),
			Command:         c.Command,
			Args:            c.Args,
			WorkingDir:      c.WorkingDir,
			TTY:             c.TTY,
			Stdin:           c.Stdin,
		}
		for _, e := range c.Env {
			bc.Env = append(bc.Env, bridge.EnvVar{Name: e.Name, Value: e.Value})
		}
		for _, port := range c.Ports {
			bc.Ports = append(bc.Ports, bridge.Port{
				Name: port.Name, ContainerPort: port.ContainerPort, HostPort: port.HostPort,
				HostIP: port.HostIP, Protocol: string(port.Protocol),
			})
			if port.Protocol == corev1.ProtocolSCTP {
				refuse("container %q: SCTP ports are not supported", c.Name)
			}
		}
		for _, m := range c.VolumeMounts {
			if skipMounts[m.Name] {
				continue
			}
			if m.SubPath != "" || m.SubPathExpr != "" {
				refuse("container %q: volume mount subPath is not supported", c.Name)
				continue
			}
			bc.Mounts = append(bc.Mounts, bridge.Mount{Volume: m.Name, Path: m.MountPath, ReadOnly: m.ReadOnly})
		}
		if len(c.VolumeDevices) > 0 {
			refuse("container %q: volumeDevices are not supported", c.Name)
		}
		if lim := c.Resources.Limits; lim != nil {
			if q, ok := lim[corev1.ResourceMemory]; ok {
				bc.Resources.MemoryLimitBytes = q.Value()
			}
			if q, ok := lim[corev1.ResourceCPU]; ok {
				bc.Resources.CPULimitMilli = q.MilliValue()
			}
		}
		bc.Security = containerSecurity(pod, &c, refuse, ignore)
		var perrs []error
		for _, pr := range []struct {
			in  *corev1.Probe
			out **bridge.Probe
		}{{c.StartupProbe, &bc.Startup}, {c.ReadinessProbe, &bc.Readiness}, {c.LivenessProbe, &bc.Liveness}} {
			var err error
			if *pr.out, err = translateProbe(pr.in, &c); err != nil {
				perrs = append(perrs, err)
			}
		}
		if err := errors.Join(perrs...); err != nil {
			refuse("container %q: %v", c.Name, err)
		}
		if lc := c.Lifecycle; lc != nil {
			var err error
			if bc.PostStart, err = translateHandler(lc.PostStart, &c); err != nil {
				refuse("container %q: postStart hook: %v", c.Name, err)
			}
			if bc.PreStop, err = translateHandler(lc.PreStop, &c); err != nil {
				refuse("container %q: preStop hook: %v", c.Name, err)
			}
			if lc.StopSignal != nil {
				refuse("container %q: lifecycle stopSignal is not supported on devices yet", c.Name)
			}
		}
		bc.TerminationMessagePath = c.TerminationMessagePath
		bc.TerminationMessagePolicy = string(c.TerminationMessagePolicy)
		if sc.init {
			if c.RestartPolicy != nil {
				bc.RestartPolicy = string(*c.RestartPolicy)
			}
			w.InitContainers = append(w.InitContainers, bc)
			continue
		}
		w.Containers = append(w.Containers, bc)
	}
	applyPullAuth(w, &pullKeys)
	if v := p.deviceProtocol(spec.NodeName); v > 0 && v < securityProtocol {
		if used := usesProtocol6(w); used != "" {
			refuse("the device's agent is too old for %s (protocol %d, needs %d): upgrade its device-agent", used, v, securityProtocol)
		}
	}
	if len(refusals) > 0 {
		return nil, ignored, strings.Join(refusals, "; "), nil
	}
	if pending != nil {
		return nil, ignored, "", pending
	}
	p.warnMissingPullSecrets(pod, missingPullSecrets)
	return w, ignored, "", nil
}

func isServiceAccountVolume(p *corev1.ProjectedVolumeSource) bool {
	for _, s := range p.Sources {
		if s.ServiceAccountToken != nil {
			return true
		}
	}
	return false
}

func (p *Provider) configMapFiles(ctx context.Context, ns string, v *corev1.ConfigMapVolumeSource) (map[string][]byte, error) {
	var cm *corev1.ConfigMap
	var err error
	if p.cmLister != nil {
		cm, err = p.cmLister.ConfigMaps(ns).Get(v.Name)
	} else {
		cm, err = p.cfg.Client.CoreV1().ConfigMaps(ns).Get(ctx, v.Name, metav1.GetOptions{})
	}
	if err != nil {
		// Only a ConfigMap that does not exist counts as absent: a failed
		// read must not empty an optional volume.
		if apierrors.IsNotFound(err) && v.Optional != nil && *v.Optional {
			return map[string][]byte{}, nil
		}
		return nil, fmt.Errorf("configmap %q: %w", v.Name, err)
	}
	data := map[string][]byte{}
	for k, s := range cm.Data {
		data[k] = []byte(s)
	}
	for k, b := range cm.BinaryData {
		data[k] = b
	}
	return projectItems(data, v.Items)
}

func (p *Provider) secretFiles(ctx context.Context, ns string, v *corev1.SecretVolumeSource) (map[string][]byte, error) {
	var s *corev1.Secret
	var err error
	if p.secretLister != nil {
		s, err = p.secretLister.Secrets(ns).Get(v.SecretName)
	} else {
		s, err = p.cfg.Client.CoreV1().Secrets(ns).Get(ctx, v.SecretName, metav1.GetOptions{})
	}
	if err != nil {
		if apierrors.IsNotFound(err) && v.Optional != nil && *v.Optional {
			return map[string][]byte{}, nil
		}
		return nil, fmt.Errorf("secret %q: %w", v.SecretName, err)
	}
	return projectItems(s.Data, v.Items)
}

// projectItems applies a volume's items list: without items every key is
// a file; with items only those keys, at their paths.
func projectItems(data map[string][]byte, items []corev1.KeyToPath) (map[string][]byte, error) {
	out := map[string][]byte{}
	if len(items) == 0 {
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out[k] = data[k]
		}
		return out, nil
	}
	for _, it := range items {
		b, ok := data[it.Key]
		if !ok {
			return nil, fmt.Errorf("key %q not found", it.Key)
		}
		clean := path.Clean(it.Path)
		if path.IsAbs(clean) || strings.HasPrefix(clean, "..") {
			return nil, fmt.Errorf("%w: item path %q must be relative and stay inside the volume", errInvalidSpec, it.Path)
		}
		out[clean] = b
	}
	return out, nil
}
