package provider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	kubeinformers "k8s.io/client-go/informers"
	kubecoreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/virtual-kubelet/virtual-kubelet/node"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/internal/metrics"
)

// Config configures a Provider.
type Config struct {
	// Client talks to the Kubernetes API server.
	Client kubernetes.Interface
	// NATS is the connection to the fleet's NATS.
	NATS *nats.Conn
	// Registry says which devices are enrolled. Only enrolled devices are
	// served; deleting a device's Node revokes it.
	Registry DeviceRegistry
	// Owner says which devices this replica serves, when several replicas
	// share a fleet; nil serves every device.
	Owner Owner
	// NodeAddress is the InternalIP of every device Node: where the API
	// server reaches the kubelet API this process serves for its devices
	// (ServeKubeletAPI).
	NodeAddress string
	// KubeletPort is the port of that API, advertised on every Node
	// that has no port of its own.
	KubeletPort int32
	// KubeletPorts, if set, gives every device Node a kubelet port of its
	// own from this range, bound on KubeletHost, so that the routes that
	// name no pod (/stats/summary, /metrics/resource) know their Node.
	// Served by ServeKubeletAPI.
	KubeletPorts PortRange
	KubeletHost  string
	// Version is reported as each Node's kubeletVersion.
	Version string
	// HeartbeatTimeout is how long a device may be silent before its Node
	// stops being renewed. Default 30s (three heartbeats).
	HeartbeatTimeout time.Duration
	// LeaseDurationSeconds of each device's node lease. Default 40.
	LeaseDurationSeconds int32
	// StatusUpdateInterval is how often an unchanged Node status is
	// written (kubelet's nodeStatusReportFrequency). Default 5m.
	StatusUpdateInterval time.Duration
	// PodSyncWorkers is the number of workers of each of the pod
	// controller's queues. Default DefaultPodSyncWorkers.
	PodSyncWorkers int
	// SystemReserved is held back from every device Node's allocatable
	// (kubelet's --system-reserved); a device's own reserve overrides it
	// resource by resource.
	SystemReserved corev1.ResourceList
	// KVReplicas of the buckets the provider creates. Default 1.
	KVReplicas int
	Logger     *slog.Logger
}

