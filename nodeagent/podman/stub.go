//go:build !remote

package podman

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// This file stands in for the podman runtime in builds without the podman
// build tags, so that `go build ./...`, `go vet ./...` and `go test ./...`
// work without them; such a build cannot run pods.

// Available reports whether this build talks to podman.
const Available = false

// ErrNotBuilt is what every call of this build's Runtime returns.
var ErrNotBuilt = errors.New("this binary was built without podman support: build it with -tags 'remote containers_image_openpgp exclude_graphdriver_btrfs'")

// DefaultStateRoot is the directory under which a Runtime keeps volume files.
const DefaultStateRoot = "/var/lib/vk-fleet"

// Sentinel errors of the Runtime.
var (
	ErrNotFound  = errors.New("not found")
	ErrPodExists = errors.New("pod already exists")
)

// PullCredentialsFunc returns credentials for pulling image.
type PullCredentialsFunc func(ctx context.Context, w *bridge.Workload, image string) (username, password string, err error)

// Option configures a Runtime.
type Option func(*Runtime)

// WithStateDir sets the state directory.
func WithStateDir(string) Option { return func(*Runtime) {} }

// WithLogger sets the logger.
func WithLogger(*slog.Logger) Option { return func(*Runtime) {} }

// WithPullCredentials sets the pull credentials hook.
func WithPullCredentials(PullCredentialsFunc) Option { return func(*Runtime) {} }

// Runtime is unusable in this build.
type Runtime struct{}

var _ nodeagent.Runtime = (*Runtime)(nil)

// New always fails in this build.
func New(context.Context, string, string, ...Option) (*Runtime, error) { return nil, ErrNotBuilt }

// Version fails in this build.
func (*Runtime) Version(context.Context) (string, error) { return "", ErrNotBuilt }

// ListPods fails in this build.
func (*Runtime) ListPods(context.Context) ([]nodeagent.PodState, error) { return nil, ErrNotBuilt }

// CreatePod fails in this build.
func (*Runtime) CreatePod(context.Context, *bridge.Workload, string) error { return ErrNotBuilt }

// StartContainer fails in this build.
func (*Runtime) StartContainer(context.Context, string, string) error { return ErrNotBuilt }

// RemovePod fails in this build.
func (*Runtime) RemovePod(context.Context, string, time.Duration) error { return ErrNotBuilt }

// Events fails in this build.
func (*Runtime) Events(context.Context) (<-chan nodeagent.Event, error) { return nil, ErrNotBuilt }

// ContainerLogs fails: this build cannot reach podman.
func (*Runtime) ContainerLogs(context.Context, string, string, nodeagent.LogOptions) (io.ReadCloser, error) {
	return nil, ErrNotBuilt
}

// Exec fails: this build cannot reach podman.
func (*Runtime) Exec(context.Context, string, string, []string, nodeagent.StreamIO) (int, error) {
	return 0, ErrNotBuilt
}

// Attach fails: this build cannot reach podman.
func (*Runtime) Attach(context.Context, string, string, nodeagent.StreamIO) error { return ErrNotBuilt }

// DialPod fails: this build cannot reach podman.
func (*Runtime) DialPod(context.Context, string, int32) (net.Conn, error) { return nil, ErrNotBuilt }

// PodStats fails: this build cannot reach podman.
func (*Runtime) PodStats(context.Context) ([]nodeagent.PodStats, error) { return nil, ErrNotBuilt }

// StopContainer fails: this build cannot reach podman.
func (*Runtime) StopContainer(context.Context, string, string, time.Duration) error {
	return ErrNotBuilt
}
