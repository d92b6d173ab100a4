//go:build remote

package podman

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containers/podman/v5/pkg/bindings/containers"
	entities "github.com/containers/podman/v5/pkg/domain/entities/types"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
)

var _ nodeagent.EphemeralStarter = (*Runtime)(nil)

// StartEphemeral creates ephemeral container c (kubectl debug) in w's
// running podman pod and starts it. The pod's other containers are not
// touched; c mounts the pod's volumes as they are.
func (r *Runtime) StartEphemeral(ctx context.Context, w *bridge.Workload, c *bridge.Container) error {
	if err := r.connect(); err != nil {
		return err
	}
	p, err := r.findPod(ctx, w.UID)
	if err != nil {
		return fmt.Errorf("starting ephemeral container %s: %w", c.Name, err)
	}
	if p == nil {
		return fmt.Errorf("starting ephemeral container %s: %w: pod %s", c.Name, nodeagent.ErrNoContainer, w.UID)
	}
	if !w.HostNetwork && p.InfraId != "" {
		// The pod's IP, for env that asks for it (the host's is filled in
		// by the agent).
		ip, err := r.podIP(ctx, p.InfraId)
		if err != nil {
			return fmt.Errorf("starting ephemeral container %s: %w", c.Name, err)
		}
		if ip != "" {
			one := bridge.Workload{EphemeralContainers: []bridge.Container{*c}}
			c = &nodeagent.FillFieldRefs(&one, map[string]string{bridge.FieldPodIP: ip, bridge.FieldPodIPs: ip}).EphemeralContainers[0]
		}
	}
	one := bridge.Workload{EphemeralContainers: []bridge.Container{*c}}
	if ref := nodeagent.UnfilledFieldRef(&one); ref != "" {
		return &nodeagent.ContainerError{Container: c.Name, Reason: nodeagent.ReasonCreateContainerConfigError,
			Err: fmt.Errorf("%s: the value is not known on this device", ref)}
	}
	ref, err := r.ensureImage(ctx, w, c)
	if err != nil {
		return err
	}
	name := containerName(podName(w), c.Name)
	s, err := containerSpec(w, c, p.Id, name, ref, podLabels(r.device, w, p.Labels[nodeagent.LabelSpecHash]), r.podVolumes(w))
	if err == nil {
		// The pod's /etc/hosts, written when the pod was created.
		hosts := filepath.Join(r.podVolumesDir(w.UID), hostsName)
		if _, serr := os.Stat(hosts); serr != nil {
			hosts = ""
		}
		err = r.secureContainer(ctx, s, w, c, ref, hosts)
	}
	if err == nil {
		err = r.mountTerminationLog(w, c, s)
	}
	var resp entities.ContainerCreateResponse
	if err == nil {
		resp, err = containers.CreateWithSpec(r.ctx(ctx), s, nil)
	}
	if err != nil {
		return fmt.Errorf("creating ephemeral container %s: %w", c.Name, containerError(c.Name, nodeagent.ReasonCreateContainerError, err))
	}
	if err := containers.Start(r.ctx(ctx), resp.ID, nil); err != nil {
		return fmt.Errorf("starting ephemeral container %s: %w", c.Name, containerError(c.Name, nodeagent.ReasonRunContainerError, err))
	}
	return nil
}

// podVolumes describes the volumes of w's existing pod, as prepareVolumes
// made them, without touching them.
func (r *Runtime) podVolumes(w *bridge.Workload) map[string]volumeSource {
	base := r.podVolumesDir(w.UID)
	out := make(map[string]volumeSource, len(w.Volumes))
	for _, v := range w.Volumes {
		switch {
		case v.Image != nil:
			out[v.Name] = volumeSource{image: normalizeImage(v.Image.Reference), readOnly: true}
		case v.HostPath != "":
			out[v.Name] = volumeSource{path: v.HostPath}
		case v.Files != nil:
			out[v.Name] = volumeSource{path: filepath.Join(base, safeSegment(v.Name)), readOnly: true, owned: true, files: true,
				subPathDir: filepath.Join(base, subPathsDir)}
		default:
			out[v.Name] = volumeSource{path: filepath.Join(base, safeSegment(v.Name)), owned: true}
		}
	}
	return out
}

// ensureVolumeImages makes sure the images of w's image volumes exist
// locally, pulled as their pull policies say, as a container's image.
func (r *Runtime) ensureVolumeImages(ctx context.Context, w *bridge.Workload) error {
	for _, v := range w.Volumes {
		if v.Image == nil {
			continue
		}
		c := bridge.Container{Name: "volume " + v.Name, Image: v.Image.Reference, ImagePullPolicy: v.Image.PullPolicy, PullAuth: v.Image.PullAuth}
		ref, err := r.ensureImage(ctx, w, &c)
		if err != nil {
			return err
		}
		if ref != normalizeImage(v.Image.Reference) {
			// Found under the name as written (an image built on the
			// device): mount that one.
			for i := range w.Volumes {
				if w.Volumes[i].Name == v.Name {
					img := *v.Image
					img.Reference = ref
					w.Volumes[i].Image = &img
				}
			}
		}
	}
	return nil
}
