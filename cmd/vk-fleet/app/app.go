// Package app wires the vk-fleet process: the embedded NATS server with the
// auth callout (the small-install default) or an external NATS, the device
// registry cache, the enrollment service, sharding between replicas and the
// provider. cmd/vk-fleet turns flags into a Config and calls Run.
package app

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"expvar"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vk-fleet/vk-fleet/callout"
	"github.com/vk-fleet/vk-fleet/enrollment"
	"github.com/vk-fleet/vk-fleet/internal/metrics"
	"github.com/vk-fleet/vk-fleet/internal/natsd"
	"github.com/vk-fleet/vk-fleet/internal/pki"
	"github.com/vk-fleet/vk-fleet/provider"
	"github.com/vk-fleet/vk-fleet/registry"
	"github.com/vk-fleet/vk-fleet/sharding"
)

// External points vk-fleet at a NATS cluster run elsewhere, whose auth
// callout runs as `vk-fleet callout`.
type External struct {
	URL string
	// NKeySeedFile is this replica's service identity.
	NKeySeedFile string
	// CAFile verifies the servers' certificates; empty uses the system pool.
	CAFile string
}

// Config configures the vk-fleet process.
type Config struct {
	Client kubernetes.Interface
	// External, if set, uses an external NATS instead of the embedded one.
	External *External
	// NATSListen is host:port of the embedded server.
	NATSListen string
	// NATSStoreDir holds JetStream data. It is a cache: losing it costs a
	// re-publish of desired state, never a device's identity or a container.
	NATSStoreDir string
	// TLSCertFile and TLSKeyFile serve TLS; empty issues a certificate for
	// TLSHosts from the CA kept in the Secret CASecret (created on first
	// start), so that a lost store never changes the CA devices pin.
	TLSCertFile, TLSKeyFile string
	// StoreKeyFile holds the key that encrypts the JetStream store at rest
	// (workloads carry resolved Secret values). Empty keeps the key in the
	// Secret StoreKeySecret, created on first start.
	StoreKeyFile string
	TLSHosts     []string
	// TokenNamespace holds enrollment tokens and the CA ConfigMap.
	TokenNamespace string
	// Zitadel verifies Zitadel tokens; nil refuses them.
	Zitadel callout.Introspector
	// DeviceTTL bounds a device session before it re-authenticates.
	DeviceTTL time.Duration
	// ServiceNKeys maps public nkeys of other vk-fleet replicas, which
	// connect to the embedded server, to their names.
	ServiceNKeys map[string]string
	// ReplicaID, if set, makes this process one of several replicas that
	// split the devices between them (see package sharding).
	ReplicaID string
	// ReplicaNamespace holds the replicas' membership Leases.
	ReplicaNamespace string
	// Provider configures the provider; its Client, NATS and Registry are
	// filled in by Run.
	Provider provider.Config
	Logger   *slog.Logger
	// Kubelet, if set, serves the kubelet API (kubectl logs) for the
	// devices this process serves.
	Kubelet *Kubelet
	// Ready, if set, is called with the client URL once devices can connect.
	Ready func(natsURL string)
	// Serving, if set, is given a function that reports whether the
	// process serves: the provider's informers synced and its pod
	// controller running, its NATS connection up, and (with replicas) a
	// round of slot claims done. /readyz answers with it.
	Serving func(ready func() bool)
	// APILimiter, if set, is told how many devices the provider serves
	// (the rate of the API client's requests grows with it).
	APILimiter interface{ SetDevices(n int) }
}

// Kubelet configures the kubelet API endpoint.
type Kubelet struct {
	// Listen is host:port.
	Listen string
	// CertFile and KeyFile serve TLS; empty serves a self-signed
	// certificate for the node address (an API server without
	// --kubelet-certificate-authority accepts it, as with kubeadm).
	CertFile, KeyFile string
	// ClientCAFile holds the CAs of callers' client certificates (the API
	// server's --kubelet-client-certificate); empty uses the in-cluster
	// service account CA if there is one. Bearer tokens are always
	// reviewed with the API server.
	ClientCAFile string
}

// inClusterCA is the cluster CA a pod sees.
const inClusterCA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"

