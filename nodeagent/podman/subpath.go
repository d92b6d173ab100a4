//go:build remote

package podman

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// mountSource returns the host path to bind for the mount of subPath
// (relative, "" for the whole volume) of this volume into the index-th
// mount of container.
//
// As kubelet: a subPath that does not exist is created as a directory; one
// that leads outside the volume through a symlink is refused. The subPath
// of a Files volume is a copy taken now, in a directory of the container's
// own, so that it keeps its content when the volume is updated (kubelet's
// subPath mounts do not receive updates) and when the container restarts.
func (src volumeSource) mountSource(container string, index int, subPath string) (string, error) {
	if subPath == "" {
		return src.path, nil
	}
	// kubelet's checks and messages (makeMounts): no absolute path, no
	// ".." anywhere, even where cleaning would remove it.
	if filepath.IsAbs(filepath.FromSlash(subPath)) {
		return "", fmt.Errorf("error SubPath `%s` must not be an absolute path", subPath)
	}
	if slices.Contains(strings.Split(filepath.ToSlash(subPath), "/"), "..") {
		return "", fmt.Errorf("unable to provision SubPath `%s`: must not contain '..'", subPath)
	}
	rel := filepath.Clean(filepath.FromSlash(subPath))
	if rel == "." {
		return "", fmt.Errorf("subPath %q must be a relative path inside the volume", subPath)
	}
	root, err := filepath.EvalSymlinks(src.path)
	if err != nil {
		return "", fmt.Errorf("subPath %q: %w", subPath, err)
	}
	target := filepath.Join(root, rel)
	resolved, err := filepath.EvalSymlinks(target)
	if errors.Is(err, fs.ErrNotExist) {
		if src.files {
			resolved = "" // an empty directory, as kubelet makes one
		} else {
			if err := makeSubPathDir(root, rel); err != nil {
				return "", fmt.Errorf("subPath %q: %w", subPath, err)
			}
			resolved, err = filepath.EvalSymlinks(target)
		}
	}
	if err != nil {
		return "", fmt.Errorf("subPath %q: %w", subPath, err)
	}
	if resolved != "" && resolved != root && !strings.HasPrefix(resolved, root+string(filepath.Separator)) {
		return "", fmt.Errorf("subPath %q leads outside the volume", subPath)
	}
	if !src.files {
		return resolved, nil
	}
	dst := filepath.Join(src.subPathDir, safeSegment(container), strconv.Itoa(index))
	if err := os.RemoveAll(dst); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	if resolved == "" {
		if err := os.Mkdir(dst, 0o755); err != nil {
			return "", err
		}
		return dst, nil
	}
	if err := copyTree(resolved, dst); err != nil {
		return "", fmt.Errorf("subPath %q: copying: %w", subPath, err)
	}
	return dst, nil
}

// makeSubPathDir creates rel below root with root's permissions, refusing
// to follow a symlink out of root on the way.
func makeSubPathDir(root, rel string) error {
	info, err := os.Stat(root)
	if err != nil {
		return err
	}
	cur := root
	for _, seg := range strings.Split(rel, string(filepath.Separator)) {
		cur = filepath.Join(cur, seg)
		fi, err := os.Lstat(cur)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(cur, info.Mode().Perm()); err != nil {
				return err
			}
			if err := os.Chmod(cur, info.Mode().Perm()); err != nil {
				return err
			}
		case err != nil:
			return err
		case fi.Mode()&fs.ModeSymlink != 0:
			r, err := filepath.EvalSymlinks(cur)
			if err != nil {
				return err
			}
			if !strings.HasPrefix(r, root+string(filepath.Separator)) {
				return fmt.Errorf("%s leads outside the volume", cur)
			}
		}
	}
	return nil
}

// copyTree copies the file or directory src to dst, keeping modes and
// owners.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		info, err := os.Stat(p) // through the volume's own symlinks
		if err != nil {
			return err
		}
		if info.IsDir() {
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
		} else if err := copyFile(p, out); err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			if err := os.Lchown(out, int(st.Uid), int(st.Gid)); err != nil {
				return err
			}
		}
		return os.Chmod(out, info.Mode()&(fs.ModePerm|fs.ModeSetgid))
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}
