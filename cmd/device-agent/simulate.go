package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
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
	fs.StringVar(&o.CPUProfile, "cpu-profile", "", "write a CPU profile of the first 30 seconds to this file (for hack/bench)")
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
		go profileCPU(ctx, o.CPUProfile, 30*time.Second, log)
	}
	start := time.Now()
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

// runDevice enrolls name if it has no key yet, then runs its agent.
func (o *simulateOptions) runDevice(ctx context.Context, name string, labels map[string]string, sem chan struct{}, log *slog.Logger) error {
	keyPath := filepath.Join(o.StateDir, name+".nk")
	if _, err := os.Stat(keyPath); err != nil {
		sem <- struct{}{}
		err := o.enroll(ctx, name, keyPath, labels)
		<-sem
		if err != nil {
			return err
		}
	}
	nkeyOpt, err := nats.NkeyOptionFromSeed(keyPath)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(o.NATSURL, o.natsOptions(append(deviceNATSOptions("vk-fleet simulated device "+name, "_INBOX_"+name), nkeyOpt)...)...)
	if err != nil {
		return fmt.Errorf("dialing nats: %w", err)
	}
	defer nc.Close()
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

func (o *simulateOptions) enroll(ctx context.Context, name, keyPath string, labels map[string]string) error {
	if o.Token == "" {
		return errors.New("not enrolled yet and no --token given")
	}
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	// Thousands enrolling at once keep the server busy: a connection that
	// cannot be made in time is tried again, as a person would.
	var nc *nats.Conn
	var err error
	for attempt := 0; ; attempt++ {
		nc, err = nats.Connect(o.NATSURL, o.natsOptions(nats.Token(o.Token), nats.CustomInboxPrefix("_INBOX_enroll"),
			nats.NoReconnect(), nats.Timeout(10*time.Second))...)
		if err == nil {
			break
		}
		if attempt == 9 || ctx.Err() != nil {
			return fmt.Errorf("connecting to enroll: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt+1) * time.Second):
		}
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := nodeagent.Enroll(ctx, nc, &bridge.EnrollRequest{Token: o.Token, Name: name, NKey: pub, Labels: labels}); err != nil {
		return err
	}
	return os.WriteFile(keyPath, append(seed, '\n'), 0o600)
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
