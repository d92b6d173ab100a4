package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vk-fleet/vk-fleet/registry"
	"github.com/vk-fleet/vk-fleet/test/framework/controlplane"
	"github.com/vk-fleet/vk-fleet/test/framework/devcluster"
)

// result is everything measured for one fleet size.
type result struct {
	N                int
	Ours, Base       rollout
	Enrolled         time.Duration // all N devices enrolled (their Nodes exist), one N-use token
	ReadyAfterEnroll time.Duration // all Nodes Ready after N devices enrolled and connected
	Reconnect        time.Duration // all Nodes Ready again after N devices reconnect at once
	Reconnected      time.Duration // vk-fleet has heard from all N devices again (the rest of Reconnect is Node writes)
	BaseReconnect    time.Duration // the baseline's Nodes all Ready again after the same reconnect (0: not measured)
	ReconnectAPI     float64       // vk-fleet's API requests per device from the reconnect until all Ready
	EnrollCPU        cpuUse        // CPU time by process from the simulator's start until all N Nodes exist
	ReconnectCPU     cpuUse        // CPU time by process from the reconnect until all Ready
	BaseReconnectCPU cpuUse        // the same for the baseline's reconnect
	IdleRSS          int64
	IdleAnon         int64 // of IdleRSS, the process's own memory (not the pages of its executable)
	RolloutRSS       int64
	IdleGoroutines   int
	IdleCPU          float64 // CPU seconds per second, whole process
	RolloutCPU       float64
	APIPerDevMin     float64
	NATSBytesDevMin  float64
}

func (r result) summary() string {
	return fmt.Sprintf("n=%d ours p50/p90/p99 %s/%s/%s all-ready %s | baseline %s/%s/%s all-ready %s",
		r.N, r.Ours.P50, r.Ours.P90, r.Ours.P99, r.Ours.AllReady, r.Base.P50, r.Base.P90, r.Base.P99, r.Base.AllReady)
}

type debugVars struct {
	Goroutines   int   `json:"goroutines"`
	Connected    int   `json:"connected_devices"`
	KubeRequests int64 `json:"kube_requests"`
	NATS         struct {
		InBytes  int64 `json:"in_bytes"`
		OutBytes int64 `json:"out_bytes"`
		Conns    int   `json:"connections"`
	} `json:"nats"`
}

func readVars(addr string) (debugVars, error) {
	var v debugVars
	resp, err := http.Get("http://" + addr + "/debug/vars")
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	return v, json.NewDecoder(resp.Body).Decode(&v)
}

func runSize(ctx context.Context, rc runConfig) (result, error) {
	res := result{N: rc.N}
	log := rc.Log.With("n", rc.N)
	cp, err := controlplane.Start(ctx, controlplane.Config{
		BinDir: rc.CPBin, Dir: filepath.Join(rc.Dir, "cp"), Logger: log,
		ExtraAPIServerArgs:         []string{"--max-requests-inflight=1000", "--max-mutating-requests-inflight=500"},
		ExtraControllerManagerArgs: kcmArgs(rc.KCMFeatureGates),
	})
	if err != nil {
		return res, err
	}
	defer cp.Stop()
	cfg := *cp.RESTConfig
	// The baseline client stands in for N kubelets, each with its own
	// budget: it gets a generous one. vk-fleet runs with its defaults.
	cfg.QPS, cfg.Burst = 1000, 2000
	// Protobuf, as the control plane's own clients: listing 10,000 Nodes
	// to count them must not load the API server the benchmark measures.
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cs, err := kubernetes.NewForConfig(&cfg)
	if err != nil {
		return res, err
	}
	rollTimeout := time.Duration(rc.N)*300*time.Millisecond + 3*time.Minute

	if rc.Baseline {
		if err := runBaseline(ctx, cs, rc, &res, rollTimeout); err != nil {
			return res, err
		}
	}
	return runOurs(ctx, cp, cs, rc, res, rollTimeout)
}

