package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/internal/logging"
	"github.com/vk-fleet/vk-fleet/internal/version"
	"github.com/vk-fleet/vk-fleet/nodeagent"
	"github.com/vk-fleet/vk-fleet/nodeagent/simruntime"
)

// simulateOptions of `device-agent simulate`: many agents in one process,
// each with its own identity and subjects, running pods in memory.
type simulateOptions struct {
	Count             int
	Prefix            string
	NATSURL           string
	CAFile            string
	Token             string
	Labels            []string
	StateDir          string
	HeartbeatInterval time.Duration
	ResyncInterval    time.Duration
	EnrollConcurrency int
	LogLevel          string
	CPUProfile        string

	phases enrollPhases
	conns  connectPhases
}

// connectPhases collects how long the simulated devices took to connect
// with their own keys, from the simulator's start, and why attempts
// failed, for the summary logged once all are connected: the first
// connection after an enrollment, or every device's after a restart (a
// fleet reconnecting at once).
type connectPhases struct {
	mu       sync.Mutex
	took     []time.Duration
	failures map[string]int // reason → failed attempts
	log      *slog.Logger
	want     int
	start    time.Time
}

// socketAddrs matches the addresses of a socket in an error message.
var socketAddrs = regexp.MustCompile(`[0-9a-fA-F.:\[\]]+:[0-9]+->[0-9a-fA-F.:\[\]]+:[0-9]+`)

// failed records a failed connection attempt.
func (p *connectPhases) failed(err error) {
	reason := "unknown"
	if err != nil {
		// One reason per cause, not per socket.
		reason = socketAddrs.ReplaceAllString(err.Error(), "…")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failures == nil {
		p.failures = map[string]int{}
	}
	p.failures[reason]++
}

// connected records a device's first connection.
func (p *connectPhases) connected() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.took = append(p.took, time.Since(p.start))
	if len(p.took) != p.want {
		return
	}
	failures := 0
	for _, n := range p.failures {
		failures += n
	}
	p.log.Warn("simulated devices connected", "count", p.want, "took", time.Since(p.start).Round(time.Millisecond),
		"connected after", quantiles(p.took), "failed attempts", failures, "reasons", p.failures)
}

// enrollPhases collects how long the simulated devices' enrollments took,
// step by step, for the summary logged once all have enrolled.
type enrollPhases struct {
	mu              sync.Mutex
	waited, connect []time.Duration
	request, key    []time.Duration
	log             *slog.Logger
	want            int
	start           time.Time
}

// add records one device's enrollment: how long it waited for a slot, for
// the token connection (TLS, auth callout) and for the answer to its
// request, and then for its own connection with its key.
func (p *enrollPhases) add(waited, connect, request, key time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waited, p.connect = append(p.waited, waited), append(p.connect, connect)
	p.request, p.key = append(p.request, request), append(p.key, key)
	if len(p.connect) != p.want {
		return
	}
	q := quantiles
	p.log.Warn("simulated devices enrolled and connected", "count", p.want, "took", time.Since(p.start).Round(time.Millisecond),
		"waiting for a slot", q(p.waited), "token connection", q(p.connect), "enrollment request", q(p.request),
		"connection with the device key", q(p.key))
}

// quantiles summarises ds: p50, p90 and max.
func quantiles(ds []time.Duration) string {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	at := func(f float64) time.Duration {
		return ds[min(len(ds)-1, int(f*float64(len(ds))))].Round(time.Millisecond)
	}
	return fmt.Sprintf("p50 %v p90 %v max %v", at(0.5), at(0.9), ds[len(ds)-1].Round(time.Millisecond))
}

func (o *simulateOptions) Bind(fs *pflag.FlagSet) {
	fs.IntVar(&o.Count, "count", 100, "number of simulated devices")
	fs.StringVar(&o.Prefix, "prefix", "sim-", "device name prefix; devices are <prefix><n>")
	fs.StringVar(&o.NATSURL, "nats-url", nats.DefaultURL, "NATS server URL")
	fs.StringVar(&o.CAFile, "ca-file", "", "CA certificate of NATS")
	fs.StringVar(&o.Token, "token", "", "enrollment token (with enough uses) for devices not enrolled yet")
	fs.StringArrayVar(&o.Labels, "label", nil, "Node label of enrolled devices (key=value; repeatable)")
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/vk-fleet-sim", "where device keys and stores are kept")
	fs.DurationVar(&o.HeartbeatInterval, "heartbeat-interval", 10*time.Second, "time between heartbeats")
	fs.DurationVar(&o.ResyncInterval, "resync-interval", 30*time.Second, "time between full reconcile passes")
	fs.IntVar(&o.EnrollConcurrency, "enroll-concurrency", 16, "enrollments in flight at once")
	fs.StringVar(&o.LogLevel, "log-level", "warn", "debug, info, warn or error")
	fs.StringVar(&o.CPUProfile, "cpu-profile", "", "write a CPU profile of the first 12 seconds to this file (for hack/bench)")
}

func (o *simulateOptions) Validate() error {
	if o.Count < 1 {
		return errors.New("--count must be at least 1")
	}
	if err := bridge.ValidateDeviceName(o.Prefix + strconv.Itoa(o.Count)); err != nil {
		return fmt.Errorf("--prefix: %w", err)
	}
	return nil
}

func (o *simulateOptions) natsOptions(extra ...nats.Option) []nats.Option {
	opts := append([]nats.Option{}, extra...)
	if o.CAFile != "" {
		opts = append(opts, nats.RootCAs(o.CAFile))
	}
	return opts
}

