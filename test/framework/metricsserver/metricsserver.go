package metricsserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/vk-fleet/vk-fleet/test/framework/childproc"
	"github.com/vk-fleet/vk-fleet/test/framework/controlplane"
)

// MinMetricResolution is the shortest --metric-resolution metrics-server
// accepts, and the default of Config.MetricResolution. Usage appears
// about one resolution after a node is first scraped: CPU usage is the
// difference of two scrapes.
const MinMetricResolution = 10 * time.Second

// Credential says how metrics-server authenticates to the API server and
// to kubelets. metrics-server presents the credential of its --kubeconfig
// to both.
type Credential int

const (
	// ClientCert is a client certificate from the cluster CA for user
	// ClientCertUser. The zero value.
	ClientCert Credential = iota
	// ServiceAccountToken is a bearer token of ServiceAccount
	// kube-system/metrics-server (user ServiceAccountUser), as
	// metrics-server has when it runs in a cluster. Kubelets must check it
	// with a TokenReview.
	ServiceAccountToken
)

// Names of the objects Start creates in the cluster.
const (
	// Namespace holds the Service, the ServiceAccount and the RoleBinding.
	Namespace = "kube-system"
	// ServiceName is the Service the APIService points at; the serving
	// certificate is valid for ServiceName.Namespace.svc, the name the
	// aggregator verifies.
	ServiceName = "metrics-server"
	// APIServiceName registers the metrics.k8s.io/v1beta1 API.
	APIServiceName = "v1beta1.metrics.k8s.io"
	// ClientCertUser is the user of the ClientCert credential.
	ClientCertUser = "metrics-server"
	// ServiceAccountUser is the user of the ServiceAccountToken
	// credential.
	ServiceAccountUser = "system:serviceaccount:" + Namespace + ":" + ServiceName
)

// Config says which cluster metrics-server serves and how it runs.
type Config struct {
	// ControlPlane is the cluster. Required. Kubelets are reached at the
	// InternalIP of their Node and the port in
	// status.daemonEndpoints.kubeletEndpoint; their serving certificates
	// are verified against the cluster CA (ControlPlane.ServingCert issues
	// them).
	ControlPlane *controlplane.ControlPlane
	// BinDir holds the metrics-server binary (see BinDir). Required.
	BinDir string
	// Dir is the working directory for certificates, the kubeconfig and
	// the log (<Dir>/metrics-server.log). Tests pass t.TempDir(). If empty,
	// <ControlPlane.Dir>/metrics-server is used.
	Dir string
	// MetricResolution is --metric-resolution, the scrape interval. Zero
	// means MinMetricResolution.
	MetricResolution time.Duration
	// Credential metrics-server presents to the API server and kubelets.
	Credential Credential
	// Logger receives progress messages. Nil discards them.
	Logger *slog.Logger
	// ExtraArgs are appended to the command line; a flag given again here
	// overrides Start's value (e.g. "--v=4" logs every scrape).
	ExtraArgs []string
}

// Server is a running metrics-server registered as the
// metrics.k8s.io/v1beta1 API of the control plane. Its exported fields
// are set by Start and must not be modified.
type Server struct {
	// Dir is the working directory.
	Dir string
	// URL is metrics-server's own address, https://127.0.0.1:<Port>.
	URL  string
	Port int
	// LogPath is metrics-server's log (stdout and stderr).
	LogPath string
	// Kubeconfig is the identity metrics-server runs as, against the API
	// server and kubelets alike.
	Kubeconfig string
	// User is the name that identity authenticates as: ClientCertUser or
	// ServiceAccountUser.
	User string
	// Args is metrics-server's command line, without the binary.
	Args []string

	log     *slog.Logger
	proc    *process
	dynamic dynamic.Interface

	stopOnce sync.Once
	stopErr  error
}

// Startup deadlines; the context passed to Start can shorten them.
const (
	listenTimeout    = 60 * time.Second
	availableTimeout = 60 * time.Second
	pollInterval     = 200 * time.Millisecond
	probeTimeout     = 2 * time.Second
	cleanupTimeout   = 5 * time.Second
)