// runBaseline measures a rollout to Nodes a minimal client keeps.
func runBaseline(ctx context.Context, cs kubernetes.Interface, rc runConfig, res *result, rollTimeout time.Duration) error {
	log := rc.Log.With("n", rc.N)
	log.Info("baseline: registering nodes")
	bctx, bcancel := context.WithCancel(ctx)
	b, err := startBaseline(bctx, cs, rc.N, 10)
	if err != nil {
		bcancel()
		return err
	}
	// A first rollout warms the control plane's caches, so that neither
	// measured rollout pays for being first.
	if _, err = measureRollout(ctx, cs, "bench-warmup", map[string]string{"bench": "baseline"}, rc.N, rollTimeout); err != nil {
		bcancel()
		return fmt.Errorf("warm-up: %w", err)
	}
	_ = deleteDaemonSet(ctx, cs, "bench-warmup", rollTimeout)
	if res.Base, err = measureRollouts(ctx, cs, "bench-baseline", map[string]string{"bench": "baseline"}, rc.N, rolloutRepeats(rc.N), rollTimeout); err != nil {
		bcancel()
		return fmt.Errorf("baseline: %w", err)
	}
	log.Info("baseline done", "p99", res.Base.P99)
	// The same mass reconnect as vk-fleet's below, with the pods of the
	// last rollout on the Nodes.
	if res.BaseReconnect, res.BaseReconnectCPU, err = b.reconnect(ctx, 10*time.Minute); err != nil {
		bcancel()
		return err
	}
	log.Info("baseline reconnect", "all ready", res.BaseReconnect, "cpu", res.BaseReconnectCPU)
	_ = deleteDaemonSet(ctx, cs, "bench-baseline", rollTimeout)
	bcancel()
	return b.remove(ctx)
}

