package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vk-fleet/vk-fleet/internal/pki"
	"k8s.io/client-go/rest"
)

// Config says which binaries to run and where to keep their state.
type Config struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler and kubectl (see BinDir).
	BinDir string
	// Dir is the working directory for etcd data, certificates,
	// kubeconfigs and the processes' logs (<Dir>/<process>.log). Tests pass
	// t.TempDir(). If empty, Start creates a temporary directory; it is
	// not removed by Stop, so the logs survive.
	Dir string
	// NodeMonitorGracePeriod is kube-controller-manager's
	// --node-monitor-grace-period: how long a Node may go without a
	// heartbeat before it is marked NotReady. Zero keeps the component
	// default (50s in v1.37). Tests pass something like 16s.
	NodeMonitorGracePeriod time.Duration
	// VerifyKubeletServingCerts makes the API server verify the serving
	// certificate of kubelets (virtual-kubelets) against the cluster CA
	// (--kubelet-certificate-authority). Kubelets then need a certificate
	// from ServingCert. Off by default, as in kubeadm clusters.
	VerifyKubeletServingCerts bool
	// Logger receives progress messages. Nil discards them.
	Logger *slog.Logger
	// Extra flags appended to the respective command lines; a flag given
	// again here overrides Start's value. For example
	// "--use-service-account-credentials=false" for the controller manager
	// makes Start about 5s faster (it then skips minting a ServiceAccount
	// and token per controller), at the price of less realistic RBAC.
	ExtraAPIServerArgs         []string
	ExtraControllerManagerArgs []string
	ExtraSchedulerArgs         []string
}

// ControlPlane is a running etcd, kube-apiserver, kube-controller-manager
// and kube-scheduler on loopback addresses. Its exported fields are set by
// Start and must not be modified.
type ControlPlane struct {
	// Dir is the working directory (Config.Dir, or the one Start made).
	Dir string
	// APIServerURL is the API server's address, https://127.0.0.1:<port>.
	APIServerURL string
	// EtcdURL is etcd's client address, http://127.0.0.1:<port>.
	EtcdURL string
	// Kubeconfig is the path of a cluster-admin kubeconfig (user "admin"
	// in group system:masters).
	Kubeconfig string
	// RESTConfig is the admin client configuration. Use rest.CopyConfig
	// before changing it.
	RESTConfig *rest.Config
	// CAFile and CACertPEM are the cluster CA certificate. It signed the
	// API server's serving certificate and every client certificate the
	// API server accepts, including the one it presents to kubelets
	// (KubeletClientCert): a kubelet's HTTPS server verifies the API server
	// with it.
	CAFile    string
	CACertPEM []byte
	// KubeletClientCertFile and KubeletClientKeyFile are the client
	// certificate the API server presents to kubelets (logs, exec):
	// CN=kube-apiserver-kubelet-client, O=system:masters.
	KubeletClientCertFile string
	KubeletClientKeyFile  string

	cfg   Config
	log   *slog.Logger
	ca    *pki.Authority
	files *pkiFiles

	mu      sync.Mutex
	procs   []*process // in start order
	stopped bool
}

// Process describes one process of the control plane.
type Process struct {
	Name    string
	PID     int
	LogPath string
}

// Startup deadlines per phase; the context passed to Start can shorten
// them.
const (
	etcdTimeout        = 30 * time.Second
	apiserverTimeout   = 90 * time.Second
	controllersTimeout = 60 * time.Second
	pollInterval       = 200 * time.Millisecond
)

// Settings of the cluster that clients may rely on.
const (
	ServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"
	ServiceClusterIPs    = "10.96.0.0/16"
)

