//go:build remote

package podman

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// volumeSource is where a workload volume lives on the host.
type volumeSource struct {
	path     string
	readOnly bool // mounted read-only whatever the mount asks
	// owned marks a directory the Runtime made for the pod: podman
	// relabels it for SELinux (a host path keeps its label).
	owned bool
	// files marks a Files volume: its subPath mounts are copies.
	files bool
	// subPathDir holds the copies of subPath mounts of Files volumes.
	subPathDir string
	// image is the local reference of an image volume's image (path is
	// then empty): mounted read-only as podman's image mount.
	image string
}

// subPathsDir is the directory, beside a pod's volumes, that holds the
// copies of subPath mounts (no volume is named so: names are DNS labels).
const subPathsDir = ".subpaths"

// podVolumesDir is the directory that holds the volumes of pod uid.
func (r *Runtime) podVolumesDir(uid string) string {
	return filepath.Join(r.stateDir, "volumes", safeSegment(uid))
}

// prepareVolumes creates the host side of w's volumes: a fresh directory per
// emptyDir, the files of a Files volume, nothing for a HostPath. It returns
// the source of every volume by name.
func (r *Runtime) prepareVolumes(w *bridge.Workload) (map[string]volumeSource, error) {
	out := make(map[string]volumeSource, len(w.Volumes))
	base := r.podVolumesDir(w.UID)
	// A pod created again (a new image) starts from fresh volumes, as
	// kubelet's new pod would: unmount what the last creation mounted.
	if err := unmountUnder(base); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(filepath.Join(base, subPathsDir)); err != nil {
		return nil, err
	}
	for _, v := range w.Volumes {
		if _, dup := out[v.Name]; dup {
			return nil, fmt.Errorf("volume %q defined twice", v.Name)
		}
		switch {
		case v.Image != nil:
			out[v.Name] = volumeSource{image: normalizeImage(v.Image.Reference), readOnly: true}
			continue // pulled by ensureVolumeImages
		case v.HostPath != "":
			if !filepath.IsAbs(v.HostPath) {
				return nil, fmt.Errorf("volume %q: host path %q is not absolute", v.Name, v.HostPath)
			}
			out[v.Name] = volumeSource{path: v.HostPath}
		case v.IsFiles():
			// Files may be empty: an optional ConfigMap or Secret that
			// does not exist gives an empty read-only volume, as kubelet's.
			dir := filepath.Join(base, safeSegment(v.Name))
			files, err := payload(v.Files, v.FileModes)
			if err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
			if err := os.RemoveAll(dir); err != nil {
				return nil, fmt.Errorf("volume %q: clearing %s: %w", v.Name, dir, err)
			}
			if _, err := writeAtomic(dir, files, w.FSGroup); err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
			out[v.Name] = volumeSource{path: dir, readOnly: true, owned: true, files: true,
				subPathDir: filepath.Join(base, subPathsDir)}
			continue // owned by fsGroup already
		default: // an emptyDir
			dir := filepath.Join(base, safeSegment(v.Name))
			if err := os.RemoveAll(dir); err != nil {
				return nil, fmt.Errorf("volume %q: clearing %s: %w", v.Name, dir, err)
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
			if v.Medium == bridge.MediumMemory {
				if err := mountTmpfs(dir, v.SizeLimitBytes); err != nil {
					return nil, fmt.Errorf("volume %q: %w", v.Name, err)
				}
			}
			// Like Kubernetes' emptyDir: writable whatever user a container runs as.
			if err := os.Chmod(dir, 0o777); err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
			out[v.Name] = volumeSource{path: dir, owned: true}
		}
		if src := out[v.Name]; w.FSGroup != nil && src.owned {
			if err := setVolumeOwnership(src.path, *w.FSGroup, src.readOnly); err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
		}
	}
	return out, nil
}

// removeVolumes removes the host directories of pod uid's volumes.
func (r *Runtime) removeVolumes(uid string) error {
	if err := unmountUnder(r.podVolumesDir(uid)); err != nil {
		return fmt.Errorf("removing volumes of pod %s: %w", uid, err)
	}
	if err := os.RemoveAll(r.podVolumesDir(uid)); err != nil {
		return fmt.Errorf("removing volumes of pod %s: %w", uid, err)
	}
	return nil
}

// safeSegment makes s usable as one path segment.
func safeSegment(s string) string {
	s = strings.Map(func(c rune) rune {
		if c == '/' || c == '\\' || c == 0 {
			return '_'
		}
		return c
	}, s)
	if s == "" || s == "." || s == ".." {
		s = "_" + s
	}
	return s
}

var _ nodeagent.VolumeUpdater = (*Runtime)(nil)

// UpdateVolumes brings the files of w's Files volumes (ConfigMap, Secret,
// downwardAPI, projected) up to date in place, each as one atomic update
// (see writeAtomic), as kubelet does: files whose keys went away are
// removed, and a volume whose optional source was deleted is emptied.
// Nothing restarts; subPath copies keep their content. A pod not created
// yet is left alone. It also mounts the tmpfs of a Memory emptyDir that is
// missing (a device that rebooted).
func (r *Runtime) UpdateVolumes(_ context.Context, w *bridge.Workload) error {
	base := r.podVolumesDir(w.UID)
	var errs []error
	for _, v := range w.Volumes {
		dir := filepath.Join(base, safeSegment(v.Name))
		if _, err := os.Stat(dir); err != nil {
			continue // not created yet, or not by this runtime
		}
		switch {
		case v.IsFiles():
			if len(v.Files) == 0 && !hasDataLink(dir) {
				// Made a writable empty directory by an agent before
				// Volume.IsFiles: it holds no files to remove, and what a
				// container may have written there stays.
				continue
			}
			files, err := payload(v.Files, v.FileModes)
			if err == nil {
				var changed bool
				if changed, err = writeAtomic(dir, files, w.FSGroup); changed && err == nil {
					r.log.Info("volume files updated", "pod", w.Namespace+"/"+w.Name, "volume", v.Name, "files", len(files))
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("volume %q: %w", v.Name, err))
			}
		case v.EmptyDir && v.Medium == bridge.MediumMemory && !isMountPoint(dir):
			if err := mountTmpfs(dir, v.SizeLimitBytes); err != nil {
				errs = append(errs, fmt.Errorf("volume %q: %w", v.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// hasDataLink reports whether dir has the "..data" link of a Files volume
// (see writeAtomic).
func hasDataLink(dir string) bool {
	_, err := os.Readlink(filepath.Join(dir, dataDirName))
	return err == nil
}
