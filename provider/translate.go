package provider

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// errInvalidSpec marks what no retry can fix in a pod spec.
// deadlineProtocol is the first device protocol that enforces a pod's
// activeDeadlineSeconds; ephemeralProtocol the first that starts
// ephemeral containers.
const (
	deadlineProtocol    = 8
	ephemeralProtocol   = 8
	imageVolumeProtocol = 8
)

var errInvalidSpec = errors.New("invalid pod spec")

// translate turns a pod into the Workload its device runs. ignored lists
// spec fields that are accepted but not honoured; refusal, when not empty,
// says why the pod cannot run on a device at all.
//
// Env is resolved here, as a kubelet resolves it (containerEnv): the pod
// controller leaves it alone (SkipDownwardAPIResolution).
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
	if v := p.deviceProtocol(spec.NodeName); v > 0 && v < deadlineProtocol && spec.ActiveDeadlineSeconds != nil {
		refuse("device %s runs an agent too old for activeDeadlineSeconds (protocol %d, needs %d): upgrade its device-agent", spec.NodeName, v, deadlineProtocol)
	}
	checkPodFields(spec, refuse, ignore)
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
		ActiveDeadlineSeconds:         spec.ActiveDeadlineSeconds,
	}
	if pod.DeletionGracePeriodSeconds != nil {
		w.TerminationGracePeriodSeconds = pod.DeletionGracePeriodSeconds
	}
	if w.RestartPolicy == "" {
		w.RestartPolicy = bridge.RestartAlways
	}
	podNetwork(pod, w, refuse, ignore)
	podSecurity(pod, w, refuse, ignore)
	podResources(pod, refuse)

	// Volumes.
	skipMounts := map[string]bool{}
	for i := range spec.Volumes {
		bv, skip, err := p.translateVolume(ctx, pod, &spec.Volumes[i], refuse, ignore)
		if err != nil {
			pending = errors.Join(pending, err)
		}
		if skip {
			skipMounts[spec.Volumes[i].Name] = true
		}
		if bv != nil {
			w.Volumes = append(w.Volumes, *bv)
		}
	}

	type specContainer struct {
		corev1.Container
		init      bool
		ephemeral bool
	}
	var specContainers []specContainer
	for _, c := range spec.InitContainers {
		specContainers = append(specContainers, specContainer{Container: c, init: true})
	}
	for _, c := range spec.Containers {
		specContainers = append(specContainers, specContainer{Container: c})
	}
	if v := p.deviceProtocol(spec.NodeName); v > 0 && v < ephemeralProtocol && len(spec.EphemeralContainers) > 0 {
		ignore("ephemeral containers (kubectl debug) are not started: the device's agent is too old (protocol %d, needs %d)", v, ephemeralProtocol)
	} else {
		for _, ec := range spec.EphemeralContainers {
			specContainers = append(specContainers, specContainer{Container: corev1.Container(ec.EphemeralContainerCommon), ephemeral: true})
		}
	}
	for _, sc := range specContainers {
		c := sc.Container
		// What an ephemeral container cannot have does not refuse its
		// running pod: that one container is not started, and the pod's
		// IgnoredFields condition says why.
		refuse := refuse
		var notStarted []string
		if sc.ephemeral {
			refuse = func(format string, a ...any) { notStarted = append(notStarted, fmt.Sprintf(format, a...)) }
		}
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
		env, mapping, err := p.containerEnv(ctx, pod, &c)
		switch {
		case errors.Is(err, errInvalidSpec):
			refuse("container %q: %v", c.Name, err)
		case err != nil:
			pending = errors.Join(pending, fmt.Errorf("container %q: %w", c.Name, err))
		}
		bc.Env = env
		// $(VAR) references in command and args, as kubelet expands them.
		var ok bool
		if bc.Command, ok = expandAllKnown(c.Command, mapping); !ok {
			refuse("container %q: command: %s", c.Name, errDeferredRef)
		}
		if bc.Args, ok = expandAllKnown(c.Args, mapping); !ok {
			refuse("container %q: args: %s", c.Name, errDeferredRef)
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
			bm, err := translateMount(m, mapping)
			if err != nil {
				refuse("container %q: %v", c.Name, err)
				continue
			}
			bc.Mounts = append(bc.Mounts, bm)
		}
		if len(c.VolumeDevices) > 0 {
			refuse("container %q: volumeDevices are not supported", c.Name)
		}
		bc.Resources = containerResources(&c, ignore)
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
		if sc.ephemeral {
			if len(notStarted) > 0 {
				ignore("ephemeral container %q is not started: %s", c.Name, strings.Join(notStarted, "; "))
				continue
			}
			w.EphemeralContainers = append(w.EphemeralContainers, bc)
			continue
		}
		w.Containers = append(w.Containers, bc)
	}
	applyPullAuth(w, &pullKeys)
	if v := p.deviceProtocol(spec.NodeName); v > 0 && v < securityProtocol {
		if used := usesProtocol6(w); used != "" {
			refuse("the device's agent is too old for %s (protocol %d, needs %d): upgrade its device-agent", used, v, securityProtocol)
		}
		if used := usesVolumes6(w); used != "" {
			refuse("the device's agent is too old for %s (protocol %d, needs %d): upgrade its device-agent", used, v, securityProtocol)
		}
	}
	if used := usesDeviceEnv(w); used != "" {
		switch v := p.deviceProtocol(spec.NodeName); {
		case v == 0:
			// An older agent would set the variable empty: wait until the
			// device says what it runs.
			pending = errors.Join(pending, fmt.Errorf("%s: waiting for device %s to report its agent's protocol (needs %d)", used, spec.NodeName, podIPEnvProtocol))
		case v < podIPEnvProtocol:
			refuse("the device's agent is too old for %s (protocol %d, needs %d): upgrade its device-agent", used, v, podIPEnvProtocol)
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

// expandAllKnown expands $(VAR) references in each of args from mapping
// (nil stays nil), and reports false when one refers to a variable the
// device fills in (expandKnown).
func expandAllKnown(args []string, mapping map[string]string) ([]string, bool) {
	if args == nil {
		return nil, true
	}
	out := make([]string, len(args))
	all := true
	for i, a := range args {
		var ok bool
		out[i], ok = expandKnown(a, mapping)
		all = all && ok
	}
	return out, all
}

func isServiceAccountVolume(p *corev1.ProjectedVolumeSource) bool {
	for _, s := range p.Sources {
		if s.ServiceAccountToken != nil {
			return true
		}
	}
	return false
}