// Start generates certificates, starts etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler on free loopback ports, and
// returns once the API server is ready, both controllers are healthy and
// the default ServiceAccount of namespace "default" exists (so pods can
// be created). If a process loses a race for its port, Start retries once
// with new ports. On error everything started is stopped again.
//
// ctx bounds the start only; the processes run until Stop.
func Start(ctx context.Context, cfg Config) (*ControlPlane, error) {
	begin := time.Now()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "controlplane")
	if err := checkBinaries(cfg.BinDir); err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "vkf-controlplane-")
		if err != nil {
			return nil, fmt.Errorf("creating working dir: %w", err)
		}
		cfg.Dir = d
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("resolving working dir: %w", err)
	}
	cfg.Dir = dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating working dir: %w", err)
	}
	ca, files, err := writePKI(filepath.Join(dir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("generating certificates: %w", err)
	}
	log.Debug("certificates generated", "dir", dir, "took", time.Since(begin).Round(time.Millisecond))

	for attempt := 1; ; attempt++ {
		c := &ControlPlane{
			Dir:                   dir,
			Kubeconfig:            filepath.Join(dir, "kubeconfig", "admin.kubeconfig"),
			CAFile:                files.caCert,
			CACertPEM:             ca.CertPEM,
			KubeletClientCertFile: files.kubeletClientCert,
			KubeletClientKeyFile:  files.kubeletClientKey,
			cfg:                   cfg,
			log:                   log,
			ca:                    ca,
			files:                 files,
		}
		err := c.start(ctx)
		if err == nil {
			log.Info("control plane ready", "apiserver", c.APIServerURL, "dir", dir,
				"took", time.Since(begin).Round(time.Millisecond))
			return c, nil
		}
		stopErr := c.Stop()
		var exit *exitError
		if attempt == 1 && stopErr == nil && ctx.Err() == nil && errors.As(err, &exit) && exit.addrInUse() {
			log.Warn("lost a race for a port, retrying with new ports", "process", exit.name)
			c.keepLogs("attempt-1")
			continue
		}
		return nil, errors.Join(err, stopErr)
	}
}

// start runs one attempt of Start on fresh ports.
func (c *ControlPlane) start(ctx context.Context) error {
	ports, err := pickPorts(5)
	if err != nil {
		return err
	}
	etcdPort, etcdPeerPort, apiPort, kcmPort, schedPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	c.EtcdURL = "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	c.APIServerURL = "https://127.0.0.1:" + strconv.Itoa(apiPort)

	if err := c.writeKubeconfigs(); err != nil {
		return err
	}

	if err := c.startEtcd(ctx, etcdPeerPort); err != nil {
		return err
	}
	if err := c.startAPIServer(ctx, apiPort); err != nil {
		return err
	}
	if err := c.startControllers(ctx, kcmPort, schedPort); err != nil {
		return err
	}
	return c.waitFor(ctx, "default service account", controllersTimeout, c.defaultServiceAccountExists)
}

// writeKubeconfigs writes the admin kubeconfig and the controllers'
// kubeconfigs, which name the API server's port.
func (c *ControlPlane) writeKubeconfigs() error {
	certPEM, keyPEM, err := c.ca.ClientCert("admin", "system:masters")
	if err != nil {
		return err
	}
	if err := writeKubeconfig(c.Kubeconfig, c.APIServerURL, c.ca.CertPEM, certPEM, keyPEM, "admin"); err != nil {
		return err
	}
	c.RESTConfig = restConfig(c.APIServerURL, c.ca.CertPEM, certPEM, keyPEM)
	for _, user := range []string{"system:kube-controller-manager", "system:kube-scheduler"} {
		certPEM, keyPEM, err := c.ca.ClientCert(user)
		if err != nil {
			return err
		}
		if err := writeKubeconfig(c.componentKubeconfig(user), c.APIServerURL, c.ca.CertPEM, certPEM, keyPEM, user); err != nil {
			return err
		}
	}
	return nil
}

func (c *ControlPlane) componentKubeconfig(user string) string {
	return filepath.Join(c.Dir, "kubeconfig", fileName(user)+".kubeconfig")
}