// runOurs measures vk-fleet with N simulated devices.
func runOurs(ctx context.Context, cp *controlplane.ControlPlane, cs kubernetes.Interface, rc runConfig, res result, rollTimeout time.Duration) (result, error) {
	log := rc.Log.With("n", rc.N)

	// vk-fleet.
	natsPort, _ := devcluster.FreePort()
	debugPort, _ := devcluster.FreePort()
	debugAddr := "127.0.0.1:" + strconv.Itoa(debugPort)
	kubeconfig, err := cp.ClientKubeconfig("vk-fleet", "system:masters")
	if err != nil {
		return res, err
	}
	vkf, err := devcluster.StartProcess("vk-fleet", filepath.Join(rc.Dir, "vk-fleet.log"), rc.VKFleetEnv, filepath.Join(rc.BinDir, "vk-fleet"),
		"--kubeconfig", kubeconfig, "--nats-listen", "127.0.0.1:"+strconv.Itoa(natsPort),
		"--nats-store-dir", filepath.Join(rc.Dir, "nats"), "--node-address", "127.0.0.1",
		"--debug-listen", debugAddr, "--log-level", vkFleetLogLevel(), "--kubelet-listen", "off")
	if err != nil {
		return res, err
	}
	defer vkf.Stop(10 * time.Second)
	if err := waitHTTP(ctx, debugAddr, vkf); err != nil {
		return res, err
	}
	tok, err := registry.New(cs).CreateToken(ctx, registry.TokenOptions{TTL: time.Hour, Uses: rc.N})
	if err != nil {
		return res, err
	}
	caFile := filepath.Join(rc.Dir, "nats-ca.crt")
	if err := waitCA(ctx, cs, caFile); err != nil {
		return res, err
	}
	// Each simulated device keeps its state in memory (tmpfs where there
	// is one): a real device has a disk of its own, and N devices queued
	// behind this machine's one disk (a few fsyncs per pod each) would
	// measure that disk, not vk-fleet.
	simDir, err := os.MkdirTemp(shmDir(), "vkf-bench-sim-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(simDir)
	simArgs := []string{"simulate", "--count", strconv.Itoa(rc.N), "--prefix", "sim-",
		"--nats-url", "tls://127.0.0.1:" + strconv.Itoa(natsPort), "--ca-file", caFile, "--token", tok.String(),
		"--label", "bench=sim", "--state-dir", simDir,
		// A fleet enrolls at once: a thousand Pis switched on together.
		"--enroll-concurrency", "256", "--log-level", logLevel()}
	startSim := func(phase string) (*devcluster.Process, error) {
		args := simArgs
		if rc.Profiles != "" {
			if err := os.MkdirAll(rc.Profiles, 0o755); err != nil {
				return nil, err
			}
			args = append(slices.Clone(simArgs), "--cpu-profile", filepath.Join(rc.Profiles, fmt.Sprintf("sim-cpu-%s-%d.pprof", phase, rc.N)))
		}
		return devcluster.StartProcess("simulate", filepath.Join(rc.Dir, "simulate.log"), nil, filepath.Join(rc.BinDir, "device-agent"), args...)
	}
	if rc.Profiles != "" {
		go saveCPUProfile(debugAddr, rc.Profiles, fmt.Sprintf("cpu-enroll-%d.pprof", rc.N), 12*time.Second, log)
	}
	ae0, aeErr := apiWrites(ctx, cs)
	enrollCensus := takeCPUSnapshot()
	simStart := time.Now()
	sim, err := startSim("enroll")
	if err != nil {
		return res, err
	}
	defer func() { sim.Stop(10 * time.Second) }()
	log.Info("vk-fleet: waiting for simulated devices")
	if res.Enrolled, err = waitNodes(ctx, cs, "bench=sim", rc.N, "", rollTimeout); err != nil {
		return res, fmt.Errorf("devices enrolled: %w\n%s", err, sim.Tail(10))
	}
	res.Enrolled = time.Since(simStart)
	res.EnrollCPU = cpuUsedSince(enrollCensus, "device-agent")
	log.Info("enrollment", "all enrolled", res.Enrolled, "cpu", res.EnrollCPU)
	if ae1, err := apiWrites(ctx, cs); err == nil && aeErr == nil {
		log.Info("enrollment: kube-apiserver writes", "writes", writeCensus(ae0, ae1, rc.N))
	}
	readyTimeout := rollTimeout
	if !rc.Rollout {
		readyTimeout = 10 * time.Minute
	}
	if _, err = waitNodes(ctx, cs, "bench=sim", rc.N, corev1.ConditionTrue, readyTimeout); err != nil {
		return res, fmt.Errorf("devices ready: %w\n%s", err, sim.Tail(10))
	}
	res.ReadyAfterEnroll = time.Since(simStart)
	// The simulator's own account of where the enrollments' time went.
	logSimulator(rc.Dir, "simulated devices enrolled and connected", "vk-fleet: enrollment phases", log)

	// Idle.
	pid := vkf.PID()
	v0, _ := readVars(debugAddr)
	_, cpu0 := procStat(pid)
	t0 := time.Now()
	time.Sleep(rc.Idle) // a measurement window, not synchronisation
	v1, err := readVars(debugAddr)
	if err != nil {
		return res, err
	}
	rss, cpu1 := procStat(pid)
	el := time.Since(t0)
	res.IdleRSS, res.IdleGoroutines = rss, v1.Goroutines
	res.IdleAnon = deviceRSS(pid).Anon
	res.IdleCPU = (cpu1 - cpu0).Seconds() / el.Seconds()
	perDevMin := func(d int64) float64 { return float64(d) / float64(rc.N) / el.Minutes() }
	res.APIPerDevMin = perDevMin(v1.KubeRequests - v0.KubeRequests)
	res.NATSBytesDevMin = perDevMin((v1.NATS.InBytes + v1.NATS.OutBytes) - (v0.NATS.InBytes + v0.NATS.OutBytes))
	if rc.Profiles != "" {
		saveProfiles(debugAddr, rc.Profiles, rc.N, log)
	}

	if rc.Rollout {
		// Rollout, after a warm-up rollout to the same Nodes, as the baseline's:
		// neither measured rollout pays for the control plane's first sight of
		// its Nodes.
		if _, err = measureRollout(ctx, cs, "bench-vkfleet-warmup", map[string]string{"bench": "sim"}, rc.N, rollTimeout); err != nil {
			return res, fmt.Errorf("vk-fleet warm-up: %w", err)
		}
		if err := deleteDaemonSet(ctx, cs, "bench-vkfleet-warmup", rollTimeout); err != nil {
			return res, fmt.Errorf("vk-fleet warm-up: %w", err)
		}
		_, cpu0 = procStat(pid)
		t0 = time.Now()
		stop := make(chan struct{})
		peak := make(chan int64, 1)
		go func() {
			var max int64
			for {
				if r, _ := procStat(pid); r > max {
					max = r
				}
				select {
				case <-stop:
					peak <- max
					return
				case <-time.After(500 * time.Millisecond):
				}
			}
		}()
		work0, _ := readCounters(debugAddr, workMetrics)
		res.Ours, err = measureRollouts(ctx, cs, "bench-vkfleet", map[string]string{"bench": "sim"}, rc.N, rolloutRepeats(rc.N), rollTimeout)
		close(stop)
		if work1, werr := readCounters(debugAddr, workMetrics); werr == nil && work0 != nil {
			log.Info("vk-fleet rollout: vk-fleet's writes and waits", promDelta(work0, work1)...)
		}
		res.RolloutRSS = <-peak
		_, cpu1 = procStat(pid)
		res.RolloutCPU = (cpu1 - cpu0).Seconds() / time.Since(t0).Seconds()
		if err != nil {
			return res, fmt.Errorf("vk-fleet rollout: %w", err)
		}
		log.Info("vk-fleet rollout done", "p99", res.Ours.P99)
	}

	// Reconnect: every device drops at once, the Nodes go NotReady, then all reconnect.
	sim.Kill()
	if _, err := waitNodes(ctx, cs, "bench=sim", rc.N, corev1.ConditionUnknown, 5*time.Minute); err != nil {
		return res, fmt.Errorf("devices going NotReady: %w", err)
	}
	vr0, _ := readVars(debugAddr)
	rw0, _ := readCounters(debugAddr, workMetrics)
	aw0, awErr := apiWrites(ctx, cs)
	// The reconnect's profiles, if any, end before vk-fleet does.
	var first, more sync.WaitGroup
	// profiles writes vk-fleet's profiles over the next vkD and
	// kube-apiserver's over apiD, side by side, and returns when both are.
	profiles := func(phase string, vkD, apiD time.Duration) {
		var both sync.WaitGroup
		both.Add(2)
		go func() {
			defer both.Done()
			saveCPUProfile(debugAddr, rc.Profiles, fmt.Sprintf("cpu-%s-%d.pprof", phase, rc.N), vkD, log)
		}()
		go func() {
			defer both.Done()
			saveAPIServerProfile(ctx, cs, rc.Profiles, fmt.Sprintf("apiserver-cpu-%s-%d.pprof", phase, rc.N), apiD, log)
		}()
		both.Wait()
	}
	if rc.Profiles != "" {
		first.Add(1)
		go func() {
			defer first.Done()
			profiles("reconnect", 12*time.Second, 20*time.Second)
		}()
	}
	reconnStart := time.Now()
	census0 := takeCPUSnapshot()
	if sim, err = startSim("reconnect"); err != nil {
		return res, err
	}
	connected := watchConnected(ctx, debugAddr, rc.N)
	var heard <-chan time.Time = connected
	if rc.Profiles != "" {
		// Once every device is heard from, what is left is Node writes:
		// profiles of that part too.
		tee := make(chan time.Time, 1)
		heard = tee
		more.Add(1)
		go func() {
			defer more.Done()
			t, ok := <-connected
			if !ok {
				close(tee)
				return
			}
			tee <- t
			close(tee)
			// One CPU profile of a process at a time: after the first.
			first.Wait()
			profiles("reconnect-after-heard", 15*time.Second, 15*time.Second)
		}()
	}
	if res.Reconnect, err = waitNodes(ctx, cs, "bench=sim", rc.N, corev1.ConditionTrue, readyTimeout); err != nil {
		return res, fmt.Errorf("reconnect: %w", err)
	}
	res.ReconnectCPU = cpuUsedSince(census0, "device-agent")
	if t, ok := <-heard; ok {
		res.Reconnected = t.Sub(reconnStart)
	}
	log.Info("reconnect", "all connected", res.Reconnected, "all ready", res.Reconnect, "cpu", res.ReconnectCPU)
	if last, err := lastReadyTransition(ctx, cs, "bench=sim"); err == nil {
		// When vk-fleet built the last Node's Ready write (its condition's
		// transition time, to the second), against when the benchmark's
		// watch saw it.
		log.Info("reconnect: the last Node's Ready condition", "written after", last.Sub(reconnStart).Round(time.Second), "seen after", res.Reconnect.Round(time.Second))
	}
	// Every client's writes until all were Ready: vk-fleet's, and the
	// control plane's answer to the Nodes going and coming back.
	if aw1, err := apiWrites(ctx, cs); err == nil && awErr == nil {
		log.Info("reconnect: kube-apiserver writes", "writes", writeCensus(aw0, aw1, rc.N))
	}
	if rw1, err := readCounters(debugAddr, workMetrics); err == nil && rw0 != nil {
		log.Info("reconnect: vk-fleet's writes and waits", promDelta(rw0, rw1)...)
	}
	// When each device connected, and its failed attempts by reason.
	logSimulator(rc.Dir, "simulated devices connected", "vk-fleet: reconnect attempts", log)
	if vr1, err := readVars(debugAddr); err == nil {
		res.ReconnectAPI = float64(vr1.KubeRequests-vr0.KubeRequests) / float64(rc.N)
	}
	first.Wait()
	more.Wait()
	return res, nil
}

// kcmArgs returns kube-controller-manager's extra flags. Its default client
// budget (20 QPS) is sized for small clusters: at 1,000 nodes it takes
// minutes just to mark them NotReady. Large clusters raise it; so does the
// benchmark, for the baseline and vk-fleet alike.
func kcmArgs(featureGates string) []string {
	args := []string{"--kube-api-qps=100", "--kube-api-burst=200"}
	if featureGates != "" {
		args = append(args, "--feature-gates="+featureGates)
	}
	return args
}

func waitHTTP(ctx context.Context, addr string, p *devcluster.Process) error {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if _, err := readVars(addr); err == nil {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("vk-fleet exited:\n%s", p.Tail(20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("vk-fleet debug endpoint never answered:\n%s", p.Tail(20))
}

func waitCA(ctx context.Context, cs kubernetes.Interface, path string) error {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		cm, err := cs.CoreV1().ConfigMaps(registry.DefaultTokenNamespace).Get(ctx, registry.CAConfigMap, metaGet)
		if err == nil && cm.Data["ca.crt"] != "" {
			return os.WriteFile(path, []byte(cm.Data["ca.crt"]), 0o644)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("vk-fleet never published its CA")
}

// watchConnected reports when vk-fleet first has heard from want devices
// since they went silent (within 10 minutes); the channel closes without a
// value if it never does.
func watchConnected(ctx context.Context, addr string, want int) <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() {
		defer close(ch)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		deadline := time.Now().Add(10 * time.Minute)
		for time.Now().Before(deadline) {
			if v, err := readVars(addr); err == nil && v.Connected >= want {
				ch <- time.Now()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return ch
}

// lastReadyTransition returns the latest Ready transition time of the
// Nodes matching sel.
func lastReadyTransition(ctx context.Context, cs kubernetes.Interface, sel string) (time.Time, error) {
	l, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: "0"})
	if err != nil {
		return time.Time{}, err
	}
	var last time.Time
	for _, n := range l.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.LastTransitionTime.After(last) {
				last = c.LastTransitionTime.Time
			}
		}
	}
	return last, nil
}

// saveCPUProfile writes a CPU profile of vk-fleet over the next d, and
// a profile of what it allocated meanwhile.
func saveCPUProfile(addr, dir, file string, d time.Duration, log *slog.Logger) {
	allocs := make(chan struct{})
	go func() {
		defer close(allocs)
		saveDeltaProfile(addr, dir, "allocs-"+strings.TrimPrefix(file, "cpu-"), "allocs", d, log)
	}()
	saveDeltaProfile(addr, dir, file, "profile", d, log)
	<-allocs
}

// saveDeltaProfile writes vk-fleet's profile kind (profile: CPU; allocs)
// over the next d.
func saveDeltaProfile(addr, dir, file, kind string, d time.Duration, log *slog.Logger) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Warn("profiles", "err", err)
		return
	}
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", addr, kind, int(d.Seconds())))
	if err != nil {
		log.Warn("profiles", "err", err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, file), b, 0o644)
	}
	if err != nil {
		log.Warn("profiles", "err", err)
	}
}