// kubeletTLS returns the kubelet API's TLS configuration.
func kubeletTLS(k *Kubelet, nodeAddress string) (*tls.Config, error) {
	var cfg *tls.Config
	var err error
	if k.CertFile != "" {
		cfg, err = pki.ServerTLSFromFiles(k.CertFile, k.KeyFile)
	} else {
		var ca *pki.Authority
		if ca, err = pki.NewAuthority("vk-fleet kubelet API"); err == nil {
			cfg, err = ca.ServerTLS("vk-fleet kubelet API", nodeAddress, "localhost", "127.0.0.1")
		}
	}
	if err != nil {
		return nil, err
	}
	caFile := k.ClientCAFile
	if caFile == "" {
		if _, err := os.Stat(inClusterCA); err == nil {
			caFile = inClusterCA
		}
	}
	if caFile != "" {
		if cfg.ClientCAs, err = pki.Pool(caFile); err != nil {
			return nil, fmt.Errorf("kubelet client CA: %w", err)
		}
	}
	return cfg, nil
}

// Run runs everything until ctx ends, shutting down in reverse order.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.TokenNamespace == "" {
		cfg.TokenNamespace = registry.DefaultTokenNamespace
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.External != nil {
		return runExternal(ctx, cfg, log)
	}

	tlsCfg, caPEM, err := natsTLS(ctx, cfg, log)
	if err != nil {
		return err
	}
	// Published before NATS listens, so that `fleetctl ca` works as soon as
	// devices can connect.
	if err := publishCA(ctx, cfg.Client, cfg.TokenNamespace, caPEM); err != nil {
		log.Warn("publishing the nats CA certificate", "err", err)
	}

	storeKey, err := natsStoreKey(ctx, cfg, log)
	if err != nil {
		return err
	}

	keys, err := callout.GenerateKeys()
	if err != nil {
		return err
	}
	users := callout.NewEmbeddedUsers()
	gate := natsd.NewHandshakeGate(handshakeLimit, handshakeMaxWait)
	srv, err := natsd.Start(ctx, natsd.Config{
		Listen: cfg.NATSListen, StoreDir: cfg.NATSStoreDir, Logger: log,
		ConfigText: callout.ServerConfig(keys, users), TLS: tlsCfg, Gate: gate,
		// Devices are let in once the callout can answer them: a device
		// that came earlier had its authorization request go unanswered
		// and waited the server's whole authorization timeout (15 s) to
		// be refused — long enough, after a restart, for its Node to go
		// NotReady.
		ListenLater: true,
		Options: func(o *server.Options) error {
			o.AlwaysEnableNonce = true // devices sign it with their nkey
			// Encrypted at rest: a copy of the store discloses no Secret.
			o.JetStreamKey, o.JetStreamCipher = storeKey, server.ChaCha
			return nil
		},
	})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	publishNATSVars(srv)

	cache := registry.NewCache(cfg.Client)
	if err := cache.Run(ctx); err != nil {
		return err
	}
	reg := registry.New(cfg.Client).WithTokenNamespace(cfg.TokenNamespace).WithDeviceLookup(cache.DeviceByNKey).WithEnrolledHook(cache.Enrolled).WithDeviceNames(cache.Has)

	inproc := func(name, user, pass string) (*nats.Conn, error) {
		nc, err := nats.Connect("", nats.InProcessServer(srv.Inner()), nats.UserInfo(user, pass), nats.Name(name),
			nats.MaxReconnects(-1))
		if err != nil {
			return nil, fmt.Errorf("connecting %s to the embedded nats server: %w", name, err)
		}
		return nc, nil
	}
	// The server handles the callout's answers in the reading goroutine
	// of the connection they come on: with one connection, a fleet
	// reconnecting at once had thousands of TLS handshakes share the CPU
	// with that one goroutine, and answers came after the server had
	// given up on them. The callout answers on several.
	calloutConns := make([]*nats.Conn, calloutConnections)
	for i := range calloutConns {
		if calloutConns[i], err = inproc(fmt.Sprintf("vk-fleet callout %d", i+1), callout.CalloutUser, users.CalloutPassword); err != nil {
			return err
		}
		defer calloutConns[i].Close()
	}
	kicker := embeddedKicker{srv}
	svc, err := callout.New(callout.Config{
		Keys: keys, Devices: cache, Tokens: reg, Zitadel: cfg.Zitadel, DeviceTTL: cfg.DeviceTTL, Logger: log,
		Services: cfg.ServiceNKeys, Conns: kicker, Kicker: kicker, Done: gate.Kick,
	})
	if err != nil {
		return err
	}
	gate.SetBusy(svc.Pending)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	calloutDone := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(calloutDone)
		if err := svc.Run(ctx, calloutConns...); err != nil {
			log.Error("auth callout stopped", "err", err)
		}
	}()
	select {
	case <-svc.Serving():
	case <-calloutDone:
		return errors.New("the auth callout stopped before serving")
	case <-ctx.Done():
		return nil
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	log.Info("embedded nats server listening (TLS, every connection authenticated)", "listen", cfg.NATSListen, "url", srv.ClientURL())
	cache.OnDelete(func(name string) { svc.Kick(context.WithoutCancel(ctx), kicker, name) })

	nc, err := inproc("vk-fleet provider", callout.ProviderUser, users.ProviderPassword)
	if err != nil {
		return err
	}
	defer nc.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := enrollment.Serve(ctx, nc, enrollment.RegistryRegistrar{R: reg}, cfg.Zitadel, log); err != nil {
			log.Error("enrollment service stopped", "err", err)
		}
	}()
	if cfg.Ready != nil {
		cfg.Ready(srv.ClientURL())
	}

	return runProvider(ctx, cfg, nc, cache, log)
}

