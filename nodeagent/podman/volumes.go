//go:build remote

package podman

import (
	"bytes"
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
}

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
	for _, v := range w.Volumes {
		if _, dup := out[v.Name]; dup {
			return nil, fmt.Errorf("volume %q defined twice", v.Name)
		}
		switch {
		case v.HostPath != "":
			if !filepath.IsAbs(v.HostPath) {
				return nil, fmt.Errorf("volume %q: host path %q is not absolute", v.Name, v.HostPath)
			}
			out[v.Name] = volumeSource{path: v.HostPath}
		case v.Files != nil:
			dir := filepath.Join(base, safeSegment(v.Name))
			if err := writeFiles(dir, v.Files); err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
			out[v.Name] = volumeSource{path: dir, readOnly: true, owned: true}
		default:
			if !v.EmptyDir {
				r.log.Warn("volume without a source, using an empty directory", "pod", w.Namespace+"/"+w.Name, "volume", v.Name)
			}
			dir := filepath.Join(base, safeSegment(v.Name))
			if err := os.RemoveAll(dir); err != nil {
				return nil, fmt.Errorf("volume %q: clearing %s: %w", v.Name, dir, err)
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
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

// writeFiles replaces the content of dir with files (name → content). A
// name may hold a relative path ("conf/app.yaml").
func writeFiles(dir string, files map[string][]byte) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clearing %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, data := range files {
		rel := filepath.Clean(filepath.FromSlash(name))
		if rel == "." || filepath.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return fmt.Errorf("invalid file name %q", name)
		}
		path := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// removeVolumes removes the host directories of pod uid's volumes.
func (r *Runtime) removeVolumes(uid string) error {
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

// UpdateVolumes rewrites the files of w's ConfigMap and Secret volumes in
// place: changed files are replaced atomically (a rename within the
// directory the containers bind-mount), files no longer present are
// removed. Nothing restarts. A pod not created yet is left alone.
func (r *Runtime) UpdateVolumes(_ context.Context, w *bridge.Workload) error {
	base := r.podVolumesDir(w.UID)
	for _, v := range w.Volumes {
		if v.Files == nil {
			continue
		}
		dir := filepath.Join(base, safeSegment(v.Name))
		if _, err := os.Stat(dir); err != nil {
			continue // not created yet, or not by this runtime
		}
		if err := syncFiles(dir, v.Files); err != nil {
			return fmt.Errorf("volume %q: %w", v.Name, err)
		}
		if w.FSGroup != nil {
			if err := setVolumeOwnership(dir, *w.FSGroup, true); err != nil {
				return fmt.Errorf("volume %q: %w", v.Name, err)
			}
		}
	}
	return nil
}

// syncFiles makes dir hold exactly files, touching only what differs.
func syncFiles(dir string, files map[string][]byte) error {
	want := map[string]bool{}
	for name, data := range files {
		rel := filepath.Clean(filepath.FromSlash(name))
		if rel == "." || filepath.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return fmt.Errorf("invalid file name %q", name)
		}
		want[rel] = true
		path := filepath.Join(dir, rel)
		if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, data) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		tmp, err := os.CreateTemp(filepath.Dir(path), ".vkf-*")
		if err != nil {
			return err
		}
		_, werr := tmp.Write(data)
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o644)); err != nil {
			os.Remove(tmp.Name())
			return err
		}
		if err := os.Rename(tmp.Name(), path); err != nil {
			os.Remove(tmp.Name())
			return err
		}
	}
	return filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if !want[rel] {
			return os.Remove(path)
		}
		return nil
	})
}