func (c *Config) setDefaults() {
	if c.HeartbeatTimeout <= 0 {
		c.HeartbeatTimeout = 30 * time.Second
	}
	if c.LeaseDurationSeconds <= 0 {
		c.LeaseDurationSeconds = 40
	}
	if c.StatusUpdateInterval <= 0 {
		c.StatusUpdateInterval = 5 * time.Minute
	}
	if c.PodSyncWorkers <= 0 {
		c.PodSyncWorkers = DefaultPodSyncWorkers
	}
	if c.KVReplicas <= 0 {
		c.KVReplicas = 1
	}
	if c.NodeAddress == "" {
		c.NodeAddress = "127.0.0.1"
	}
	if c.KubeletPort == 0 {
		c.KubeletPort = 10250
	}
	if c.Version == "" {
		c.Version = "v0.0.0-dev"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// DeviceRegistry is the set of enrolled devices; *registry.Cache
// implements it.
type DeviceRegistry interface {
	// Has reports whether name is enrolled.
	Has(name string) bool
	// OnDelete registers fn to run when a device is revoked.
	OnDelete(fn func(name string))
}

// Owner decides which replica serves a device; *sharding.Sharder
// implements it.
type Owner interface {
	// Owns reports whether this replica serves device now.
	Owns(device string) bool
	// OnChange registers fn to run when ownership changed. When devices
	// are given up, fn runs before any other replica may take them over,
	// and must stop serving them.
	OnChange(fn func())
}

// Provider serves many devices as Nodes. Create it with New, start it with Run.
type Provider struct {
	cfg Config
	log *slog.Logger

	js        jetstream.JetStream
	workloads jetstream.KeyValue
	status    jetstream.KeyValue

	// started is when this provider was made: a Node created later has no
	// lease yet, unless another replica served it meanwhile.
	started time.Time
	// syncLocks serialise the syncs of one pod (syncLock).
	syncLocks [256]sync.Mutex
	// comingBack counts the devices back from silence whose Node the node
	// loop has yet to write Ready (device.backPending).
	comingBack atomic.Int64
	// backlogSince is when comingBack last rose above backlogDevices (unix
	// nanoseconds; 0 while it is not).
	backlogSince atomic.Int64
	// backlogProgress is when a device back from silence last had its
	// Node written Ready, or stopped needing it (unix nanoseconds).
	backlogProgress atomic.Int64

	mu      sync.Mutex
	devices map[string]*device
	// nodes is the node loop's queue of devices (runNodeLoop).
	nodes workqueue.TypedRateLimitingInterface[string]
	pods  podTable

	rejects rejections
	// cmLister and secretLister read what pods mount; nil in unit tests,
	// which read through the client.
	cmLister     corelisters.ConfigMapLister
	secretLister corelisters.SecretLister
	// svcLister reads services for pods' service variables (under mu);
	// nil in unit tests, which read through the client.
	svcLister corelisters.ServiceLister
	// recorder records events on pods; nil in unit tests.
	recorder  record.EventRecorder
	notifyPod func(*corev1.Pod)
	ready     chan struct{}
	readyOnce sync.Once
	// indexWritten holds, per device, the encoded pod UIDs of the last
	// DesiredIndex written; indexKick asks for the indexes to be checked.
	indexWritten map[string]string
	indexKick    chan struct{}
	// created is when the workloads bucket was created; statusRewatch
	// asks the status watch to start over.
	created       time.Time
	statusRewatch chan struct{}
	// reshard signals that owned devices changed: the pod controller is
	// rebuilt so that it picks up the pods of devices gained.
	reshard chan struct{}
	// ports holds the devices' own kubelet ports; nil without KubeletPorts.
	ports *kubeletPorts
	// cpuPrev holds the last CPU sample of each device and container, for
	// the usage rates of /stats/summary.
	cpuMu   sync.Mutex
	cpuPrev map[string]cpuSample
	// conds remembers when device Nodes' pressure conditions changed.
	conds conditionTimes
}

// New returns a Provider for cfg.
func New(cfg Config) (*Provider, error) {
	cfg.setDefaults()
	if cfg.Client == nil || cfg.NATS == nil || cfg.Registry == nil {
		return nil, errors.New("kubernetes client, nats connection and device registry are required")
	}
	p := &Provider{
		cfg:     cfg,
		log:     cfg.Logger,
		started: time.Now(),
		devices: map[string]*device{},
		nodes:   newNodeQueue(),
		pods:    newPodTable(),
		ready:   make(chan struct{}),
		reshard: make(chan struct{}, 1),

		indexWritten: map[string]string{},
		indexKick:    make(chan struct{}, 1),

		statusRewatch: make(chan struct{}, 1),
		cpuPrev:       map[string]cpuSample{},
	}
	if cfg.KubeletPorts.Size() > 0 {
		p.ports = newKubeletPorts(cfg.KubeletHost, cfg.KubeletPorts, cfg.Logger)
	}
	return p, nil
}

// releasePort gives up device's own kubelet port.
func (p *Provider) releasePort(device string) {
	if p.ports != nil {
		p.ports.release(device)
	}
}

// Ready is closed once the provider serves pods.
func (p *Provider) Ready() <-chan struct{} { return p.ready }

// Run serves devices until ctx ends.
func (p *Provider) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ctx = withVKLogger(ctx, p.log)

	if err := p.openBuckets(ctx); err != nil {
		return err
	}
	if err := p.loadState(ctx); err != nil {
		return err
	}
	p.cfg.Registry.OnDelete(func(name string) { p.revoke(ctx, name) })

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	wg.Add(1)
	go func() {
		defer wg.Done()
		p.watchStatus(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.runNodeLoop(ctx)
	}()
	p.cfg.NATS.SetReconnectHandler(func(*nats.Conn) {
		p.log.Info("nats reconnected")
		metrics.NATSReconnects.Inc()
		go p.resync(ctx)
	})

	sub, err := p.cfg.NATS.Subscribe(bridge.HeartbeatWildcard, func(m *nats.Msg) {
		p.handleHeartbeat(ctx, m)
	})
	if err != nil {
		return fmt.Errorf("subscribing to heartbeats: %w", err)
	}
	defer sub.Unsubscribe()

	if p.cfg.Owner != nil {
		p.cfg.Owner.OnChange(func() { p.ownershipChanged() })
	}
	factory := kubeinformers.NewSharedInformerFactory(p.cfg.Client, 0)
	cmInformer := factory.Core().V1().ConfigMaps()
	secretInformer := factory.Core().V1().Secrets()
	svcInformer := factory.Core().V1().Services()
	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: p.cfg.Client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "vk-fleet"})
	p.recorder = recorder
	// Register the informers before starting the factory: it starts only
	// informers that exist. translate reads them through listers to
	// resolve env from ConfigMaps, Secrets and Services.
	cmInformer.Informer()
	secretInformer.Informer()
	svcInformer.Informer()
	// A ConfigMap or Secret that appears or changes reaches the pods that
	// mount it: a waiting pod starts, a running pod's files follow.
	cmInformer.Informer().AddEventHandler(p.configHandler(ctx, "configmap"))
	secretInformer.Informer().AddEventHandler(p.configHandler(ctx, "secret"))
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("syncing %v informer: %w", typ, ctx.Err())
		}
	}
	p.cmLister, p.secretLister = cmInformer.Lister(), secretInformer.Lister()
	p.mu.Lock()
	p.svcLister = svcInformer.Lister()
	p.mu.Unlock()

	for {
		restart, err := p.runPodController(ctx, recorder, cmInformer, secretInformer, svcInformer)
		if err != nil || !restart {
			cancel()
			p.stopDevices()
			return err
		}
		p.log.Info("owned devices changed; pod controller rebuilt")
	}
}