func runProvider(ctx context.Context, cfg Config, nc *nats.Conn, cache *registry.Cache, log *slog.Logger) error {
	pcfg := cfg.Provider
	pcfg.Client, pcfg.NATS, pcfg.Registry, pcfg.Logger = cfg.Client, nc, cache, log
	var claimed func() bool
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.ReplicaID != "" {
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("opening jetstream: %w", err)
		}
		sh, err := sharding.New(sharding.Config{ID: cfg.ReplicaID, Client: cfg.Client, JetStream: js, Namespace: cfg.ReplicaNamespace, Logger: log})
		if err != nil {
			return err
		}
		pcfg.Owner = sh
		claimed = sh.Claimed
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sh.Run(ctx); err != nil {
				log.Error("sharding stopped", "err", err)
				cancel()
			}
		}()
	}
	p, err := provider.New(pcfg)
	if err != nil {
		return err
	}
	publishServed(p)
	if cfg.APILimiter != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			followDevices(ctx, p, cfg.APILimiter)
		}()
	}
	if cfg.Serving != nil {
		cfg.Serving(func() bool {
			select {
			case <-p.Ready():
			default:
				return false
			}
			return nc.IsConnected() && (claimed == nil || claimed())
		})
	}
	if err := metrics.RegisterFleet(p); err != nil {
		log.Warn("registering fleet metrics", "err", err)
	}
	if cfg.Kubelet != nil {
		tlsCfg, err := kubeletTLS(cfg.Kubelet, pcfg.NodeAddress)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.ServeKubeletAPI(ctx, provider.KubeletAPIConfig{Listen: cfg.Kubelet.Listen, TLS: tlsCfg, Client: cfg.Client, Logger: log}); err != nil {
				log.Error("kubelet API stopped", "err", err)
			}
		}()
	}
	return p.Run(ctx)
}

var servedVar sync.Once

// publishServed exposes the devices this process serves as expvar
// "served_devices", and how many of them have fresh heartbeats as
// "connected_devices".
func publishServed(p *provider.Provider) {
	servedVar.Do(func() {
		expvar.Publish("served_devices", expvar.Func(func() any { return p.ServedDevices() }))
		expvar.Publish("connected_devices", expvar.Func(func() any { return p.ConnectedDevices() }))
		expvar.Publish("rejected_messages", expvar.Func(func() any { return p.Rejected() }))
	})
}

// runExternal serves enrollment and the provider over an external NATS.
func runExternal(ctx context.Context, cfg Config, log *slog.Logger) error {
	opts := []nats.Option{nats.Name("vk-fleet provider"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true)}
	if cfg.External.NKeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.External.NKeySeedFile)
		if err != nil {
			return fmt.Errorf("loading service nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if cfg.External.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.External.CAFile))
	}
	nc, err := nats.Connect(cfg.External.URL, opts...)
	if err != nil {
		return fmt.Errorf("dialing nats: %w", err)
	}
	defer nc.Close()
	cache := registry.NewCache(cfg.Client)
	if err := cache.Run(ctx); err != nil {
		return err
	}
	reg := registry.New(cfg.Client).WithTokenNamespace(cfg.TokenNamespace).WithDeviceLookup(cache.DeviceByNKey).WithEnrolledHook(cache.Enrolled).WithDeviceNames(cache.Has)
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := enrollment.Serve(ctx, nc, enrollment.RegistryRegistrar{R: reg}, cfg.Zitadel, log); err != nil {
			log.Error("enrollment service stopped", "err", err)
		}
	}()
	if cfg.Ready != nil {
		cfg.Ready(cfg.External.URL)
	}
	return runProvider(ctx, cfg, nc, cache, log)
}

