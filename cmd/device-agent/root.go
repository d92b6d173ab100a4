package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/internal/logging"
	"github.com/vk-fleet/vk-fleet/internal/metrics"
	"github.com/vk-fleet/vk-fleet/internal/version"
	"github.com/vk-fleet/vk-fleet/nodeagent"
	"github.com/vk-fleet/vk-fleet/nodeagent/podman"
	"github.com/vk-fleet/vk-fleet/zitadel/devicetoken"
)

// options of the device-agent command.
type options struct {
	ConfigFile        string
	Name              string
	NKeyFile          string
	CAFile            string
	ZitadelIssuer     string
	ZitadelKeyFile    string
	ZitadelProjectID  string
	NATSURL           string
	StateDir          string
	PodmanURL         string
	HeartbeatInterval time.Duration
	ResyncInterval    time.Duration
	Addresses         []string
	LogLevel          string
	MetricsListen     string
	// Resources and pressure, with kubelet's flag names and defaults.
	SystemReserved     string
	EvictionHard       string
	PressureTransition time.Duration

	systemReserved *bridge.ResourceAmounts
	evictionHard   []nodeagent.Threshold
}

func defaultOptions() *options {
	return &options{
		NATSURL:            nats.DefaultURL,
		StateDir:           "/var/lib/vk-fleet-agent",
		PodmanURL:          "unix:///run/podman/podman.sock",
		HeartbeatInterval:  10 * time.Second,
		ResyncInterval:     15 * time.Second,
		LogLevel:           "info",
		EvictionHard:       nodeagent.DefaultEvictionHard,
		PressureTransition: nodeagent.DefaultPressureTransitionPeriod,
	}
}

func (o *options) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&o.ConfigFile, "config", o.ConfigFile, "configuration file written by `fleetctl enroll` (default "+nodeagent.DefaultConfigPath+" if it exists); flags override it")
	fs.StringVar(&o.Name, "name", o.Name, "device name: the Node name (RFC 1123 label); default: the host name")
	fs.StringVar(&o.NKeyFile, "nkey-file", o.NKeyFile, "the device's nkey seed file (written by fleetctl enroll)")
	fs.StringVar(&o.CAFile, "ca-file", o.CAFile, "CA certificate that NATS's certificate must chain to")
	fs.StringVar(&o.ZitadelIssuer, "zitadel-issuer", o.ZitadelIssuer, "Zitadel URL, to authenticate as a Zitadel machine user instead of with an nkey")
	fs.StringVar(&o.ZitadelKeyFile, "zitadel-key-file", o.ZitadelKeyFile, "the machine user's JSON key file")
	fs.StringVar(&o.ZitadelProjectID, "zitadel-project-id", o.ZitadelProjectID, "Zitadel project whose API vk-fleet introspects tokens with")
	fs.StringVar(&o.NATSURL, "nats-url", o.NATSURL, "NATS server URL(s), comma separated")
	fs.StringVar(&o.StateDir, "state-dir", o.StateDir, "directory for the agent's persistent state")
	fs.StringVar(&o.PodmanURL, "podman-url", o.PodmanURL, "podman API socket URL")
	fs.DurationVar(&o.HeartbeatInterval, "heartbeat-interval", o.HeartbeatInterval, "time between heartbeats")
	fs.DurationVar(&o.ResyncInterval, "resync-interval", o.ResyncInterval, "time between full reconcile passes")
	fs.StringSliceVar(&o.Addresses, "address", o.Addresses, "IP address(es) to report for this device (default: the host's)")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, "debug, info, warn or error")
	fs.StringVar(&o.MetricsListen, "metrics-listen", o.MetricsListen, "serve Prometheus /metrics on this loopback address (e.g. 127.0.0.1:9101); empty (the default) serves none")
	fs.StringVar(&o.SystemReserved, "system-reserved", o.SystemReserved, "resources this device keeps for its own system, as cpu=100m,memory=256Mi,ephemeral-storage=1Gi; the resources it names override vk-fleet's --system-reserved on this device's Node")
	fs.StringVar(&o.EvictionHard, "eviction-hard", o.EvictionHard, "thresholds of the Node's MemoryPressure, DiskPressure and PIDPressure conditions, as kubelet's --eviction-hard (signals memory.available, nodefs.available, nodefs.inodesFree, imagefs.available, imagefs.inodesFree, pid.available; quantities or percentages); memory.available and nodefs.available are also held back from allocatable")
	fs.DurationVar(&o.PressureTransition, "eviction-pressure-transition-period", o.PressureTransition, "how long a pressure condition stays true after its threshold was last met")
}