// Start grants metrics-server's identity the RBAC roles of
// metrics-server's own manifests, starts metrics-server on a free port of
// 127.0.0.1 with a serving certificate from the cluster CA, registers it
// with the aggregator (Service and APIService) and returns once the
// APIService is Available, so that `kubectl top` and
// /apis/metrics.k8s.io/v1beta1 work. If metrics-server loses a race for
// its port, Start retries once with a new one. On error everything
// started is stopped again.
//
// Only one metrics-server can serve a cluster: a second Start takes the
// APIService over. ctx bounds the start only; the process runs until
// Stop.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	begin := time.Now()
	cp := cfg.ControlPlane
	if cp == nil {
		return nil, errors.New("starting metrics-server: no control plane")
	}
	if err := checkBinary(cfg.BinDir); err != nil {
		return nil, err
	}
	if cfg.MetricResolution == 0 {
		cfg.MetricResolution = MinMetricResolution
	}
	if cfg.MetricResolution < MinMetricResolution {
		return nil, fmt.Errorf("starting metrics-server: metric resolution %v is below the minimum %v", cfg.MetricResolution, MinMetricResolution)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "metrics-server")
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(cp.Dir, "metrics-server")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("resolving working dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "certs"), 0o700); err != nil {
		return nil, fmt.Errorf("creating working dir: %w", err)
	}

	client, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		return nil, fmt.Errorf("building api client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cp.RESTConfig)
	if err != nil {
		return nil, fmt.Errorf("building dynamic api client: %w", err)
	}
	s := &Server{
		Dir:     dir,
		LogPath: filepath.Join(dir, "metrics-server.log"),
		log:     log,
		dynamic: dyn,
	}
	if err := grantRBAC(ctx, client, cfg.Credential); err != nil {
		return nil, err
	}
	if s.Kubeconfig, s.User, err = writeIdentity(ctx, cp, client, dir, cfg.Credential); err != nil {
		return nil, err
	}
	certFile, keyFile, err := writeServingCert(cp, dir)
	if err != nil {
		return nil, err
	}

	for attempt := 1; ; attempt++ {
		err := s.start(ctx, cp, cfg, certFile, keyFile)
		if err == nil {
			break
		}
		stopErr := s.proc.stopIfStarted()
		var exit *exitError
		if attempt == 1 && stopErr == nil && ctx.Err() == nil && errors.As(err, &exit) && exit.addrInUse() {
			log.Warn("lost a race for a port, retrying with a new port")
			if err := os.Rename(s.LogPath, filepath.Join(dir, "metrics-server.attempt-1.log")); err != nil {
				log.Warn("keeping log of failed attempt", "err", err)
			}
			continue
		}
		return nil, errors.Join(err, stopErr)
	}
	log.Debug("metrics-server listening", "url", s.URL, "pid", s.proc.pid(), "took", time.Since(begin).Round(time.Millisecond))

	if err := register(ctx, client, dyn, s.Port, cp.CACertPEM); err != nil {
		return nil, errors.Join(err, s.Stop())
	}
	if err := s.waitFor(ctx, "apiservice "+APIServiceName+" available", availableTimeout, s.apiServiceAvailable); err != nil {
		return nil, errors.Join(err, s.Stop())
	}
	log.Info("metrics-server ready", "url", s.URL, "log", s.LogPath, "took", time.Since(begin).Round(time.Millisecond))
	return s, nil
}

// start runs one attempt: a fresh port, the process, and the wait until
// it serves.
func (s *Server) start(ctx context.Context, cp *controlplane.ControlPlane, cfg Config, certFile, keyFile string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	s.Port = port
	s.URL = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.Args = []string{
		"--secure-port=" + strconv.Itoa(port),
		"--bind-address=127.0.0.1",
		// Unused since the serving certificate is given, but keeps the
		// default ./apiserver.local.config out of the working directory.
		"--cert-dir=" + filepath.Join(s.Dir, "certs"),
		"--tls-cert-file=" + certFile,
		"--tls-private-key-file=" + keyFile,
		"--kubeconfig=" + s.Kubeconfig,
		"--authentication-kubeconfig=" + s.Kubeconfig,
		"--authorization-kubeconfig=" + s.Kubeconfig,
		// Devices are Nodes whose InternalIP is 127.0.0.1 and whose kubelet
		// port is their own.
		"--kubelet-preferred-address-types=InternalIP",
		"--kubelet-use-node-status-port",
		"--kubelet-certificate-authority=" + cp.CAFile,
		"--metric-resolution=" + cfg.MetricResolution.String(),
		// Must stay below 90% of the resolution; the default 10s does not.
		"--kubelet-request-timeout=5s",
		// Logs each scrape's summary and why a node's or pod's metrics
		// were dropped as incomplete.
		"--v=1",
	}
	s.Args = append(s.Args, cfg.ExtraArgs...)
	s.proc, err = startProcess(filepath.Join(cfg.BinDir, binary), s.Args, s.LogPath)
	if err != nil {
		return err
	}
	s.log.Debug("process started", "pid", s.proc.pid(), "log", s.LogPath)
	return s.waitFor(ctx, "metrics-server to serve", listenTimeout, s.livez(cp.CACertPEM))
}

// PID is metrics-server's process id.
func (s *Server) PID() int { return s.proc.pid() }

// Stop deletes the APIService and the Service, so that the API server's
// discovery no longer points at a dead server, then stops metrics-server
// (SIGTERM, SIGKILL after 10s) and waits for it to exit. Call it before
// stopping the control plane (t.Cleanup runs in reverse order, so
// register it after the control plane's); otherwise the deletion fails
// and Stop reports that. Stop is idempotent.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		s.stopErr = errors.Join(unregister(ctx, s.dynamic), s.proc.stopIfStarted())
		s.log.Debug("metrics-server stopped", "err", s.stopErr)
	})
	return s.stopErr
}

// stopIfStarted stops p if it is not nil.
func (p *process) stopIfStarted() error {
	if p == nil {
		return nil
	}
	return p.stop()
}

// waitFor polls check until it returns nil, timeout passes or ctx ends.
// It fails early, quoting the log, if metrics-server exits.
func (s *Server) waitFor(ctx context.Context, what string, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		if err := s.proc.exitErr(); err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		err := check(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last check: %v); last lines of %s:\n%s",
				what, ctx.Err(), err, s.LogPath, childproc.TailFile(s.LogPath, logTailLines))
		case <-ticker.C:
		}
	}
}

// livez returns a check of metrics-server's /livez (allowed without
// authentication), which answers once its informers have synced and it
// serves. The serving certificate is verified against the cluster CA.
func (s *Server) livez(caPEM []byte) func(context.Context) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true,
	}}
	url := s.URL + "/livez"
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, probeTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("get %s: %s: %s", url, resp.Status, body)
		}
		return nil
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("picking a free port: %w", err)
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("picking a free port: listener has no tcp address")
	}
	return addr.Port, nil
}