var natsVars sync.Once

// publishNATSVars exposes the embedded server's traffic as expvar "nats".
func publishNATSVars(srv *natsd.Server) {
	natsVars.Do(func() {
		expvar.Publish("nats", expvar.Func(func() any {
			v, err := srv.Inner().Varz(nil)
			if err != nil {
				return nil
			}
			return map[string]any{
				"in_bytes": v.InBytes, "out_bytes": v.OutBytes, "in_msgs": v.InMsgs, "out_msgs": v.OutMsgs,
				"connections": v.Connections,
			}
		}))
	})
}

type embeddedKicker struct{ s *natsd.Server }

// Conn reports on a client connection of the embedded server.
func (k embeddedKicker) Conn(serverID string, cid uint64) (string, time.Time, bool) {
	if serverID != k.s.Inner().ID() {
		return "", time.Time{}, false
	}
	// Connz copies the server's whole client list, even for one CID: ask
	// it only about a connection that is still there (usually none is,
	// when a device reconnects).
	if k.s.Inner().GetClient(cid) == nil {
		return "", time.Time{}, false
	}
	cz, err := k.s.Inner().Connz(&server.ConnzOptions{CID: cid})
	if err != nil || len(cz.Conns) == 0 {
		return "", time.Time{}, false
	}
	return cz.Conns[0].Name, cz.Conns[0].LastActivity, true
}

func (k embeddedKicker) Kick(_ context.Context, serverID string, cid uint64) error {
	if serverID != k.s.Inner().ID() {
		return errors.New("connection is on another server")
	}
	return k.s.DisconnectClient(cid)
}

// calloutConnections is how many connections the auth callout answers on.
const calloutConnections = 4

// CASecret is the Secret (in the token namespace) that holds the CA of the
// embedded NATS server, certificate and key, when no certificate is given.
const CASecret = "vk-fleet-nats-ca"

// natsTLS returns the embedded server's TLS configuration and the PEM of
// the CA that devices pin (nil when the certificate is given as files).
func natsTLS(ctx context.Context, cfg Config, log *slog.Logger) (*tls.Config, []byte, error) {
	if cfg.TLSCertFile != "" {
		c, err := pki.ServerTLSFromFiles(cfg.TLSCertFile, cfg.TLSKeyFile)
		return c, nil, err
	}
	ca, err := loadOrCreateCA(ctx, cfg.Client, cfg.TokenNamespace, log)
	if err != nil {
		return nil, nil, err
	}
	c, err := ca.ServerTLS("vk-fleet NATS", cfg.TLSHosts...)
	if err != nil {
		return nil, nil, err
	}
	return c, ca.CertPEM, nil
}

// loadOrCreateCA reads the CA from the Secret CASecret, creating it on
// first start.
func loadOrCreateCA(ctx context.Context, client kubernetes.Interface, ns string, log *slog.Logger) (*pki.Authority, error) {
	secrets := client.CoreV1().Secrets(ns)
	for attempt := 0; ; attempt++ {
		s, err := secrets.Get(ctx, CASecret, metav1.GetOptions{})
		if err == nil {
			ca, err := pki.LoadAuthority(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
			if err != nil {
				return nil, fmt.Errorf("secret %s/%s: %w", ns, CASecret, err)
			}
			return ca, nil
		}
		if !apierrors.IsNotFound(err) || attempt > 0 {
			return nil, fmt.Errorf("reading the nats CA secret %s/%s: %w", ns, CASecret, err)
		}
		ca, err := pki.NewAuthority("vk-fleet NATS CA")
		if err != nil {
			return nil, err
		}
		s = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: CASecret, Namespace: ns, Labels: map[string]string{registry.LabelManaged: "true"}},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: ca.CertPEM, corev1.TLSPrivateKeyKey: ca.KeyPEM},
		}
		_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
		if err == nil {
			log.Info("created the nats CA", "secret", ns+"/"+CASecret)
			return ca, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("storing the nats CA in secret %s/%s: %w", ns, CASecret, err)
		}
		// Another replica won the race: read its CA.
	}
}

