package devcluster

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vk-fleet/vk-fleet/test/framework/bincache"
	"github.com/vk-fleet/vk-fleet/test/framework/controlplane"
	"github.com/vk-fleet/vk-fleet/test/framework/podmantest"
	"github.com/vk-fleet/vk-fleet/test/framework/registry"
)

// BuildTags are the tags the device agent (podman bindings) builds with.
const BuildTags = "remote containers_image_openpgp exclude_graphdriver_btrfs"

// EnvBinDir names a directory holding prebuilt vk-fleet, device-agent and
// fleetctl binaries; without it Start builds them into <Dir>/bin.
const EnvBinDir = "VKF_BIN_DIR"

// Config configures a development cluster.
type Config struct {
	// Dir holds everything: logs, state, sockets. Keep it short (unix
	// socket paths are limited to 108 bytes).
	Dir string
	// Devices are started as device-agents.
	Devices []string
	// NodeMonitorGracePeriod of the controller-manager. Default 20s.
	NodeMonitorGracePeriod time.Duration
	// HeartbeatInterval of the agents. Default 2s.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout of the provider. Default 8s.
	HeartbeatTimeout time.Duration
	Logger           *slog.Logger
	// PrivateRegistry starts Cluster.Registry, an in-process registry with
	// basic auth that the cluster's podman pulls from over plain HTTP.
	PrivateRegistry bool
}

// Cluster is a running development installation.
type Cluster struct {
	cfg Config

	CP       *controlplane.ControlPlane
	Podman   *podmantest.Service
	Client   kubernetes.Interface
	Image    string
	NATSURL  string
	Provider *Process
	// Registry is the private registry (Config.PrivateRegistry), or nil.
	Registry *registry.Registry

	// KubeletPort is where vk-fleet serves the kubelet API (kubectl logs).
	KubeletPort int
	// HealthAddr is where vk-fleet serves /healthz, /readyz and /metrics.
	HealthAddr string

	binDir      string
	kubeletCert string
	kubeletKey  string
	natsPort    int
	kubeconfig  string

	mu        sync.Mutex
	agents    map[string]*Process
	agentArgs map[string][]string // extra flags of each agent
}