func (c *ControlPlane) startEtcd(ctx context.Context, peerPort int) error {
	dataDir := filepath.Join(c.Dir, "etcd")
	// A retry must not find the first attempt's member data.
	if err := os.RemoveAll(dataDir); err != nil {
		return fmt.Errorf("clearing etcd data dir: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("creating etcd data dir: %w", err)
	}
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	args := []string{
		"--name=default",
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + c.EtcdURL,
		"--advertise-client-urls=" + c.EtcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL,
		"--initial-cluster-state=new",
		// Tests do not survive a power cut; fsync dominates etcd latency.
		"--unsafe-no-fsync",
	}
	if _, err := c.run("etcd", args); err != nil {
		return err
	}
	return c.waitFor(ctx, "etcd", etcdTimeout, c.etcdHealthy)
}

func (c *ControlPlane) startAPIServer(ctx context.Context, port int) error {
	f := c.files
	args := []string{
		"--etcd-servers=" + c.EtcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		// Loopback advertise addresses are refused by the default lease
		// reconciler; nothing in-cluster needs the kubernetes Endpoints.
		"--endpoint-reconciler-type=none",
		// Unused since the serving certificate is given, but keeps the
		// default /var/run/kubernetes out of the picture.
		"--cert-dir=" + filepath.Join(c.Dir, "apiserver"),
		"--tls-cert-file=" + f.apiserverCert,
		"--tls-private-key-file=" + f.apiserverKey,
		"--client-ca-file=" + f.caCert,
		"--service-account-issuer=" + ServiceAccountIssuer,
		"--service-account-key-file=" + f.serviceAccountKey,
		"--service-account-signing-key-file=" + f.serviceAccountKey,
		"--service-cluster-ip-range=" + ServiceClusterIPs,
		"--authorization-mode=Node,RBAC",
		// On top of the default plugins (ServiceAccount included), as in
		// kubeadm clusters: node identities may only touch their own Node.
		"--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate=" + f.kubeletClientCert,
		"--kubelet-client-key=" + f.kubeletClientKey,
		"--allow-privileged=true",
		// Aggregation layer, as kubeadm sets it up.
		"--requestheader-client-ca-file=" + f.frontProxyCACert,
		"--requestheader-allowed-names=" + frontProxyClientName,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + f.frontProxyClientCert,
		"--proxy-client-key-file=" + f.frontProxyClientKey,
	}
	if c.cfg.VerifyKubeletServingCerts {
		args = append(args, "--kubelet-certificate-authority="+f.caCert)
	}
	args = append(args, c.cfg.ExtraAPIServerArgs...)
	if _, err := c.run("kube-apiserver", args); err != nil {
		return err
	}
	return c.waitFor(ctx, "kube-apiserver", apiserverTimeout, c.apiserverReady)
}

// startControllers starts kube-controller-manager and kube-scheduler
// together and waits for both.
func (c *ControlPlane) startControllers(ctx context.Context, kcmPort, schedPort int) error {
	f := c.files
	kcmKubeconfig := c.componentKubeconfig("system:kube-controller-manager")
	kcmArgs := []string{
		"--kubeconfig=" + kcmKubeconfig,
		"--authentication-kubeconfig=" + kcmKubeconfig,
		"--authorization-kubeconfig=" + kcmKubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(kcmPort),
		"--tls-cert-file=" + f.controllerManagerCert,
		"--tls-private-key-file=" + f.controllerKey,
		"--service-account-private-key-file=" + f.serviceAccountKey,
		"--root-ca-file=" + f.caCert,
		"--use-service-account-credentials=true",
		"--cluster-signing-cert-file=" + f.caCert,
		"--cluster-signing-key-file=" + f.caKey,
		"--controllers=*",
		"--node-monitor-period=2s",
	}
	if d := c.cfg.NodeMonitorGracePeriod; d > 0 {
		kcmArgs = append(kcmArgs, "--node-monitor-grace-period="+d.String())
	}
	kcmArgs = append(kcmArgs, c.cfg.ExtraControllerManagerArgs...)

	schedKubeconfig := c.componentKubeconfig("system:kube-scheduler")
	schedArgs := []string{
		"--kubeconfig=" + schedKubeconfig,
		"--authentication-kubeconfig=" + schedKubeconfig,
		"--authorization-kubeconfig=" + schedKubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(schedPort),
		"--tls-cert-file=" + f.schedulerCert,
		"--tls-private-key-file=" + f.schedulerKey,
	}
	schedArgs = append(schedArgs, c.cfg.ExtraSchedulerArgs...)

	if _, err := c.run("kube-controller-manager", kcmArgs); err != nil {
		return err
	}
	if _, err := c.run("kube-scheduler", schedArgs); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "kube-controller-manager", controllersTimeout, c.healthz(kcmPort)); err != nil {
		return err
	}
	return c.waitFor(ctx, "kube-scheduler", controllersTimeout, c.healthz(schedPort))
}

