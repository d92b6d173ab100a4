//go:build remote

package podman

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containers/podman/v5/pkg/specgen"
	spec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// maxTerminationMessage is kubelet's bound on a termination message.
const maxTerminationMessage = 4096

// terminationLog is the file on the device that a container sees at its
// terminationMessagePath, as kubelet bind-mounts one: it outlives the
// container's own file system, so the message is read after it exits.
func (r *Runtime) terminationLog(uid, container string) string {
	return filepath.Join(r.podVolumesDir(uid), ".termination", safeSegment(container))
}

// mountTerminationLog creates c's termination log and bind-mounts it at
// its terminationMessagePath (default /dev/termination-log).
func (r *Runtime) mountTerminationLog(w *bridge.Workload, c *bridge.Container, s *specgen.SpecGenerator) error {
	path := c.TerminationMessagePath
	if path == "" {
		path = "/dev/termination-log"
	}
	file := r.terminationLog(w.UID, c.Name)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("termination log: %w", err)
	}
	f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY, 0o666)
	if err != nil {
		return fmt.Errorf("termination log: %w", err)
	}
	f.Close()
	// Any user the container runs as may write it, as with kubelet.
	if err := os.Chmod(file, 0o666); err != nil {
		return fmt.Errorf("termination log: %w", err)
	}
	s.Mounts = append(s.Mounts, spec.Mount{Destination: path, Type: "bind", Source: file, Options: []string{"rbind", "rw"}})
	return nil
}

// terminationMessage reads what the container wrote to its termination
// log, up to kubelet's 4 KiB.
func (r *Runtime) terminationMessage(uid, container string) string {
	f, err := os.Open(r.terminationLog(uid, container))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			r.log.Debug("reading a termination message", "uid", uid, "container", container, "err", err)
		}
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, maxTerminationMessage))
	return string(b)
}