func (o *simulateOptions) Run(ctx context.Context) error {
	log, err := logging.New(os.Stderr, o.LogLevel)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return fmt.Errorf("creating state directory: %w", err)
	}
	labels := map[string]string{}
	for _, l := range o.Labels {
		k, v, _ := strings.Cut(l, "=")
		labels[k] = v
	}
	if o.CPUProfile != "" {
		go profileCPU(ctx, o.CPUProfile, 12*time.Second, log)
	}
	start := time.Now()
	o.phases.log, o.phases.start = log, start
	o.conns.log, o.conns.start, o.conns.want = log, start, o.Count
	for i := range o.Count {
		if _, err := os.Stat(o.keyPath(o.Prefix + strconv.Itoa(i))); err != nil {
			o.phases.want++
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, o.EnrollConcurrency)
	errs := make(chan error, o.Count)
	for i := range o.Count {
		name := o.Prefix + strconv.Itoa(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := o.runDevice(ctx, name, labels, sem, log); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("device %s: %w", name, err)
			}
		}()
	}
	log.Warn("simulated devices started", "count", o.Count, "took", time.Since(start).Round(time.Millisecond))
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case err := <-errs:
		return err
	}
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// profileCPU writes a CPU profile of the next d (or until ctx ends) to
// path.
func profileCPU(ctx context.Context, path string, d time.Duration, log *slog.Logger) {
	f, err := os.Create(path)
	if err != nil {
		log.Warn("cpu profile", "err", err)
		return
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Warn("cpu profile", "err", err)
		return
	}
	defer pprof.StopCPUProfile()
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// keyPath is where simulated device name keeps its key.
func (o *simulateOptions) keyPath(name string) string { return filepath.Join(o.StateDir, name+".nk") }

// runDevice enrolls name if it has no key yet, then runs its agent.
func (o *simulateOptions) runDevice(ctx context.Context, name string, labels map[string]string, sem chan struct{}, log *slog.Logger) error {
	keyPath := o.keyPath(name)
	var waited, connect, request time.Duration
	enrolling := false
	if _, err := os.Stat(keyPath); err != nil {
		enrolling = true
		t0 := time.Now()
		sem <- struct{}{}
		waited = time.Since(t0)
		connect, request, err = o.enroll(ctx, name, keyPath, labels)
		<-sem
		if err != nil {
			return err
		}
	}
	t0 := time.Now()
	nkeyOpt, err := nats.NkeyOptionFromSeed(keyPath)
	if err != nil {
		return err
	}
	var first sync.Once
	opts := append(deviceNATSOptions("vk-fleet simulated device "+name, "_INBOX_"+name), nkeyOpt,
		nats.ConnectHandler(func(*nats.Conn) { first.Do(o.conns.connected) }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { o.conns.failed(err) }))
	nc, err := nats.Connect(o.NATSURL, o.natsOptions(opts...)...)
	if err != nil {
		return fmt.Errorf("dialing nats: %w", err)
	}
	defer nc.Close()
	if nc.IsConnected() {
		first.Do(o.conns.connected)
	}
	if enrolling {
		o.phases.add(waited, connect, request, time.Since(t0))
	}
	a, err := nodeagent.New(nodeagent.Config{
		Device: name, StateDir: filepath.Join(o.StateDir, name), AgentVersion: version.Version + "-sim",
		HeartbeatInterval: o.HeartbeatInterval, ResyncInterval: o.ResyncInterval,
		Addresses: []string{"127.0.0.1"}, Logger: log, SharedProcess: true,
	}, &simruntime.Runtime{}, nc)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// enroll enrolls name with the token and writes its key to keyPath; it
// returns how long the token connection and the enrollment request took.
func (o *simulateOptions) enroll(ctx context.Context, name, keyPath string, labels map[string]string) (connect, request time.Duration, err error) {
	if o.Token == "" {
		return 0, 0, errors.New("not enrolled yet and no --token given")
	}
	t0 := time.Now()
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	// Thousands enrolling at once keep the server busy: a connection that
	// cannot be made in time is tried again, as a person would.
	var nc *nats.Conn
	for attempt := 0; ; attempt++ {
		nc, err = nats.Connect(o.NATSURL, o.natsOptions(nats.Token(o.Token), nats.CustomInboxPrefix("_INBOX_enroll"),
			nats.NoReconnect(), nats.Timeout(10*time.Second))...)
		if err == nil {
			break
		}
		if attempt == 9 || ctx.Err() != nil {
			return 0, 0, fmt.Errorf("connecting to enroll: %w", err)
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * time.Second):
		}
	}
	defer nc.Close()
	connect = time.Since(t0)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t1 := time.Now()
	if _, err := nodeagent.Enroll(ctx, nc, &bridge.EnrollRequest{Token: o.Token, Name: name, NKey: pub, Labels: labels}); err != nil {
		return 0, 0, err
	}
	request = time.Since(t1)
	return connect, request, os.WriteFile(keyPath, append(seed, '\n'), 0o600)
}

func newSimulateCommand() *cobra.Command {
	o := &simulateOptions{}
	cmd := &cobra.Command{
		Use:          "simulate",
		Short:        "Run many simulated devices (in-memory containers) over the real protocol, for scale tests",
		SilenceUsage: true,
		Args:         cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.Bind(cmd.Flags())
	return cmd
}