// Start starts the control plane, podman, the provider and cfg.Devices.
// On error it stops whatever it started.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if cfg.NodeMonitorGracePeriod == 0 {
		cfg.NodeMonitorGracePeriod = 20 * time.Second
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = 2 * time.Second
	}
	if cfg.HeartbeatTimeout == 0 {
		cfg.HeartbeatTimeout = 8 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating cluster directory: %w", err)
	}
	c := &Cluster{cfg: cfg, agents: map[string]*Process{}, Image: podmantest.Image}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	log := cfg.Logger

	if c.binDir, err = binaries(ctx, cfg.Dir, log); err != nil {
		return nil, err
	}

	bin, err := controlplane.BinDir()
	if err != nil {
		return nil, err
	}
	log.Info("starting control plane")
	c.CP, err = controlplane.Start(ctx, controlplane.Config{
		BinDir: bin, Dir: filepath.Join(cfg.Dir, "cp"), NodeMonitorGracePeriod: cfg.NodeMonitorGracePeriod, Logger: log,
		// vk-fleet's kubelet API is verified as a kubelet's would be.
		VerifyKubeletServingCerts: true,
	})
	if err != nil {
		return nil, err
	}
	if c.Client, err = kubernetes.NewForConfig(c.CP.RESTConfig); err != nil {
		return nil, fmt.Errorf("creating kubernetes client: %w", err)
	}

	log.Info("starting podman service")
	pdir := filepath.Join(cfg.Dir, "podman")
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return nil, fmt.Errorf("creating podman directory: %w", err)
	}
	if cfg.PrivateRegistry {
		// Before the service: podman reads registries.conf once.
		if c.Registry, err = registry.Start("puller", rand.Text()); err != nil {
			return nil, err
		}
		if _, err := podmantest.RegistriesConf(pdir, c.Registry.Host); err != nil {
			return nil, err
		}
	}
	if c.Podman, err = podmantest.StartService(ctx, pdir); err != nil {
		return nil, err
	}
	if err := podmantest.BuildBusyboxImage(ctx, c.Podman.Conf, c.Image); err != nil {
		return nil, err
	}

	if c.kubeconfig, err = c.CP.ClientKubeconfig("vk-fleet", "system:masters"); err != nil {
		return nil, err
	}
	if c.natsPort, err = FreePort(); err != nil {
		return nil, err
	}
	if c.KubeletPort, err = FreePort(); err != nil {
		return nil, err
	}
	healthPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	c.HealthAddr = "127.0.0.1:" + itoa(healthPort)
	cert, key, err := c.CP.ServingCert("127.0.0.1", "localhost")
	if err != nil {
		return nil, err
	}
	c.kubeletCert, c.kubeletKey = filepath.Join(cfg.Dir, "kubelet.crt"), filepath.Join(cfg.Dir, "kubelet.key")
	if err := os.WriteFile(c.kubeletCert, cert, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.kubeletKey, key, 0o600); err != nil {
		return nil, err
	}
	c.NATSURL = "tls://127.0.0.1:" + itoa(c.natsPort)
	if err := c.StartProvider(ctx); err != nil {
		return nil, err
	}
	for _, d := range cfg.Devices {
		if err := c.Enroll(ctx, d); err != nil {
			return nil, err
		}
		if err := c.StartAgent(ctx, d); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Fleetctl runs the fleetctl binary with the admin kubeconfig.
func (c *Cluster) Fleetctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, "fleetctl"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.CP.Kubeconfig)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("fleetctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Binary returns the path of the cluster's vk-fleet, device-agent or
// fleetctl binary.
func (c *Cluster) Binary(name string) string { return filepath.Join(c.binDir, name) }

// AgentStateDir is the agent's --state-dir of device (its store is in
// workloads/).
func (c *Cluster) AgentStateDir(device string) string {
	return filepath.Join(c.cfg.Dir, "agents", device)
}

// DeviceRoot is the directory `fleetctl enroll --root` writes device's
// files into.
func (c *Cluster) DeviceRoot(device string) string {
	return filepath.Join(c.cfg.Dir, "devices", device)
}

// CAFile holds the NATS CA, as `fleetctl ca` prints it.
func (c *Cluster) CAFile() string { return filepath.Join(c.cfg.Dir, "nats-ca.crt") }

// Enroll enrolls device the way an admin and a person at the device would:
// `fleetctl token create`, then `fleetctl enroll` on the device.
func (c *Cluster) Enroll(ctx context.Context, device string, labels ...string) error {
	return c.EnrollWith(ctx, device, EnrollOptions{Labels: labels})
}

// EnrollOptions vary a device's enrollment; zero values take the cluster's.
type EnrollOptions struct {
	// PodmanURI is the podman service the agent uses.
	PodmanURI string
	// NATSURL is where the device reaches NATS (a netcut proxy, say).
	NATSURL string
	Labels  []string
}

// EnrollWith is Enroll with options.
func (c *Cluster) EnrollWith(ctx context.Context, device string, o EnrollOptions) error {
	if o.PodmanURI == "" {
		o.PodmanURI = c.Podman.URI
	}
	if o.NATSURL == "" {
		o.NATSURL = c.NATSURL
	}
	podmanURI, labels := o.PodmanURI, o.Labels
	if _, err := os.Stat(c.CAFile()); err != nil {
		ca, err := c.Fleetctl(ctx, "ca")
		if err != nil {
			return err
		}
		if err := os.WriteFile(c.CAFile(), []byte(ca), 0o644); err != nil {
			return fmt.Errorf("writing CA file: %w", err)
		}
	}
	token, err := c.Fleetctl(ctx, "token", "create", "--ttl", "10m")
	if err != nil {
		return err
	}
	args := []string{"enroll", "--server", o.NATSURL, "--token", strings.TrimSpace(token), "--name", device,
		"--ca", c.CAFile(), "--root", c.DeviceRoot(device),
		"--state-dir", c.AgentStateDir(device), "--podman-url", podmanURI}
	for _, l := range labels {
		args = append(args, "--label", l)
	}
	_, err = c.Fleetctl(ctx, args...)
	return err
}

// StartProvider starts (or restarts) the vk-fleet process, with extra flags.
func (c *Cluster) StartProvider(ctx context.Context, extra ...string) error {
	if c.Provider != nil && !c.Provider.Exited() {
		return errors.New("provider already running")
	}
	args := append([]string{
		"--kubeconfig", c.kubeconfig,
		"--nats-listen", "127.0.0.1:" + itoa(c.natsPort),
		"--nats-store-dir", c.NATSStoreDir(),
		"--node-address", "127.0.0.1",
		"--heartbeat-timeout", c.cfg.HeartbeatTimeout.String(),
		"--health-listen", c.HealthAddr,
		"--log-level", "debug",
		"--kubelet-port", itoa(c.KubeletPort),
		"--kubelet-listen", "127.0.0.1:" + itoa(c.KubeletPort),
		"--kubelet-tls-cert", c.kubeletCert, "--kubelet-tls-key", c.kubeletKey,
		"--kubelet-client-ca-file", c.CP.CAFile,
	}, extra...)
	p, err := StartProcess("vk-fleet", filepath.Join(c.cfg.Dir, "vk-fleet.log"), nil, filepath.Join(c.binDir, "vk-fleet"), args...)
	if err != nil {
		return err
	}
	c.Provider = p
	return waitTCP(ctx, "127.0.0.1:"+itoa(c.natsPort), p)
}

// NATSStoreDir is the embedded NATS server's store (--nats-store-dir).
func (c *Cluster) NATSStoreDir() string { return filepath.Join(c.cfg.Dir, "nats") }

// StopProvider stops the vk-fleet process.
func (c *Cluster) StopProvider() {
	if c.Provider != nil {
		c.Provider.Stop(10 * time.Second)
	}
}

// StartAgent starts (or restarts) the device-agent of device, with the
// extra flags it was last started with (StartAgentWith).
func (c *Cluster) StartAgent(ctx context.Context, device string) error {
	c.mu.Lock()
	extra := c.agentArgs[device]
	c.mu.Unlock()
	return c.StartAgentWith(ctx, device, extra...)
}

// StartAgentWith starts (or restarts) the device-agent of device with extra
// flags (e.g. --eviction-hard), which later StartAgent calls keep.
func (c *Cluster) StartAgentWith(_ context.Context, device string, extra ...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.agents[device]; p != nil && !p.Exited() {
		return fmt.Errorf("agent %s already running", device)
	}
	args := append([]string{
		"--config", filepath.Join(c.DeviceRoot(device), "etc/vk-fleet/agent.json"),
		"--heartbeat-interval", c.cfg.HeartbeatInterval.String(),
		"--resync-interval", "5s",
		"--address", "127.0.0.1",
		"--log-level", "debug",
	}, extra...)
	p, err := StartProcess("agent-"+device, filepath.Join(c.cfg.Dir, "agent-"+device+".log"), nil,
		filepath.Join(c.binDir, "device-agent"), args...)
	if err != nil {
		return err
	}
	c.agents[device] = p
	if c.agentArgs == nil {
		c.agentArgs = map[string][]string{}
	}
	c.agentArgs[device] = extra
	return nil
}

// StopAgent stops the device-agent of device gracefully; its pods keep running.
func (c *Cluster) StopAgent(device string) {
	c.mu.Lock()
	p := c.agents[device]
	c.mu.Unlock()
	if p != nil {
		p.Stop(10 * time.Second)
	}
}

// Agent returns the process of device's agent.
func (c *Cluster) Agent(device string) *Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.agents[device]
}

