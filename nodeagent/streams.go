package nodeagent

import (
	"context"
	"errors"
	"io"
	"net"
	"time"
)

// StreamIO connects a command's standard streams (kubectl exec/attach).
type StreamIO struct {
	Stdin  io.Reader // nil when the client sends no stdin; EOF when it closes stdin
	Stdout io.Writer // nil when not wanted
	Stderr io.Writer // nil when not wanted (always nil with TTY)
	TTY    bool
	Resize <-chan TermSize // window sizes with TTY; nil otherwise
	// Started, when set, is called once the command runs in the
	// container: what the runtime did before it (finding the container,
	// creating the session) took its own time, which an exec probe's
	// timeout does not count.
	Started func()
}

// TermSize is a terminal's size in characters.
type TermSize struct{ Width, Height uint16 }

// ErrNotStarted wraps a runtime's error from before a command or a
// connection started in a container (finding the container, creating the
// session): the runtime failed, not the container. A probe that ends with
// it counts as neither success nor failure, as kubelet discards a probe
// that errored.
var ErrNotStarted = errors.New("not started in the container")

// Execer is a Runtime that runs commands in containers (kubectl exec).
type Execer interface {
	// Exec runs cmd in the container and returns its exit code once it has ended and its output is written.
	Exec(ctx context.Context, podUID, container string, cmd []string, sio StreamIO) (exitCode int, err error)
}

// Attacher is a Runtime that attaches to a container's main process (kubectl attach).
type Attacher interface {
	Attach(ctx context.Context, podUID, container string, sio StreamIO) error
}

// PodDialer is a Runtime that connects to a port inside a pod's network namespace (kubectl port-forward).
type PodDialer interface {
	DialPod(ctx context.Context, podUID string, port int32) (net.Conn, error)
}

// StatsReader is a Runtime that reports its pods' resource usage (kubectl top).
type StatsReader interface {
	PodStats(ctx context.Context) ([]PodStats, error)
}

// PodStats is the resource usage of one pod's containers.
type PodStats struct {
	UID, Namespace, Name string
	Containers           []ContainerStats
}

// ContainerStats is the resource usage of one container.
type ContainerStats struct {
	Name                  string
	StartedAt             time.Time
	Time                  time.Time // when sampled
	CPUNanos              uint64    // cumulative CPU time used, ns
	MemoryWorkingSetBytes uint64
	MemoryUsageBytes      uint64
}
