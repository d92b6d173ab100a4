package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vk-fleet/vk-fleet/cmd/vk-fleet/app"
	"github.com/vk-fleet/vk-fleet/internal/debugserver"
	"github.com/vk-fleet/vk-fleet/internal/logging"
	"github.com/vk-fleet/vk-fleet/internal/memtune"
	"github.com/vk-fleet/vk-fleet/internal/metrics"
	"github.com/vk-fleet/vk-fleet/internal/ratelimit"
	"github.com/vk-fleet/vk-fleet/internal/version"
	"github.com/vk-fleet/vk-fleet/provider"
	"github.com/vk-fleet/vk-fleet/registry"
	"github.com/vk-fleet/vk-fleet/zitadel"
)

// options of the vk-fleet command.
type options struct {
	Kubeconfig        string
	NATSURL           string
	NATSNKeyFile      string
	NATSCAFile        string
	TLSCertFile       string
	TLSKeyFile        string
	TLSHosts          []string
	TokenNamespace    string
	DeviceTTL         time.Duration
	ZitadelIssuer     string
	ZitadelClientID   string
	ZitadelSecretFile string
	ZitadelKeyFile    string
	ZitadelProjectID  string
	DebugListen       string
	HealthListen      string
	ReplicaID         string
	ServiceNKeys      []string
	NATSListen        string
	NATSStoreDir      string
	NATSStoreKeyFile  string
	NodeAddress       string
	KubeletPort       int32
	KubeletListen     string
	KubeletPortRange  string
	KubeletCertFile   string
	KubeletKeyFile    string
	KubeletClientCA   string
	HeartbeatTimeout  time.Duration
	LeaseDuration     time.Duration
	PingInterval      time.Duration
	StatusInterval    time.Duration
	KubeQPS           float32
	KubeBurst         int
	PodWorkers        int
	LogLevel          string
	SystemReserved    string
}

func defaultOptions() *options {
	return &options{
		Kubeconfig:       os.Getenv("KUBECONFIG"),
		NATSListen:       "0.0.0.0:4222",
		NATSStoreDir:     "/var/lib/vk-fleet/nats",
		NodeAddress:      os.Getenv("VKF_NODE_ADDRESS"),
		TokenNamespace:   registry.DefaultTokenNamespace,
		DeviceTTL:        time.Hour,
		KubeletPort:      10250,
		KubeletPortRange: "10251-20250",
		HeartbeatTimeout: 30 * time.Second,
		LeaseDuration:    40 * time.Second,
		PingInterval:     5 * time.Second,
		StatusInterval:   5 * time.Minute,
		KubeQPS:          500,
		KubeBurst:        1000,
		PodWorkers:       provider.DefaultPodSyncWorkers,
		LogLevel:         "info",
		SystemReserved:   provider.DefaultSystemReserved,
	}
}