// Stop stops every process, in reverse start order. It is idempotent.
func (c *Cluster) Stop() {
	c.mu.Lock()
	agents := c.agents
	c.agents = map[string]*Process{}
	c.mu.Unlock()
	for _, p := range agents {
		p.Stop(10 * time.Second)
	}
	if c.Provider != nil {
		c.Provider.Stop(10 * time.Second)
	}
	if c.Podman != nil {
		_ = c.Podman.Stop()
	}
	c.removeDevicePods()
	unmountUnder(c.cfg.Dir)
	if c.Registry != nil {
		c.Registry.Close()
	}
	if c.CP != nil {
		_ = c.CP.Stop()
	}
}

// removeDevicePods removes what the devices left running in podman (by
// design agents leave their pods running when they stop): everything in
// the cluster's own podman storage, which nothing else uses.
func (c *Cluster) removeDevicePods() {
	if c.Podman == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := podmantest.Reset(ctx, c.Podman.Conf); err != nil {
		c.cfg.Logger.Warn("resetting the cluster's podman storage", "err", err)
	}
}

// WaitNodesReady waits until every device has a Ready Node.
func (c *Cluster) WaitNodesReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ready := 0
		for _, d := range c.cfg.Devices {
			n, err := c.Client.CoreV1().Nodes().Get(ctx, d, metav1.GetOptions{})
			if err == nil && NodeReady(n) == corev1.ConditionTrue {
				ready++
			}
		}
		if ready == len(c.cfg.Devices) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d device nodes to be Ready (%d are): %w\nprovider log:\n%s", len(c.cfg.Devices), ready, ctx.Err(), c.Provider.Tail(30))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// NodeReady returns the status of n's Ready condition.
func NodeReady(n *corev1.Node) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

// binaries builds vk-fleet and device-agent into dir/bin unless EnvBinDir
// names a directory that has them.
func binaries(ctx context.Context, dir string, log *slog.Logger) (string, error) {
	if d := os.Getenv(EnvBinDir); d != "" {
		return d, nil
	}
	root, err := bincache.ModuleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "bin")
	log.Info("building vk-fleet and device-agent", "dir", out)
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", BuildTags, "-o", out+"/", "./cmd/vk-fleet", "./cmd/device-agent", "./cmd/fleetctl")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building binaries: %w\n%s", err, b)
	}
	return out, nil
}

func waitTCP(ctx context.Context, addr string, p *Process) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	d := net.Dialer{Timeout: time.Second}
	for {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			conn.Close()
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%s: %w:\n%s", p.Name, errExited, p.Tail(30))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s at %s: %w\n%s", p.Name, addr, ctx.Err(), p.Tail(30))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
