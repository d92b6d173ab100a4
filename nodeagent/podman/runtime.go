//go:build remote

package podman

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/system"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// Available reports whether this build talks to podman: it needs the build
// tags "remote containers_image_openpgp exclude_graphdriver_btrfs".
const Available = true

// DefaultStateRoot is the directory under which a Runtime keeps the files of
// its volumes when WithStateDir is not given: DefaultStateRoot/<device>.
const DefaultStateRoot = "/var/lib/vk-fleet"

// Runtime runs the pods of one device in podman. Create it with New.
type Runtime struct {
	device   string
	uri      string
	base     context.Context // New's context, without its values: bounds every connection
	stateDir string
	log      *slog.Logger
	creds    PullCredentialsFunc
	// resolvConf is the device's resolv.conf; "" means the system's.
	resolvConf string

	mu   sync.Mutex
	conn context.Context // carries the bindings connection; only its values are used; nil until connected

	netns netnsCache
}

var _ nodeagent.Runtime = (*Runtime)(nil)

// PullCredentialsFunc returns the registry credentials for pulling image for
// workload w. An empty username means an anonymous pull.
type PullCredentialsFunc func(ctx context.Context, w *bridge.Workload, image string) (username, password string, err error)

// An Option configures a Runtime.
type Option func(*Runtime)

// WithStateDir sets the directory where the Runtime writes the files of
// emptyDir, ConfigMap and Secret volumes (<dir>/volumes/<pod UID>/<volume>).
// podman bind-mounts them, so the directory must be visible to the podman
// service at the same path. The default is DefaultStateRoot/<device>.
func WithStateDir(dir string) Option {
	return func(r *Runtime) { r.stateDir = dir }
}

// WithLogger sets the logger; the Runtime adds the attribute device.
// The default is slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(r *Runtime) {
		if l != nil {
			r.log = l
		}
	}
}

// WithResolvConf sets the device resolv.conf that pods with a dnsConfig
// extend (tests). The default is /etc/resolv.conf (systemd-resolved's
// upstream list when it is the stub resolver's).
func WithResolvConf(path string) Option {
	return func(r *Runtime) { r.resolvConf = path }
}

// WithPullCredentials sets the function that supplies registry credentials
// for image pulls. Without it every pull is anonymous.
func WithPullCredentials(f PullCredentialsFunc) Option {
	return func(r *Runtime) { r.creds = f }
}

// New returns the Runtime of device on the podman service at uri
// ("unix:///run/podman/podman.sock"). It does not need the service to be up:
// on a device podman.socket may start after the agent, so the service is
// dialled on first use and again after every failed dial, and until it
// answers every call fails with an error wrapping
// nodeagent.ErrRuntimeUnavailable. ctx bounds the Runtime's life.
func New(ctx context.Context, uri, device string, opts ...Option) (*Runtime, error) {
	if device == "" {
		return nil, errors.New("creating podman runtime: empty device name")
	}
	if _, err := url.Parse(uri); err != nil || !strings.Contains(uri, "://") {
		return nil, fmt.Errorf("creating podman runtime: %q is not a podman URL (unix:///run/podman/podman.sock)", uri)
	}
	r := &Runtime{device: device, uri: uri, base: valuesOnly{ctx}, log: slog.Default()}
	for _, o := range opts {
		o(r)
	}
	if r.stateDir == "" {
		r.stateDir = filepath.Join(DefaultStateRoot, device)
	}
	r.log = r.log.With("device", device)
	if err := r.connect(); err != nil {
		r.log.Warn("podman is not reachable yet; retrying on use", "url", uri, "err", err)
	}
	return r, nil
}

// connect dials the service unless r is connected already.
func (r *Runtime) connect() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil {
		return nil
	}
	conn, err := bindings.NewConnection(r.base, r.uri)
	if err != nil {
		return fmt.Errorf("connecting to podman at %s: %w", r.uri, classify(err))
	}
	r.conn = conn
	r.log.Debug("connected to podman", "url", r.uri)
	return nil
}

// Device returns the device whose pods r runs.
func (r *Runtime) Device() string { return r.device }

// Version returns the podman version of the service, e.g. "4.3.1".
func (r *Runtime) Version(ctx context.Context) (string, error) {
	if err := r.connect(); err != nil {
		return "", err
	}
	rep, err := system.Version(r.ctx(ctx), nil)
	if err != nil {
		return "", fmt.Errorf("getting podman version: %w", classify(err))
	}
	if rep.Server == nil || rep.Server.Version == "" {
		return "", errors.New("getting podman version: service reported none")
	}
	return rep.Server.Version, nil
}

// ctx returns a context that ends with ctx and carries the bindings
// connection.
// Callers have called connect first.
func (r *Runtime) ctx(ctx context.Context) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	return connContext{Context: ctx, conn: r.conn}
}

// connContext is a caller's context that also carries the values of the
// bindings connection context, which take precedence.
type connContext struct {
	context.Context
	conn context.Context
}

func (c connContext) Value(key any) any {
	if v := c.conn.Value(key); v != nil {
		return v
	}
	return c.Context.Value(key)
}

// valuesOnly is a context that ends with the one it wraps but carries none
// of its values, so that the connection context New keeps holds only the
// bindings' own values.
type valuesOnly struct{ context.Context }

func (valuesOnly) Value(any) any { return nil }