func (o *options) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig file; empty means in-cluster configuration")
	fs.StringVar(&o.NATSURL, "nats-url", o.NATSURL, "URL of an external NATS server (its auth callout runs as `vk-fleet callout`); empty starts an embedded one")
	fs.StringVar(&o.NATSNKeyFile, "nats-nkey-file", o.NATSNKeyFile, "service identity (nkey seed file) for an external NATS")
	fs.StringVar(&o.NATSCAFile, "nats-ca-file", o.NATSCAFile, "CA certificate of an external NATS")
	fs.StringVar(&o.TLSCertFile, "nats-tls-cert", o.TLSCertFile, "TLS certificate of the embedded NATS server (default: issue one from the CA in Secret <token namespace>/vk-fleet-nats-ca, created on first start)")
	fs.StringVar(&o.TLSKeyFile, "nats-tls-key", o.TLSKeyFile, "TLS key of the embedded NATS server")
	fs.StringSliceVar(&o.TLSHosts, "nats-tls-host", o.TLSHosts, "host names and IPs devices use to reach NATS, for the generated certificate (default: localhost, 127.0.0.1, the node address and host name)")
	fs.StringVar(&o.TokenNamespace, "token-namespace", o.TokenNamespace, "namespace of enrollment tokens (bootstrap-token Secrets)")
	fs.DurationVar(&o.DeviceTTL, "device-session-ttl", o.DeviceTTL, "how long a device session lasts before the device re-authenticates")
	fs.StringVar(&o.ZitadelIssuer, "zitadel-issuer", o.ZitadelIssuer, "Zitadel URL: accept Zitadel machine users as device identities")
	fs.StringVar(&o.ZitadelClientID, "zitadel-client-id", o.ZitadelClientID, "client ID of the Zitadel API application that introspects tokens (with --zitadel-client-secret-file)")
	fs.StringVar(&o.ZitadelSecretFile, "zitadel-client-secret-file", o.ZitadelSecretFile, "file holding that application's client secret")
	fs.StringVar(&o.ZitadelKeyFile, "zitadel-key-file", o.ZitadelKeyFile, "JSON key of that application (instead of a client secret)")
	fs.StringVar(&o.ReplicaID, "replica-id", os.Getenv("VKF_REPLICA_ID"), "run as one of several replicas sharing the fleet, with this unique ID (e.g. the pod name); empty serves every device")
	fs.StringArrayVar(&o.ServiceNKeys, "service-nkey", nil, "public nkey of another replica allowed to use the embedded NATS, as name=UKEY… (repeatable)")
	fs.StringVar(&o.DebugListen, "debug-listen", o.DebugListen, "serve pprof and expvar metrics on this address (e.g. 127.0.0.1:6060); empty disables")
	fs.StringVar(&o.HealthListen, "health-listen", o.HealthListen, "serve /healthz, /readyz (ready once devices can connect and the provider serves them: informers synced, NATS connected, replica slots claimed) and /metrics on this address (e.g. :8081); empty disables")
	fs.StringVar(&o.ZitadelProjectID, "zitadel-project-id", o.ZitadelProjectID, "Zitadel project ID that device tokens must carry as audience")
	fs.StringVar(&o.NATSListen, "nats-listen", o.NATSListen, "host:port the embedded NATS server listens on for devices")
	fs.StringVar(&o.NATSStoreDir, "nats-store-dir", o.NATSStoreDir, "JetStream storage directory of the embedded NATS server: a cache, which may be lost (an emptyDir will do)")
	fs.StringVar(&o.NATSStoreKeyFile, "nats-store-key-file", o.NATSStoreKeyFile, "file holding the key that encrypts the store at rest (default: a key kept in Secret <token namespace>/vk-fleet-nats-store-key, created on first start)")
	fs.StringVar(&o.NodeAddress, "node-address", o.NodeAddress, "InternalIP of the device Nodes: where the API server reaches this process (default: this host's address)")
	fs.Int32Var(&o.KubeletPort, "kubelet-port", o.KubeletPort, "port of the kubelet API advertised on device Nodes")
	fs.StringVar(&o.KubeletListen, "kubelet-listen", o.KubeletListen, "host:port of the kubelet API (kubectl logs) served for the devices (default :<kubelet-port>; \"off\" serves none)")
	fs.StringVar(&o.KubeletPortRange, "kubelet-port-range", o.KubeletPortRange, "ports, one per device Node, for the kubelet routes that name no pod (/stats/summary, /metrics/resource: kubectl top); bound on --kubelet-listen's host; \"off\" advertises --kubelet-port on every Node")
	fs.StringVar(&o.KubeletCertFile, "kubelet-tls-cert", o.KubeletCertFile, "serving certificate of the kubelet API (default: self-signed for --node-address)")
	fs.StringVar(&o.KubeletKeyFile, "kubelet-tls-key", o.KubeletKeyFile, "key of --kubelet-tls-cert")
	fs.StringVar(&o.KubeletClientCA, "kubelet-client-ca-file", o.KubeletClientCA, "CA of the API server's kubelet client certificate (default: the in-cluster service account CA)")
	fs.DurationVar(&o.HeartbeatTimeout, "heartbeat-timeout", o.HeartbeatTimeout, "silence after which a device's Node is no longer renewed")
	fs.DurationVar(&o.LeaseDuration, "lease-duration", o.LeaseDuration, "duration of each device Node's lease")
	fs.DurationVar(&o.PingInterval, "ping-interval", o.PingInterval, "no effect: one loop keeps every device's Node and lease")
	_ = fs.MarkDeprecated("ping-interval", "it has no effect since one loop keeps every device's Node and lease (leases are renewed every quarter of --lease-duration)")
	fs.DurationVar(&o.StatusInterval, "status-interval", o.StatusInterval, "how often an unchanged Node status is written (a changed one is written at once)")
	fs.Float32Var(&o.KubeQPS, "kube-api-qps", o.KubeQPS, "queries per second to the API server, plus 0.3 per device served")
	fs.IntVar(&o.KubeBurst, "kube-api-burst", o.KubeBurst, "burst of queries to the API server, plus 0.6 per device served")
	fs.IntVar(&o.PodWorkers, "pod-workers", o.PodWorkers, "pod sync workers")
	fs.StringVar(&o.SystemReserved, "system-reserved", o.SystemReserved, "resources held back from every device Node's allocatable for the device's OS, agent and podman, as cpu=100m,memory=256Mi,ephemeral-storage=1Gi (kubelet's syntax; a device's own --system-reserved overrides it); the device's hard eviction thresholds are held back too")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, "debug, info, warn or error")
}