// Complete fills unset flags from the configuration file.
func (o *options) Complete(fs *pflag.FlagSet) error {
	path := o.ConfigFile
	if path == "" {
		if _, err := os.Stat(nodeagent.DefaultConfigPath); err == nil {
			path = nodeagent.DefaultConfigPath
		}
	}
	if path != "" {
		fc, err := nodeagent.LoadFileConfig(path)
		if err != nil {
			return err
		}
		set := func(flag string, dst *string, v string) {
			if !fs.Changed(flag) && v != "" {
				*dst = v
			}
		}
		set("name", &o.Name, fc.Name)
		set("nats-url", &o.NATSURL, fc.NATSURL)
		set("ca-file", &o.CAFile, fc.CAFile)
		set("nkey-file", &o.NKeyFile, fc.NKeyFile)
		set("state-dir", &o.StateDir, fc.StateDir)
		set("podman-url", &o.PodmanURL, fc.PodmanURL)
		set("zitadel-issuer", &o.ZitadelIssuer, fc.ZitadelIssuer)
		set("zitadel-key-file", &o.ZitadelKeyFile, fc.ZitadelKeyFile)
		set("zitadel-project-id", &o.ZitadelProjectID, fc.ZitadelProjectID)
	}
	if o.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("reading host name for --name: %w", err)
		}
		o.Name = h
	}
	return nil
}

func (o *options) Validate() error {
	if err := bridge.ValidateDeviceName(o.Name); err != nil {
		return fmt.Errorf("--name: %w", err)
	}
	for _, a := range o.Addresses {
		if net.ParseIP(a) == nil {
			return fmt.Errorf("--address %q is not an IP address", a)
		}
	}
	if o.HeartbeatInterval <= 0 {
		return errors.New("--heartbeat-interval must be positive")
	}
	if o.MetricsListen != "" {
		host, _, err := net.SplitHostPort(o.MetricsListen)
		if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			return fmt.Errorf("--metrics-listen %q: the agent's metrics are served on a loopback address only (127.0.0.1:PORT, [::1]:PORT)", o.MetricsListen)
		}
	}
	if o.SystemReserved != "" {
		r, err := nodeagent.ParseResourceAmounts(o.SystemReserved)
		if err != nil {
			return fmt.Errorf("--system-reserved: %w", err)
		}
		o.systemReserved = &r
	}
	th, err := nodeagent.ParseEvictionHard(o.EvictionHard)
	if err != nil {
		return fmt.Errorf("--eviction-hard: %w", err)
	}
	o.evictionHard = th
	if o.PressureTransition <= 0 {
		return errors.New("--eviction-pressure-transition-period must be positive")
	}
	keyFile, flag := o.NKeyFile, "--nkey-file"
	switch {
	case o.ZitadelIssuer != "":
		keyFile, flag = o.ZitadelKeyFile, "--zitadel-key-file"
	case o.NKeyFile == "":
		return errors.New("--nkey-file is required (run `fleetctl enroll` to create the device key)")
	}
	if fi, err := os.Stat(keyFile); err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s %s is readable by others (mode %v); chmod 600 it", flag, keyFile, fi.Mode().Perm())
	}
	return nil
}

