//go:build remote

package podman

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/images"
	"github.com/containers/podman/v5/pkg/bindings/pods"
	entities "github.com/containers/podman/v5/pkg/domain/entities/types"
	"go.podman.io/image/v5/docker/reference"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// cleanupTimeout bounds the removal of a half-created pod.
const cleanupTimeout = time.Minute

// CreatePod pulls the images of w as their pull policies say, creates a
// podman pod with all of w's containers and starts the containers in order
// — unless w has init containers: then it starts none, and the agent starts
// them one by one (StartContainer).
// On failure it removes what it created; a failure of one container is a
// *nodeagent.ContainerError. A pod of the same UID must not exist
// (ErrPodExists).
func (r *Runtime) CreatePod(ctx context.Context, w *bridge.Workload, specHash string) error {
	if err := r.connect(); err != nil {
		return err
	}
	if w.UID == "" || w.Name == "" {
		return errors.New("creating pod: workload without uid or name")
	}
	name := podName(w)
	log := r.log.With("pod", w.Namespace+"/"+w.Name, "uid", w.UID)
	pctx := r.ctx(ctx)

	existing, err := r.findPod(ctx, w.UID)
	if err != nil {
		return fmt.Errorf("creating pod %s: %w", name, err)
	}
	if existing != nil {
		return fmt.Errorf("creating pod %s: %w (podman pod %s)", name, ErrPodExists, existing.Name)
	}

	// Init containers first: they run first, and are created first.
	all := append(slices.Clone(w.InitContainers), w.Containers...)
	imageRefs := make([]string, len(all))
	for i := range all {
		ref, err := r.ensureImage(ctx, w, &all[i])
		if err != nil {
			return fmt.Errorf("creating pod %s: %w", name, err)
		}
		imageRefs[i] = ref
	}

	// From here on, undo everything on failure.
	var podID string
	created := false
	defer func() {
		if created {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if podID == "" {
			// The pod may exist even though its creation failed (ctx ended
			// while podman worked): look for it by label.
			if p, err := r.findPod(cctx, w.UID); err == nil && p != nil {
				podID = p.Id
			}
		}
		if podID != "" {
			if err := r.removePod(cctx, w.UID, podID, 0); err != nil {
				log.Error("removing half-created pod", "err", err)
			}
		}
		if err := r.removeVolumes(w.UID); err != nil {
			log.Error("removing volumes of half-created pod", "err", err)
		}
	}()

	if err := r.ensureVolumeImages(ctx, w); err != nil {
		return fmt.Errorf("creating pod %s: %w", name, err)
	}
	volumes, err := r.prepareVolumes(w)
	if err != nil {
		return fmt.Errorf("creating pod %s: %w", name, &nodeagent.ContainerError{
			Reason: nodeagent.ReasonCreatePodSandboxError, Err: err})
	}
	labels := podLabels(r.device, w, specHash)
	ps, err := podSpec(name, labels, w)
	if err != nil {
		return fmt.Errorf("creating pod %s: %w", name, err)
	}
	rep, err := pods.CreatePodFromSpec(pctx, &entities.PodSpec{PodSpecGen: *ps})
	if err != nil {
		err = classify(err)
		if errors.Is(err, nodeagent.ErrRuntimeUnavailable) {
			return fmt.Errorf("creating pod %s: %w", name, err)
		}
		return fmt.Errorf("creating pod %s: %w", name, &nodeagent.ContainerError{
			Reason: nodeagent.ReasonCreatePodSandboxError, Err: err})
	}
	podID = rep.Id

	// The sandbox first, as kubelet: its IP goes into the containers' env
	// and /etc/hosts.
	var podIP string
	if !w.HostNetwork {
		if podIP, err = r.startSandbox(ctx, podID); err != nil {
			return fmt.Errorf("creating pod %s: %w", name, containerError("", nodeagent.ReasonCreatePodSandboxError, err))
		}
		if podIP != "" {
			w = nodeagent.FillFieldRefs(w, map[string]string{bridge.FieldPodIP: podIP, bridge.FieldPodIPs: podIP})
			all = append(slices.Clone(w.InitContainers), w.Containers...)
		}
	}
	if ref := nodeagent.UnfilledFieldRef(w); ref != "" {
		return fmt.Errorf("creating pod %s: %w", name, &nodeagent.ContainerError{Reason: nodeagent.ReasonCreatePodSandboxError,
			Err: fmt.Errorf("%s: the value is not known on this device", ref)})
	}
	hostsPath, err := r.writeHostsFile(w, podIP)
	if err != nil {
		return fmt.Errorf("creating pod %s: %w", name, &nodeagent.ContainerError{
			Reason: nodeagent.ReasonCreatePodSandboxError, Err: err})
	}

	ids := make([]string, len(all))
	for i := range all {
		c := &all[i]
		s, err := containerSpec(w, c, podID, containerName(name, c.Name), imageRefs[i], labels, volumes)
		if err == nil {
			err = r.secureContainer(ctx, s, w, c, imageRefs[i], hostsPath)
		}
		if err == nil {
			err = r.mountTerminationLog(w, c, s)
		}
		if err == nil {
			var resp entities.ContainerCreateResponse
			resp, err = containers.CreateWithSpec(pctx, s, nil)
			ids[i] = resp.ID
		}
		if err != nil {
			return fmt.Errorf("creating pod %s: %w", name, containerError(c.Name, nodeagent.ReasonCreateContainerError, err))
		}
	}
	if len(w.InitContainers) > 0 {
		// The agent starts them in order: each init container after the
		// one before succeeded (or, a sidecar, started), then the rest.
		ids = nil
	}
	for i, id := range ids {
		if err := containers.Start(pctx, id, nil); err != nil {
			return fmt.Errorf("starting pod %s: %w", name, containerError(all[i].Name, nodeagent.ReasonRunContainerError, err))
		}
	}
	created = true
	log.Info("created pod", "podman_pod", name, "id", podID)
	return nil
}

// startSandbox starts the infra container of the podman pod podID, the
// pod's sandbox, and returns its IP ("" if it has none).
func (r *Runtime) startSandbox(ctx context.Context, podID string) (string, error) {
	pctx := r.ctx(ctx)
	rep, err := pods.Start(pctx, podID, nil)
	if err != nil {
		return "", fmt.Errorf("starting the pod's infra container: %w", err)
	}
	if rep != nil && len(rep.Errs) > 0 {
		return "", fmt.Errorf("starting the pod's infra container: %w", errors.Join(rep.Errs...))
	}
	data, err := pods.Inspect(pctx, podID, nil)
	if err != nil {
		return "", fmt.Errorf("inspecting pod %s: %w", podID, err)
	}
	if data.InfraContainerID == "" {
		return "", nil
	}
	return r.podIP(ctx, data.InfraContainerID)
}

// containerError wraps err as a *nodeagent.ContainerError of container,
// unless the runtime could not be reached at all.
func containerError(container, reason string, err error) error {
	if ce := (*nodeagent.ContainerError)(nil); errors.As(err, &ce) {
		return err // classified already
	}
	err = classify(err)
	if errors.Is(err, nodeagent.ErrRuntimeUnavailable) {
		return err
	}
	return &nodeagent.ContainerError{Container: container, Reason: reason, Err: err}
}

// ensureImage makes sure the image of c exists locally, pulling it as c's
// pull policy says, and returns the reference to create the container with.
func (r *Runtime) ensureImage(ctx context.Context, w *bridge.Workload, c *bridge.Container) (string, error) {
	ref := normalizeImage(c.Image)
	local, err := r.localImage(ctx, ref, c.Image)
	if err != nil {
		return "", containerError(c.Name, nodeagent.ReasonErrImagePull, err)
	}
	switch c.ImagePullPolicy {
	case bridge.PullNever:
		if local == "" {
			return "", &nodeagent.ContainerError{Container: c.Name, Reason: nodeagent.ReasonErrImageNeverPull,
				Err: fmt.Errorf("image %s is not present and the pull policy is Never", ref)}
		}
		return local, nil
	case bridge.PullAlways:
		if err := r.pull(ctx, w, c, ref); err != nil {
			if local != "" {
				// Devices are often offline: run what we have.
				r.log.Warn("pulling image failed, using the local one", "image", local, "err", err)
				return local, nil
			}
			return "", containerError(c.Name, nodeagent.ReasonErrImagePull, err)
		}
		return ref, nil
	default: // IfNotPresent
		if local != "" {
			return local, nil
		}
		if err := r.pull(ctx, w, c, ref); err != nil {
			return "", containerError(c.Name, nodeagent.ReasonErrImagePull, err)
		}
		return ref, nil
	}
}

// localImage returns the reference under which the image exists locally:
// the normalized one, or else the one as written, which podman resolves
// itself (an image built on the device is "localhost/<name>", and "<name>"
// finds it). It returns "" when neither exists.
func (r *Runtime) localImage(ctx context.Context, normalized, raw string) (string, error) {
	for _, ref := range []string{normalized, raw} {
		exists, err := images.Exists(r.ctx(ctx), ref, nil)
		if err != nil {
			return "", fmt.Errorf("looking up image %s: %w", ref, classify(err))
		}
		if exists {
			return ref, nil
		}
		if raw == normalized {
			break
		}
	}
	return "", nil
}

// normalizeImage spells an image reference as Kubernetes reads it: short
// names are Docker Hub's ("nginx" → "docker.io/library/nginx:latest"), a
// missing tag is "latest". A reference it cannot parse stays as it is.
func normalizeImage(image string) string {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return image
	}
	return reference.TagNameOnly(named).String()
}