func (o *options) Complete() error {
	if o.NodeAddress == "" {
		o.NodeAddress = firstHostAddress()
	}
	if len(o.TLSHosts) == 0 {
		o.TLSHosts = []string{"localhost", "127.0.0.1", o.NodeAddress}
		if h, err := os.Hostname(); err == nil {
			o.TLSHosts = append(o.TLSHosts, h)
		}
	}
	return nil
}

func (o *options) Validate() error {
	if net.ParseIP(o.NodeAddress) == nil {
		return fmt.Errorf("--node-address %q is not an IP address", o.NodeAddress)
	}
	if o.HeartbeatTimeout <= 0 || o.LeaseDuration < time.Second || o.StatusInterval <= 0 {
		return errors.New("--heartbeat-timeout, --lease-duration and --status-interval must be positive")
	}
	if o.NATSURL == "" && o.NATSStoreDir == "" {
		return errors.New("--nats-store-dir is required for the embedded NATS server")
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		return errors.New("--nats-tls-cert and --nats-tls-key go together")
	}
	if _, err := provider.ParseReserved(o.SystemReserved); err != nil {
		return fmt.Errorf("--system-reserved: %w", err)
	}
	return nil
}

// serverGOGC is vk-fleet's default GOGC (the environment's GOGC wins).
// Most of its live heap is a constant per connected device (the NATS
// server's client state, TLS buffers, the device's cache entry), which
// the Go default of 100 doubles between collections; 50 keeps a third
// less headroom for a collection every few seconds at idle (measured in
// docs/benchmarks.md). Raising it to 100 only while devices connect in
// numbers was tried: the collector's share of a 1,000-device reconnect
// fell from 19 % to 10 %, but no whole run was faster for it, and the two
// 5,000-device runs with it held 93 and 94 KiB of vk-fleet's own memory
// per idle device (84 to 92 without it the same day): not kept.
const serverGOGC = 50