// logSimulator copies the simulator's log lines containing substr into the
// benchmark's log, as msg.
func logSimulator(dir, substr, msg string, log *slog.Logger) {
	b, err := os.ReadFile(filepath.Join(dir, "simulate.log"))
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, substr) {
			log.Info(msg, "simulator", l)
		}
	}
}

// saveAPIServerProfile writes a CPU profile of kube-apiserver over the
// next d.
func saveAPIServerProfile(ctx context.Context, cs kubernetes.Interface, dir, file string, d time.Duration, log *slog.Logger) {
	b, err := cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").
		Param("seconds", strconv.Itoa(int(d.Seconds()))).Timeout(d + 30*time.Second).DoRaw(ctx)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, file), b, 0o644)
	}
	if err != nil {
		log.Warn("profiles", "err", err)
	}
}

// saveProfiles writes vk-fleet's heap profile and goroutine dump.
func saveProfiles(addr, dir string, n int, log *slog.Logger) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Warn("profiles", "err", err)
		return
	}
	for _, p := range []struct{ path, file string }{
		{"/debug/pprof/heap", fmt.Sprintf("heap-%d.pprof", n)},
		{"/debug/pprof/goroutine?debug=1", fmt.Sprintf("goroutine-%d.txt", n)},
		{"/debug/vars", fmt.Sprintf("vars-%d.json", n)}, // runtime memstats
	} {
		resp, err := http.Get("http://" + addr + p.path)
		if err != nil {
			log.Warn("profiles", "err", err)
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, p.file), b, 0o644)
		}
		if err != nil {
			log.Warn("profiles", "err", err)
		}
	}
}

// shmDir is a tmpfs directory for the simulated devices' state, or the
// default temporary directory.
func shmDir() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return ""
}

// vkFleetLogLevel is vk-fleet's log level: VKF_BENCH_VKFLEET_LOG_LEVEL, or
// the benchmark's (logLevel), so that vk-fleet can say more than the
// thousands of simulated devices do.
func vkFleetLogLevel() string {
	if l := os.Getenv("VKF_BENCH_VKFLEET_LOG_LEVEL"); l != "" {
		return l
	}
	return logLevel()
}

// logLevel is the log level of vk-fleet and the simulated devices:
// VKF_BENCH_LOG_LEVEL, default warn (logs cost CPU the benchmark measures).
func logLevel() string {
	if l := os.Getenv("VKF_BENCH_LOG_LEVEL"); l != "" {
		return l
	}
	return "warn"
}