func (o *options) Run(ctx context.Context) error {
	log, err := logging.New(os.Stderr, o.LogLevel)
	if err != nil {
		return err
	}
	log = log.With("device", o.Name)
	tuneMemory()
	go releaseStartupMemory(ctx, log)

	// podman.New does not need podman to be up: on a Pi podman.socket may
	// start after the agent. Until it answers, the agent keeps its pods'
	// desired state, reports RuntimeError in its heartbeats and retries.
	rt, err := podman.New(ctx, o.PodmanURL, o.Name, podman.WithStateDir(o.StateDir), podman.WithLogger(log))
	if err != nil {
		return fmt.Errorf("--podman-url: %w", err)
	}
	credential, err := o.credential(ctx, log)
	if err != nil {
		return err
	}
	natsOpts := []nats.Option{credential}
	if o.CAFile != "" {
		natsOpts = append(natsOpts, nats.RootCAs(o.CAFile))
	}
	natsOpts = append(natsOpts, deviceNATSOptions("vk-fleet device-agent "+o.Name+bridge.InstanceTag+instanceID(), "_INBOX_"+o.Name)...)
	nc, err := nats.Connect(o.NATSURL, append(natsOpts,
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("connecting to nats", "err", err)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("nats error", "err", err)
		}),
	)...)
	if err != nil {
		return fmt.Errorf("dialing nats: %w", err)
	}
	defer nc.Close()

	a, err := nodeagent.New(nodeagent.Config{
		Device:            o.Name,
		StateDir:          o.StateDir,
		AgentVersion:      version.Version,
		HeartbeatInterval: o.HeartbeatInterval,
		ResyncInterval:    o.ResyncInterval,
		Addresses:         o.Addresses,
		Logger:            log,

		SystemReserved:           o.systemReserved,
		EvictionHard:             o.evictionHard,
		PressureTransitionPeriod: o.PressureTransition,
	}, rt, nc)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	if o.MetricsListen != "" {
		if err := serveMetrics(ctx, o.MetricsListen, log); err != nil {
			return err
		}
	}
	log.Info("device-agent starting", "version", version.Version, "nats", o.NATSURL, "podman", o.PodmanURL)
	return a.Run(ctx)
}

// credential is the device's NATS credential: its nkey, or a Zitadel
// access token refreshed on every (re)connect.
func (o *options) credential(ctx context.Context, log *slog.Logger) (nats.Option, error) {
	if o.ZitadelIssuer == "" {
		opt, err := nats.NkeyOptionFromSeed(o.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading device key: %w", err)
		}
		return opt, nil
	}
	key, err := os.ReadFile(o.ZitadelKeyFile)
	if err != nil {
		return nil, fmt.Errorf("reading zitadel key: %w", err)
	}
	opts := []devicetoken.Option{devicetoken.WithLogger(log)}
	if o.ZitadelProjectID != "" {
		opts = append(opts, devicetoken.WithProjectID(o.ZitadelProjectID))
	}
	if strings.HasPrefix(o.ZitadelIssuer, "http://") {
		opts = append(opts, devicetoken.WithInsecure())
	}
	ts, err := devicetoken.NewTokenSource(ctx, o.ZitadelIssuer, key, opts...)
	if err != nil {
		return nil, fmt.Errorf("zitadel identity: %w", err)
	}
	return nats.TokenHandler(ts.Handler(10 * time.Second)), nil
}

const rootLong = `device-agent runs a vk-fleet device's pods with podman, keeps them running while offline
and reports their status over NATS. Started as fleetctl (or as "device-agent fleetctl"), it
enrolls the device.

Memory: the agent runs with GOGC=%d and a soft memory limit of %dMiB unless the environment
sets GOGC or GOMEMLIMIT, and gives back what only start-up used %v after it starts.`

func newRootCommand() *cobra.Command {
	o := defaultOptions()
	cmd := &cobra.Command{
		Use:           "device-agent",
		Short:         "Run a vk-fleet device's pods with podman",
		Long:          fmt.Sprintf(rootLong, agentGOGC, agentMemoryLimit>>20, startupRelease),
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(cmd.Flags()); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.Bind(cmd.Flags())
	cmd.AddCommand(newSimulateCommand(), newVersionCommand(), newStatusCommand(), newFleetctlSubcommand())
	return cmd
}

// instanceID names this running agent for the duplicate check of the auth
// callout: the boot ID, which differs between two machines even when one
// was cloned from the other, and stays while the agent reconnects.
func instanceID() string {
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		return strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("pid-%d-%d", os.Getpid(), time.Now().UnixNano())
}

// serveMetrics serves the agent's Prometheus metrics on addr until ctx ends.
func serveMetrics(ctx context.Context, addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics endpoint", "err", err)
		}
	}()
	log.Info("metrics endpoint listening", "addr", ln.Addr().String())
	return nil
}