// run starts a process of the control plane and records it for Stop.
func (c *ControlPlane) run(name string, args []string) (*process, error) {
	p, err := startProcess(c.log, name, filepath.Join(c.cfg.BinDir, name), args, c.logPath(name))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p, nil
}

func (c *ControlPlane) logPath(name string) string {
	return filepath.Join(c.Dir, name+".log")
}

// keepLogs renames the processes' logs so that a retry does not
// overwrite them.
func (c *ControlPlane) keepLogs(suffix string) {
	for _, p := range c.processes() {
		if err := os.Rename(p.logPath, strings.TrimSuffix(p.logPath, ".log")+"."+suffix+".log"); err != nil {
			c.log.Warn("keeping log of failed attempt", "err", err)
		}
	}
}

func (c *ControlPlane) processes() []*process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.procs)
}

// Processes returns the processes of the control plane in start order.
func (c *ControlPlane) Processes() []Process {
	var out []Process
	for _, p := range c.processes() {
		out = append(out, Process{Name: p.name, PID: p.pid(), LogPath: p.logPath})
	}
	return out
}

// Stop stops every process Start started, in reverse start order: SIGTERM
// to its process group, SIGKILL if it has not exited after 10s. It waits
// for each to exit. Stop is idempotent and safe to call concurrently; it
// does not remove Dir.
func (c *ControlPlane) Stop() error {
	c.mu.Lock()
	procs := slices.Clone(c.procs)
	first := !c.stopped
	c.stopped = true
	c.mu.Unlock()
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if first && len(procs) > 0 {
		c.log.Debug("control plane stopped")
	}
	return errors.Join(errs...)
}

// Kubectl runs kubectl against the control plane as cluster admin and
// returns its standard output. The error carries its standard error. A
// "--kubeconfig=<path>" in args (from ClientKubeconfig) runs it as another
// user instead.
func (c *ControlPlane) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	full := append([]string{
		"--kubeconfig=" + c.Kubeconfig,
		// Keep the discovery cache out of $HOME.
		"--cache-dir=" + filepath.Join(c.Dir, "kubectl-cache"),
	}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(c.cfg.BinDir, "kubectl"), full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// ClientKubeconfig issues a client certificate for user name in the given
// groups, signed by the cluster CA, and writes a kubeconfig using it to
// <Dir>/kubeconfig/. It returns the kubeconfig's path. What the user may
// do is up to RBAC (or, for "system:node:<node>" in "system:nodes", the
// Node authorizer).
func (c *ControlPlane) ClientKubeconfig(name string, groups ...string) (string, error) {
	certPEM, keyPEM, err := c.ca.ClientCert(name, groups...)
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.Dir, "kubeconfig", fileName(name)+".kubeconfig")
	if err := writeKubeconfig(path, c.APIServerURL, c.ca.CertPEM, certPEM, keyPEM, name); err != nil {
		return "", err
	}
	return path, nil
}

// ClientRESTConfig is like ClientKubeconfig for in-process clients.
func (c *ControlPlane) ClientRESTConfig(name string, groups ...string) (*rest.Config, error) {
	certPEM, keyPEM, err := c.ca.ClientCert(name, groups...)
	if err != nil {
		return nil, err
	}
	return restConfig(c.APIServerURL, c.ca.CertPEM, certPEM, keyPEM), nil
}

// ServingCert issues a serving certificate for hosts (IP addresses or DNS
// names) signed by the cluster CA, e.g. for a virtual-kubelet's HTTPS
// server when Config.VerifyKubeletServingCerts is set.
func (c *ControlPlane) ServingCert(hosts ...string) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("issuing serving certificate: no hosts")
	}
	return c.ca.ServingCert(hosts[0], hosts...)
}

// KubeletClientCert returns the client certificate and key the API
// server presents to kubelets. Tests use it to call a kubelet's API the
// way the API server does.
func (c *ControlPlane) KubeletClientCert() (certPEM, keyPEM []byte) {
	return slices.Clone(c.files.kubeletClientCertPEM), slices.Clone(c.files.kubeletClientKeyPEM)
}