func (o *options) Run(ctx context.Context) error {
	memtune.Defaults(serverGOGC, 0)
	log, err := logging.New(os.Stderr, o.LogLevel)
	if err != nil {
		return err
	}
	provider.UseSlogForVirtualKubelet(log)

	restCfg, err := kubeConfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	// One limit shared by every client made from restCfg, growing with
	// the devices served (their leases alone are 0.1 requests a second
	// each).
	apiLimit := ratelimit.New(o.KubeQPS, o.KubeBurst)
	restCfg.QPS, restCfg.Burst, restCfg.RateLimiter = o.KubeQPS, o.KubeBurst, apiLimit
	restCfg.UserAgent = "vk-fleet/" + version.Version
	// Protobuf, as a kubelet and the control plane's own components: it
	// costs vk-fleet and the API server less to encode and decode than
	// JSON, and a watcher in a format no other watcher uses makes the API
	// server serialize every Node and Pod event once more just for it.
	// Every type vk-fleet reads and writes is built in (no CRDs).
	restCfg.ContentType = "application/vnd.kubernetes.protobuf"
	restCfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	debugserver.CountRequests(restCfg)
	if o.DebugListen != "" {
		go func() {
			if err := debugserver.Run(ctx, o.DebugListen, log); err != nil {
				log.Error("debug endpoint", "err", err)
			}
		}()
	}
	// Ready once devices can connect and the provider serves them (see
	// app.Config.Serving).
	var connectable atomic.Bool
	var serving atomic.Pointer[func() bool]
	ready := func() bool {
		f := serving.Load()
		return connectable.Load() && f != nil && (*f)()
	}
	_ = metrics.RegisterReady(ready)
	if o.HealthListen != "" {
		go func() {
			if err := debugserver.Health(ctx, o.HealthListen, ready, log); err != nil {
				log.Error("health endpoint", "err", err)
			}
		}()
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("creating kubernetes client: %w", err)
	}

	if o.NATSURL == "" {
		if err := os.MkdirAll(o.NATSStoreDir, 0o700); err != nil {
			return fmt.Errorf("creating nats store directory: %w", err)
		}
	}
	cfg := app.Config{
		Client:         client,
		NATSListen:     o.NATSListen,
		NATSStoreDir:   o.NATSStoreDir,
		StoreKeyFile:   o.NATSStoreKeyFile,
		TLSCertFile:    o.TLSCertFile,
		TLSKeyFile:     o.TLSKeyFile,
		TLSHosts:       o.TLSHosts,
		TokenNamespace: o.TokenNamespace,
		DeviceTTL:      o.DeviceTTL,
		Logger:         log,
		Ready:          func(string) { connectable.Store(true) },
		Serving:        func(f func() bool) { serving.Store(&f) },
		APILimiter:     apiLimit,
		Provider: provider.Config{
			NodeAddress:          o.NodeAddress,
			KubeletPort:          o.KubeletPort,
			Version:              version.Version,
			HeartbeatTimeout:     o.HeartbeatTimeout,
			LeaseDurationSeconds: int32(o.LeaseDuration / time.Second),
			StatusUpdateInterval: o.StatusInterval,
			PodSyncWorkers:       o.PodWorkers,
		},
	}
	if cfg.Provider.SystemReserved, err = provider.ParseReserved(o.SystemReserved); err != nil {
		return fmt.Errorf("--system-reserved: %w", err)
	}
	if o.KubeletListen != "off" {
		listen := o.KubeletListen
		if listen == "" {
			listen = fmt.Sprintf(":%d", o.KubeletPort)
		}
		cfg.Kubelet = &app.Kubelet{Listen: listen, CertFile: o.KubeletCertFile, KeyFile: o.KubeletKeyFile, ClientCAFile: o.KubeletClientCA}
		if o.KubeletPortRange != "off" {
			r, err := provider.ParsePortRange(o.KubeletPortRange)
			if err != nil {
				return fmt.Errorf("--kubelet-port-range: %w", err)
			}
			host, _, err := net.SplitHostPort(listen)
			if err != nil {
				return fmt.Errorf("--kubelet-listen: %w", err)
			}
			cfg.Provider.KubeletPorts, cfg.Provider.KubeletHost = r, host
		}
	}
	cfg.ReplicaID, cfg.ReplicaNamespace = o.ReplicaID, o.TokenNamespace
	cfg.ServiceNKeys = map[string]string{}
	for _, sk := range o.ServiceNKeys {
		name, key, ok := strings.Cut(sk, "=")
		if !ok || !nkeys.IsValidPublicUserKey(key) {
			return fmt.Errorf("--service-nkey %q: want name=<public user nkey>", sk)
		}
		cfg.ServiceNKeys[key] = name
	}
	if o.NATSURL != "" {
		cfg.External = &app.External{URL: o.NATSURL, NKeySeedFile: o.NATSNKeyFile, CAFile: o.NATSCAFile}
	}
	if o.ZitadelIssuer != "" {
		zc := zitadel.IntrospectorConfig{
			Issuer: o.ZitadelIssuer, ClientID: o.ZitadelClientID, Audience: o.ZitadelProjectID,
			Insecure: strings.HasPrefix(o.ZitadelIssuer, "http://"), Logger: log,
		}
		if o.ZitadelSecretFile != "" {
			b, err := os.ReadFile(o.ZitadelSecretFile)
			if err != nil {
				return fmt.Errorf("reading --zitadel-client-secret-file: %w", err)
			}
			zc.ClientSecret = strings.TrimSpace(string(b))
		}
		if o.ZitadelKeyFile != "" {
			if zc.KeyJSON, err = os.ReadFile(o.ZitadelKeyFile); err != nil {
				return fmt.Errorf("reading --zitadel-key-file: %w", err)
			}
		}
		intro, err := zitadel.NewIntrospector(ctx, zc)
		if err != nil {
			return err
		}
		cfg.Zitadel = intro
	}
	log.Info("vk-fleet starting", "version", version.Version, "nodeAddress", o.NodeAddress)
	return app.Run(ctx, cfg)
}

func newRootCommand() *cobra.Command {
	o := defaultOptions()
	cmd := &cobra.Command{
		Use:           "vk-fleet",
		Short:         "Serve edge devices as Kubernetes Nodes",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.Bind(cmd.Flags())
	cmd.AddCommand(newCalloutCommand())
	return cmd
}

func kubeConfig(path string) (*rest.Config, error) {
	if path == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("loading in-cluster configuration (pass --kubeconfig outside a cluster): %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Clean(path))
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}

func firstHostAddress() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}
