//go:build remote

package podman

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/containers/podman/v5/pkg/specgen"
	spec "github.com/opencontainers/runtime-spec/specs-go"
	nettypes "go.podman.io/common/libnetwork/types"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// cpuPeriod is the CFS period (µs) under which CPU limits become quotas.
const cpuPeriod = 100000

// podName names the podman pod of w: "<name>_<namespace>_<first 8 of uid>",
// made to fit podman's name rules ([a-zA-Z0-9][a-zA-Z0-9_.-]*).
func podName(w *bridge.Workload) string {
	uid := w.UID
	if len(uid) > 8 {
		uid = uid[:8]
	}
	return sanitizeName(w.Name + "_" + w.Namespace + "_" + uid)
}

// containerName names the podman container of container c in pod pod.
func containerName(pod, c string) string {
	return sanitizeName(pod + "_" + c)
}

// sanitizeName replaces every character podman refuses in a name with '-'
// and makes sure the name starts with a letter or digit.
func sanitizeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			i > 0 && (c == '_' || c == '.' || c == '-')
		if !ok {
			b[i] = '-'
		}
	}
	if len(b) == 0 || b[0] == '-' {
		b = append([]byte("x"), b...)
	}
	return string(b)
}

// podLabels returns the labels of w's pod on device.
func podLabels(device string, w *bridge.Workload, specHash string) map[string]string {
	return map[string]string{
		nodeagent.LabelDevice:    device,
		nodeagent.LabelPodUID:    w.UID,
		nodeagent.LabelNamespace: w.Namespace,
		nodeagent.LabelPodName:   w.Name,
		nodeagent.LabelSpecHash:  specHash,
	}
}

// podSpec builds the podman pod of w.
func podSpec(name string, labels map[string]string, w *bridge.Workload) (*specgen.PodSpecGenerator, error) {
	ps := specgen.NewPodSpecGenerator()
	ps.Name = name
	ps.Labels = labels
	podNamespaces(ps, w)
	if w.HostNetwork {
		// The pod sees the host's network and hostname; ports need no mapping.
		ps.NetNS = specgen.Namespace{NSMode: specgen.Host}
		ps.UtsNs = specgen.Namespace{NSMode: specgen.Host}
		return ps, nil
	}
	ps.Hostname = w.Hostname
	if ps.Hostname == "" {
		ps.Hostname = w.Name
	}
	ports, err := portMappings(w)
	if err != nil {
		return nil, err
	}
	ps.PortMappings = ports
	return ps, nil
}

// portMappings returns the published ports of all of w's containers: the
// ports with a HostPort.
func portMappings(w *bridge.Workload) ([]nettypes.PortMapping, error) {
	var out []nettypes.PortMapping
	for _, c := range w.Containers {
		for _, p := range c.Ports {
			if p.HostPort == 0 {
				continue
			}
			if p.HostPort < 0 || p.HostPort > 65535 || p.ContainerPort <= 0 || p.ContainerPort > 65535 {
				return nil, &nodeagent.ContainerError{Container: c.Name, Reason: nodeagent.ReasonCreatePodSandboxError,
					Err: fmt.Errorf("invalid port %d:%d", p.HostPort, p.ContainerPort)}
			}
			proto := strings.ToLower(p.Protocol)
			if proto == "" {
				proto = "tcp"
			}
			m := nettypes.PortMapping{
				HostIP:        p.HostIP,
				ContainerPort: uint16(p.ContainerPort),
				HostPort:      uint16(p.HostPort),
				Protocol:      proto,
			}
			if !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
	}
	return out, nil
}

// containerSpec builds the podman container of c in the pod podID. image
// is c's resolved image reference; volumes maps each of the workload's
// volume names to its source directory on the host.
func containerSpec(w *bridge.Workload, c *bridge.Container, podID, name, image string,
	labels map[string]string, volumes map[string]volumeSource) (*specgen.SpecGenerator, error) {
	s := specgen.NewSpecGenerator(image, false)
	s.Name = name
	s.Pod = podID
	s.Labels = maps.Clone(labels)
	s.Labels[nodeagent.LabelContainer] = c.Name

	// Kubernetes: command replaces the image's ENTRYPOINT (and drops its
	// CMD), args replace CMD. podman does the same with Entrypoint/Command.
	if len(c.Command) > 0 {
		s.Entrypoint = slices.Clone(c.Command)
	}
	if len(c.Args) > 0 {
		s.Command = slices.Clone(c.Args)
	}
	if len(c.Env) > 0 {
		s.Env = make(map[string]string, len(c.Env))
		for _, e := range c.Env {
			s.Env[e.Name] = e.Value
		}
	}
	s.WorkDir = c.WorkingDir
	if c.TTY {
		s.Terminal = ptr(true)
	}
	if c.Stdin {
		s.Stdin = ptr(true)
	}
	if g := w.TerminationGracePeriodSeconds; g != nil && *g >= 0 {
		s.StopTimeout = ptr(uint(*g))
	}

	for i, m := range c.Mounts {
		src, ok := volumes[m.Volume]
		if !ok {
			return nil, fmt.Errorf("mount of unknown volume %q", m.Volume)
		}
		if src.image != "" {
			// Read-only, whatever the mount says (as a kubelet's).
			s.ImageVolumes = append(s.ImageVolumes, &specgen.ImageVolume{Source: src.image, Destination: m.Path, SubPath: m.SubPath})
			continue
		}
		source, err := src.mountSource(c.Name, i, m.SubPath)
		if err != nil {
			return nil, &nodeagent.ContainerError{Container: c.Name, Reason: nodeagent.ReasonCreateContainerConfigError,
				Err: fmt.Errorf("preparing the subPath of volume mount %q: %w", m.Volume, err)}
		}
		opts := []string{"rbind"}
		if m.ReadOnly || src.readOnly {
			opts = append(opts, "ro")
		} else {
			opts = append(opts, "rw")
		}
		if src.owned {
			opts = append(opts, "z") // shared label: all containers of the pod use it
		}
		s.Mounts = append(s.Mounts, spec.Mount{
			Type:        "bind",
			Source:      source,
			Destination: m.Path,
			Options:     opts,
		})
	}

	s.ResourceLimits = linuxResources(c.Resources)

	return s, nil
}

// capNames spells Kubernetes capability names ("NET_ADMIN", "ALL") as
// podman does ("CAP_NET_ADMIN", "ALL").
func capNames(caps []string) []string {
	var out []string
	for _, c := range caps {
		c = strings.ToUpper(strings.TrimSpace(c))
		if c == "" {
			continue
		}
		if c != "ALL" && !strings.HasPrefix(c, "CAP_") {
			c = "CAP_" + c
		}
		out = append(out, c)
	}
	return out
}

func ptr[T any](v T) *T { return &v }