// runPodController runs one pod controller over a fresh pod informer until
// ctx ends (false) or the owned devices change (true).
func (p *Provider) runPodController(ctx context.Context, recorder record.EventRecorder,
	cm kubecoreinformers.ConfigMapInformer, sec kubecoreinformers.SecretInformer, svc kubecoreinformers.ServiceInformer) (bool, error) {
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	podFactory := kubeinformers.NewSharedInformerFactoryWithOptions(p.cfg.Client, 0,
		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermNotEqualSelector("spec.nodeName", "").String()
		}))
	pc, err := node.NewPodController(node.PodControllerConfig{
		PodClient:          nodeFirstPods{p.cfg.Client.CoreV1(), p.awaitNodeWrites},
		PodInformer:        podFactory.Core().V1().Pods(),
		EventRecorder:      kubeletLikeRecorder{recorder},
		Provider:           p,
		ConfigMapInformer:  cm,
		SecretInformer:     sec,
		ServiceInformer:    svc,
		PodEventFilterFunc: p.servesPod,
		// translate resolves env as a kubelet does; the pod controller's
		// resolution fails on status.podIP and status.hostIP(s), which
		// only the device knows, and drops names Kubernetes allows since
		// 1.34.
		SkipDownwardAPIResolution:             true,
		SyncPodsFromKubernetesShouldRetryFunc: retryWaitingForDevice,
		// Not client-go's default controller limiter: its overall bucket
		// (10/s, burst 100) throttles status updates of a large rollout
		// long before the API client's own QPS does.
		SyncPodsFromKubernetesRateLimiter:    queueRateLimiter(),
		SyncPodStatusFromProviderRateLimiter: queueRateLimiter(),
		DeletePodsFromKubernetesRateLimiter:  queueRateLimiter(),
	})
	if err != nil {
		return false, fmt.Errorf("creating pod controller: %w", err)
	}
	podFactory.Start(gctx.Done())
	pcErr := make(chan error, 1)
	go func() { pcErr <- pc.Run(gctx, p.cfg.PodSyncWorkers) }()
	select {
	case <-pc.Ready():
	case err := <-pcErr:
		return false, fmt.Errorf("running pod controller: %w", err)
	case <-ctx.Done():
		return false, nil
	}
	go p.writeIndexes(gctx, podFactory.Core().V1().Pods().Lister())
	p.readyOnce.Do(func() {
		p.log.Info("provider ready", "devices", len(p.deviceNames()))
		close(p.ready)
	})
	select {
	case <-ctx.Done():
		<-pcErr
		return false, nil
	case err := <-pcErr:
		if err != nil {
			return false, fmt.Errorf("running pod controller: %w", err)
		}
		return false, nil
	case <-p.reshard:
		cancel()
		<-pcErr
		return true, nil
	}
}

