package podmantest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"time"
)

// Rootfs builds an image's root file system as a tar archive in memory,
// for `podman import`. Its methods keep the first error; WriteFile reports
// it.
type Rootfs struct {
	buf bytes.Buffer
	tw  *tar.Writer
	now time.Time
	err error
}

// NewRootfs returns an empty root file system.
func NewRootfs() *Rootfs {
	r := &Rootfs{now: time.Now()}
	r.tw = tar.NewWriter(&r.buf)
	return r
}

// Add writes h, and data as its content.
func (r *Rootfs) Add(h *tar.Header, data []byte) {
	h.ModTime = r.now
	if r.err == nil {
		r.err = r.tw.WriteHeader(h)
	}
	if r.err == nil && len(data) > 0 {
		_, r.err = r.tw.Write(data)
	}
}

// Dir adds directory name.
func (r *Rootfs) Dir(name string, mode int64) {
	r.Add(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}, nil)
}

// File adds a regular file.
func (r *Rootfs) File(name string, mode int64, data []byte) {
	r.Add(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, data)
}

// Symlink adds a symbolic link name → target.
func (r *Rootfs) Symlink(name, target string) {
	r.Add(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}, nil)
}

// WriteFile closes the archive and writes it to path.
func (r *Rootfs) WriteFile(path string) error {
	if r.err == nil {
		r.err = r.tw.Close()
	}
	if r.err != nil {
		return fmt.Errorf("writing rootfs tar: %w", r.err)
	}
	if err := os.WriteFile(path, r.buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing rootfs tar: %w", err)
	}
	return nil
}