// publishCA stores the CA certificate in a ConfigMap so that admins can
// hand it to devices.
func publishCA(ctx context.Context, client kubernetes.Interface, ns string, ca []byte) error {
	if len(ca) == 0 {
		return nil
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: registry.CAConfigMap, Namespace: ns, Labels: map[string]string{registry.LabelManaged: "true"}},
		Data:       map[string]string{"ca.crt": string(ca)},
	}
	_, err := client.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = client.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{})
	}
	return err
}

// StoreKeySecret is the Secret (in the token namespace) that holds the key
// encrypting the embedded NATS server's store, when no key file is given.
const StoreKeySecret = "vk-fleet-nats-store-key"

// natsStoreKey returns the key that encrypts the JetStream store. A key
// made anew (its Secret was lost, or this is the first start) cannot read
// a store written with another key: such a store is moved aside, which
// costs a re-publish of desired state and no container.
func natsStoreKey(ctx context.Context, cfg Config, log *slog.Logger) (string, error) {
	if cfg.StoreKeyFile != "" {
		b, err := os.ReadFile(cfg.StoreKeyFile)
		if err != nil {
			return "", fmt.Errorf("reading the nats store key: %w", err)
		}
		key := strings.TrimSpace(string(b))
		if len(key) < 16 {
			return "", fmt.Errorf("the nats store key in %s is shorter than 16 characters", cfg.StoreKeyFile)
		}
		return key, nil
	}
	secrets := cfg.Client.CoreV1().Secrets(cfg.TokenNamespace)
	s, err := secrets.Get(ctx, StoreKeySecret, metav1.GetOptions{})
	if err == nil {
		if len(s.Data["key"]) < 16 {
			return "", fmt.Errorf("secret %s/%s: key \"key\" holds fewer than 16 bytes", cfg.TokenNamespace, StoreKeySecret)
		}
		return string(s.Data["key"]), nil
	}
	if !apierrors.IsNotFound(err) {
		return "", fmt.Errorf("reading the nats store key secret: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	key := hex.EncodeToString(raw)
	s = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: StoreKeySecret, Namespace: cfg.TokenNamespace, Labels: map[string]string{registry.LabelManaged: "true"}},
		Data:       map[string][]byte{"key": []byte(key)},
	}
	if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return natsStoreKey(ctx, cfg, log) // another replica made it first
		}
		return "", fmt.Errorf("storing the nats store key: %w", err)
	}
	js := filepath.Join(cfg.NATSStoreDir, "jetstream")
	if entries, err := os.ReadDir(js); err == nil && len(entries) > 0 {
		aside := js + ".unreadable-" + time.Now().UTC().Format("20060102T150405Z")
		if err := os.Rename(js, aside); err != nil {
			return "", fmt.Errorf("moving aside a store written with another key: %w", err)
		}
		log.Warn("new nats store key: the old store moved aside; desired state is re-published from Kubernetes", "old", aside)
	}
	log.Info("created the nats store key", "secret", cfg.TokenNamespace+"/"+StoreKeySecret)
	return key, nil
}

// handshakeLimit is how many client connections may be in their TLS
// handshake or waiting for the auth callout at once (natsd.HandshakeGate).
// The callout answers 150 to 200 connections a second on a loaded 2-core
// machine: 512 wait at most a few seconds, well within the server's 15 s,
// and a fleet reconnecting at once no longer starves the callout of the
// CPU. At 128, the gate itself held 2,000 devices reconnecting at once to
// about 100 connections a second (every device heard from after 19.5 s,
// 13.9 s without a gate).
const handshakeLimit = 512

// handshakeMaxWait is how long a handshake may wait for its turn before
// it is refused: the server's TLS timeout (15 s) counts the wait, and the
// handshake itself needs the rest.
const handshakeMaxWait = 10 * time.Second

// followDevices tells lim how many devices p serves, every few seconds
// until ctx ends: a fleet enrolling at once is followed within moments.
func followDevices(ctx context.Context, p *provider.Provider, lim interface{ SetDevices(n int) }) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		lim.SetDevices(p.DeviceCount())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