// owns reports whether this replica serves device.
func (p *Provider) owns(device string) bool {
	return p.cfg.Owner == nil || p.cfg.Owner.Owns(device)
}

// ownershipChanged stops serving devices given up, at once, and has the pod
// controller rebuilt for devices gained.
func (p *Provider) ownershipChanged() {
	p.mu.Lock()
	var lost []*device
	for name, d := range p.devices {
		if !p.owns(name) {
			lost = append(lost, d)
			delete(p.devices, name)
			p.releasePort(name)
			p.conds.forget(name)
		}
	}
	p.mu.Unlock()
	for _, d := range lost {
		d.mu.Lock()
		d.served = false
		p.settleBack(d)
		d.mu.Unlock()
	}
	if len(lost) > 0 {
		p.log.Info("devices handed over to another replica", "count", len(lost))
	}
	select {
	case p.reshard <- struct{}{}:
	default:
	}
}

// queueRateLimiter retries a failing item with exponential back-off and
// lets new items through at once.
func queueRateLimiter() workqueue.TypedRateLimiter[any] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[any](5*time.Millisecond, 30*time.Second)
}

// DefaultPodSyncWorkers is how many pod status writes (and pod syncs) run
// at once. A status write waits about 0.2 s on a loaded API server: ten
// workers wrote 44 statuses a second in a 3,000-device rollout, fewer than
// the scheduler bound, and pods waited in vk-fleet's queue 10 s (p50)
// between their binding and Running; with 50, 0.46 s (docs/benchmarks.md).
// A kubelet writes its own pods' statuses; thousands of them write at once.
const DefaultPodSyncWorkers = 50

// Sizes of the buckets: a bound on the disk vk-fleet's NATS may use, far
// above what a fleet of 10,000 devices writes.
const (
	workloadsMaxBytes = 1 << 30
	statusMaxBytes    = 256 << 20
)

// createBucket creates or updates a bucket. A NATS whose JetStream storage
// cannot reserve cfg.MaxBytes gets the bucket without that bound rather
// than no bucket.
func createBucket(ctx context.Context, js jetstream.JetStream, log *slog.Logger, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil && cfg.MaxBytes > 0 && strings.Contains(err.Error(), "insufficient") {
		log.Warn("nats cannot reserve the bucket's size; creating it without that bound", "bucket", cfg.Bucket, "maxBytes", cfg.MaxBytes, "err", err)
		cfg.MaxBytes = 0
		kv, err = js.CreateOrUpdateKeyValue(ctx, cfg)
	}
	return kv, err
}

// bucketConfigs returns the configurations of the workloads and status
// buckets.
func (p *Provider) bucketConfigs() (workloads, status jetstream.KeyValueConfig) {
	workloads = jetstream.KeyValueConfig{
		Bucket:       bridge.WorkloadsBucket,
		Description:  "vk-fleet desired state: one Workload per <device>.<podUID>",
		History:      1,
		Storage:      jetstream.FileStorage,
		Replicas:     p.cfg.KVReplicas,
		MaxValueSize: bridge.MaxMessageBytes,
		MaxBytes:     workloadsMaxBytes,
	}
	status = workloads
	status.Bucket = bridge.StatusBucket
	status.Description = "vk-fleet observed state: one PodStatus per <device>.<podUID>"
	status.MaxBytes = statusMaxBytes
	return workloads, status
}

func (p *Provider) openBuckets(ctx context.Context) error {
	js, err := jetstream.New(p.cfg.NATS)
	if err != nil {
		return fmt.Errorf("opening jetstream: %w", err)
	}
	p.js = js
	wcfg, scfg := p.bucketConfigs()
	if p.workloads, err = createBucket(ctx, js, p.log, wcfg); err != nil {
		return fmt.Errorf("creating bucket %s: %w", wcfg.Bucket, err)
	}
	if p.status, err = createBucket(ctx, js, p.log, scfg); err != nil {
		return fmt.Errorf("creating bucket %s: %w", scfg.Bucket, err)
	}
	created, err := p.bucketCreated(ctx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.created = created
	p.mu.Unlock()
	return nil
}

// bucketCreated returns when the workloads bucket was created: a new time
// means a new bucket (a NATS that lost its store).
func (p *Provider) bucketCreated(ctx context.Context) (time.Time, error) {
	st, err := p.workloads.Status(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading bucket %s: %w", bridge.WorkloadsBucket, err)
	}
	if s, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		return s.StreamInfo().Created, nil
	}
	return time.Time{}, nil
}

