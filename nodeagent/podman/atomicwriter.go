//go:build remote

package podman

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The layout of a Files volume, as kubelet's AtomicWriter makes it:
//
//	<dir>/..2026_11_28_10_00_00.123456/app.conf   the files of one version
//	<dir>/..data -> ..2026_11_28_10_00_00.123456   the current version
//	<dir>/app.conf -> ..data/app.conf              what readers open
//
// An update writes a new version directory, then renames a new "..data"
// symlink over the old one (one atomic step), so a reader opening any set
// of names through the volume sees all old or all new files, never a mix.
const (
	dataDirName    = "..data"
	newDataDirName = "..data_tmp"
)

// fileEntry is one file of a Files volume to write.
type fileEntry struct {
	data []byte
	mode fs.FileMode
}

// payload checks and cleans the names of files and attaches their modes
// (modes: name → permission bits; absent: 0644).
func payload(files map[string][]byte, modes map[string]int32) (map[string]fileEntry, error) {
	out := make(map[string]fileEntry, len(files))
	for name, data := range files {
		rel := filepath.Clean(filepath.FromSlash(name))
		if rel == "." || filepath.IsAbs(rel) || strings.HasPrefix(rel, "..") {
			return nil, fmt.Errorf("invalid file name %q", name)
		}
		mode := fs.FileMode(0o644)
		if m, ok := modes[name]; ok {
			mode = fs.FileMode(m) & fs.ModePerm
		}
		out[rel] = fileEntry{data: data, mode: mode}
	}
	return out, nil
}

// writeAtomic makes dir hold exactly files as one atomic update, owned by
// group gid when it is not nil (readable by the group, as kubelet's fsGroup
// makes a read-only volume). It reports whether anything changed: an
// identical set is left alone.
func writeAtomic(dir string, files map[string]fileEntry, gid *int64) (bool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	dataLink := filepath.Join(dir, dataDirName)
	oldVersion, err := os.Readlink(dataLink)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("reading %s: %w", dataLink, err)
	}
	if oldVersion != "" && sameFiles(filepath.Join(dir, oldVersion), files, gid) && userLinksCurrent(dir, files) {
		return false, nil
	}

	// 1. The new version, complete, before anyone can see it.
	version, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return false, err
	}
	if err := writeVersion(version, files, gid); err != nil {
		os.RemoveAll(version)
		return false, err
	}
	// 2. Swap ..data to it: a symlink renamed over the old one.
	tmpLink := filepath.Join(dir, newDataDirName)
	if err := os.Remove(tmpLink); err != nil && !errors.Is(err, fs.ErrNotExist) {
		os.RemoveAll(version)
		return false, err
	}
	if err := os.Symlink(filepath.Base(version), tmpLink); err != nil {
		os.RemoveAll(version)
		return false, err
	}
	if err := os.Rename(tmpLink, dataLink); err != nil {
		os.Remove(tmpLink)
		os.RemoveAll(version)
		return false, fmt.Errorf("swapping %s: %w", dataLink, err)
	}
	// 3. Top-level names link through ..data; names gone are removed.
	if err := syncUserLinks(dir, files); err != nil {
		return true, err
	}
	if gid != nil {
		if err := ownLinks(dir, *gid); err != nil {
			return true, err
		}
	}
	// 4. Old versions go.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return true, err
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "..") && n != dataDirName && n != filepath.Base(version) {
			if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
				return true, err
			}
		}
	}
	return true, nil
}

// writeVersion writes files into the new version directory dir.
func writeVersion(dir string, files map[string]fileEntry, gid *int64) error {
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	for rel, f := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode); err != nil { // past the umask
			return err
		}
	}
	if gid != nil {
		return setVolumeOwnership(dir, *gid, true)
	}
	return nil
}

// topLevel returns the first path element of each file name.
func topLevel(files map[string]fileEntry) map[string]bool {
	out := map[string]bool{}
	for rel := range files {
		first, _, _ := strings.Cut(rel, string(filepath.Separator))
		out[first] = true
	}
	return out
}

// userLinksCurrent reports whether dir's top-level names are exactly the
// links files needs.
func userLinksCurrent(dir string, files map[string]fileEntry) bool {
	want := topLevel(files)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		n++
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || !want[e.Name()] || target != filepath.Join(dataDirName, e.Name()) {
			return false
		}
	}
	return n == len(want)
}

// syncUserLinks points each top-level name of files at ..data/<name> and
// removes the names files no longer has.
func syncUserLinks(dir string, files map[string]fileEntry) error {
	want := topLevel(files)
	for name := range want {
		p := filepath.Join(dir, name)
		target := filepath.Join(dataDirName, name)
		if cur, err := os.Readlink(p); err == nil && cur == target {
			continue
		}
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			// Written by an agent before the atomic layout.
			if err := os.RemoveAll(p); err != nil {
				return err
			}
		}
		tmp := filepath.Join(dir, "..link_tmp")
		os.Remove(tmp)
		if err := os.Symlink(target, tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, p); err != nil {
			os.Remove(tmp)
			return err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") || want[e.Name()] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// sameFiles reports whether version dir holds exactly files, with their
// contents and modes.
func sameFiles(dir string, files map[string]fileEntry, gid *int64) bool {
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		f, ok := files[rel]
		if !ok {
			return errDiffers
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := f.mode
		if gid != nil {
			mode |= 0o440
		}
		if info.Mode().Perm() != mode {
			return errDiffers
		}
		cur, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(cur, f.data) {
			return errDiffers
		}
		n++
		return nil
	})
	return err == nil && n == len(files)
}

var errDiffers = errors.New("differs")

// ownLinks gives dir and its top-level entries (the links readers open,
// ..data) group gid, as kubelet's fsGroup walk does (it changes symlinks'
// group too).
func ownLinks(dir string, gid int64) error {
	info, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if err := os.Lchown(dir, -1, int(gid)); err != nil {
		return fmt.Errorf("setting group %d on %s: %w", gid, dir, err)
	}
	if err := os.Chmod(dir, info.Mode().Perm()|fs.ModeSetgid|0o550); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		if err := os.Lchown(filepath.Join(dir, e.Name()), -1, int(gid)); err != nil {
			return fmt.Errorf("setting group %d on %s: %w", gid, e.Name(), err)
		}
	}
	return nil
}
