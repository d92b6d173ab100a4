package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"

	"github.com/vk-fleet/vk-fleet/callout"
	"github.com/vk-fleet/vk-fleet/internal/debugserver"
	"github.com/vk-fleet/vk-fleet/internal/logging"
	"github.com/vk-fleet/vk-fleet/internal/metrics"
	"github.com/vk-fleet/vk-fleet/registry"
)

// calloutOptions of `vk-fleet callout`: the auth callout on its own, for an
// external NATS cluster.
type calloutOptions struct {
	Kubeconfig         string
	NATSURL            string
	CAFile             string
	User               string
	PasswordFile       string
	SystemUser         string
	SystemPasswordFile string
	IssuerSeedFile     string
	XKeySeedFile       string
	ServiceNKeys       []string
	TokenNamespace     string
	DeviceTTL          time.Duration
	LogLevel           string
	HealthListen       string
}

func (o *calloutOptions) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file; empty means in-cluster configuration")
	fs.StringVar(&o.NATSURL, "nats-url", o.NATSURL, "NATS server URL(s)")
	fs.StringVar(&o.CAFile, "nats-ca-file", o.CAFile, "CA certificate of the NATS servers")
	fs.StringVar(&o.User, "nats-user", o.User, "the callout's user (in the AUTH account, listed in auth_users)")
	fs.StringVar(&o.PasswordFile, "nats-password-file", o.PasswordFile, "file holding that user's password")
	fs.StringVar(&o.SystemUser, "system-user", o.SystemUser, "a system-account user, to disconnect revoked devices at once (optional)")
	fs.StringVar(&o.SystemPasswordFile, "system-password-file", o.SystemPasswordFile, "file holding the system user's password")
	fs.StringVar(&o.IssuerSeedFile, "issuer-seed-file", o.IssuerSeedFile, "account nkey seed that signs user JWTs (its public key is auth_callout.issuer)")
	fs.StringVar(&o.XKeySeedFile, "xkey-seed-file", o.XKeySeedFile, "curve key seed for encrypted callouts (its public key is auth_callout.xkey)")
	fs.StringSliceVar(&o.ServiceNKeys, "service-nkey", o.ServiceNKeys, "public nkey of a vk-fleet replica (service identity), as name=UKEY...")
	fs.StringVar(&o.TokenNamespace, "token-namespace", registry.DefaultTokenNamespace, "namespace of enrollment tokens")
	fs.DurationVar(&o.DeviceTTL, "device-session-ttl", time.Hour, "how long a device session lasts before the device re-authenticates")
	fs.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.HealthListen, "health-listen", "", "serve /healthz, /readyz (ready once the device cache synced and NATS is connected) and /metrics on this address (e.g. :8081); empty disables")
}

func (o *calloutOptions) Validate() error {
	if o.NATSURL == "" || o.IssuerSeedFile == "" || o.User == "" {
		return errors.New("--nats-url, --nats-user and --issuer-seed-file are required")
	}
	return nil
}

func (o *calloutOptions) Run(ctx context.Context) error {
	log, err := logging.New(os.Stderr, o.LogLevel)
	if err != nil {
		return err
	}
	issuerSeed, err := os.ReadFile(o.IssuerSeedFile)
	if err != nil {
		return fmt.Errorf("reading issuer seed: %w", err)
	}
	var xkeySeed []byte
	if o.XKeySeedFile != "" {
		if xkeySeed, err = os.ReadFile(o.XKeySeedFile); err != nil {
			return fmt.Errorf("reading xkey seed: %w", err)
		}
	}
	keys, err := callout.KeysFromSeeds([]byte(strings.TrimSpace(string(issuerSeed))), []byte(strings.TrimSpace(string(xkeySeed))))
	if err != nil {
		return err
	}
	services := map[string]string{}
	for _, s := range o.ServiceNKeys {
		name, key, ok := strings.Cut(s, "=")
		if !ok || !nkeys.IsValidPublicUserKey(key) {
			return fmt.Errorf("--service-nkey %q: want name=<public user nkey>", s)
		}
		services[key] = name
	}
	restCfg, err := kubeConfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	debugserver.CountRequests(restCfg)
	var synced, serving atomic.Bool
	var live atomic.Pointer[nats.Conn]
	ready := func() bool {
		nc := live.Load()
		return synced.Load() && serving.Load() && nc != nil && nc.IsConnected()
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
	cache := registry.NewCache(client)
	if err := cache.Run(ctx); err != nil {
		return err
	}
	synced.Store(true)
	connect := func(name, user, pwFile string) (*nats.Conn, error) {
		opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true)}
		if pwFile != "" {
			pw, err := os.ReadFile(pwFile)
			if err != nil {
				return nil, fmt.Errorf("reading password file: %w", err)
			}
			opts = append(opts, nats.UserInfo(user, strings.TrimSpace(string(pw))))
		}
		if o.CAFile != "" {
			opts = append(opts, nats.RootCAs(o.CAFile))
		}
		nc, err := nats.Connect(o.NATSURL, opts...)
		if err != nil {
			return nil, fmt.Errorf("dialing nats: %w", err)
		}
		return nc, nil
	}
	nc, err := connect("vk-fleet callout", o.User, o.PasswordFile)
	if err != nil {
		return err
	}
	live.Store(nc)
	defer nc.Close()
	svc, err := callout.New(callout.Config{
		Keys: keys, Devices: cache, Tokens: registry.New(client).WithTokenNamespace(o.TokenNamespace),
		Services: services, DeviceTTL: o.DeviceTTL, Logger: log,
	})
	if err != nil {
		return err
	}
	if o.SystemUser != "" {
		sys, err := connect("vk-fleet callout (system)", o.SystemUser, o.SystemPasswordFile)
		if err != nil {
			return err
		}
		defer sys.Close()
		cache.OnDelete(func(name string) { svc.Kick(context.WithoutCancel(ctx), sysKicker{sys}, name) })
	}
	serving.Store(true)
	return svc.Run(ctx, nc)
}

// sysKicker disconnects clients through the system account's KICK request.
type sysKicker struct{ nc *nats.Conn }

func (k sysKicker) Kick(ctx context.Context, serverID string, cid uint64) error {
	body, _ := json.Marshal(map[string]uint64{"cid": cid})
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := k.nc.RequestWithContext(ctx, "$SYS.REQ.SERVER."+serverID+".KICK", body)
	return err
}

func newCalloutCommand() *cobra.Command {
	o := &calloutOptions{}
	cmd := &cobra.Command{
		Use:          "callout",
		Short:        "Run the NATS auth callout on its own, for an external NATS cluster",
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