// resync, run after a reconnect to NATS, re-publishes the desired state of
// every pod if the buckets are new: an external NATS that lost its store
// comes back empty, and the provider's memory of what it published would
// otherwise keep it from publishing again. The status watch starts over.
func (p *Provider) resync(ctx context.Context) {
	wcfg, scfg := p.bucketConfigs()
	for _, b := range []jetstream.KeyValueConfig{wcfg, scfg} {
		if _, err := createBucket(ctx, p.js, p.log, b); err != nil {
			p.log.Warn("re-creating bucket after a reconnect", "bucket", b.Bucket, "err", err)
			return
		}
	}
	select {
	case p.statusRewatch <- struct{}{}:
	default:
	}
	created, err := p.bucketCreated(ctx)
	if err != nil {
		p.log.Warn("after a reconnect", "err", err)
		return
	}
	p.mu.Lock()
	same := created.Equal(p.created)
	p.created = created
	var pods []podID
	if !same {
		p.pods.desired = map[string][]byte{}
		p.indexWritten = map[string]string{}
		for _, ent := range p.pods.byKey {
			if ent.pod != nil && !ent.deleting && ent.refusal == nil {
				pods = append(pods, idOf(ent.pod))
			}
		}
	}
	p.mu.Unlock()
	if same {
		return
	}
	p.log.Warn("the workloads bucket is new (NATS lost its store): re-publishing desired state", "pods", len(pods))
	for _, id := range pods {
		if err := p.resyncPod(ctx, id); err != nil {
			p.log.Warn("re-publishing", "pod", id.namespace+"/"+id.name, "err", err)
		}
	}
	p.kickIndexes()
}

// ServedDevices returns the devices whose Nodes this process keeps now.
func (p *Provider) ServedDevices() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := []string{}
	for n, d := range p.devices {
		d.mu.Lock()
		if d.served {
			out = append(out, n)
		}
		d.mu.Unlock()
	}
	sort.Strings(out)
	return out
}

func (p *Provider) deviceNames() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.devices))
	for n := range p.devices {
		out = append(out, n)
	}
	return out
}

// servesPod reports whether pod is bound to a device of this process.
func (p *Provider) servesPod(_ context.Context, pod *corev1.Pod) bool {
	return pod.Spec.NodeName != "" && p.cfg.Registry.Has(pod.Spec.NodeName) && p.owns(pod.Spec.NodeName)
}

// revoke stops serving a device whose Node was deleted and withdraws its
// desired and observed state from the buckets.
func (p *Provider) revoke(ctx context.Context, name string) {
	p.mu.Lock()
	d := p.devices[name]
	delete(p.devices, name)
	p.releasePort(name)
	p.conds.forget(name)
	var keys []string
	for k := range p.pods.desired {
		if dev, _, ok := bridge.SplitPodKey(k); ok && dev == name {
			keys = append(keys, k)
		}
	}
	p.mu.Unlock()
	if d != nil {
		d.mu.Lock()
		d.served = false
		p.settleBack(d)
		d.mu.Unlock()
	}
	keys = append(keys, bridge.IndexKey(name))
	p.mu.Lock()
	delete(p.indexWritten, name)
	p.mu.Unlock()
	for _, k := range keys {
		if err := p.workloads.Purge(ctx, k); err != nil {
			p.log.Warn("purging workload of revoked device", "device", name, "key", k, "err", err)
			continue
		}
		p.mu.Lock()
		delete(p.pods.desired, k)
		p.mu.Unlock()
	}
	if lister, err := p.status.ListKeysFiltered(ctx, bridge.DeviceKeys(name)); err == nil {
		for k := range lister.Keys() {
			_ = p.status.Purge(ctx, k)
		}
	}
	p.log.Info("device revoked", "device", name, "workloadsWithdrawn", len(keys))
}

func (p *Provider) stopDevices() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range p.devices {
		d.mu.Lock()
		d.served = false
		d.mu.Unlock()
	}
}
