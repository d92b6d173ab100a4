package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

func numCPU() int { return runtime.NumCPU() }

// rollout is the measured rollout of one DaemonSet.
type rollout struct {
	P50, P90, P99 time.Duration
	AllReady      time.Duration // until the DaemonSet reported every pod ready
}

// measureRollouts measures repeat rollouts of DaemonSets named name-1,
// name-2, ... and last name, one after the other (each but the last
// deleted before the next), and
// returns the median of each figure: at small sizes a rollout takes about a
// second, and one measurement moves with whatever else the machine does.
func measureRollouts(ctx context.Context, cs kubernetes.Interface, name string, sel map[string]string, n, repeat int, timeout time.Duration) (rollout, error) {
	var rs []rollout
	for i := range max(repeat, 1) {
		ds := name // the last one stays
		if i < repeat-1 {
			ds = fmt.Sprintf("%s-%d", name, i+1)
		}
		r, err := measureRollout(ctx, cs, ds, sel, n, timeout)
		if err != nil {
			return rollout{}, err
		}
		rs = append(rs, r)
		if i < repeat-1 {
			if err := deleteDaemonSet(ctx, cs, ds, timeout); err != nil {
				return rollout{}, err
			}
		}
	}
	median := func(f func(rollout) time.Duration) time.Duration {
		ds := make([]time.Duration, len(rs))
		for i, r := range rs {
			ds[i] = f(r)
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2]
	}
	return rollout{
		P50:      median(func(r rollout) time.Duration { return r.P50 }),
		P90:      median(func(r rollout) time.Duration { return r.P90 }),
		P99:      median(func(r rollout) time.Duration { return r.P99 }),
		AllReady: median(func(r rollout) time.Duration { return r.AllReady }),
	}, nil
}

// rolloutRepeats is how many measured rollouts a size gets: five below
// 1,000 devices, where one takes a second or two; one from 1,000 up.
func rolloutRepeats(n int) int {
	if n < 1000 {
		return 5
	}
	return 1
}

// measureRollout creates a DaemonSet for the nodes labelled sel and watches
// each of its pods until Running; latency is from just before the create
// call to the moment the watch sees the pod Running.
func measureRollout(ctx context.Context, cs kubernetes.Interface, name string, sel map[string]string, n int, timeout time.Duration) (rollout, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace("default"),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "app=" + name }))
	inf := f.Core().V1().Pods().Informer()
	var mu sync.Mutex
	running := map[string]time.Time{}
	bound := map[string]time.Time{}
	done := make(chan struct{})
	var start time.Time
	see := func(o any) {
		p, ok := o.(*corev1.Pod)
		if !ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if _, seen := bound[p.Name]; !seen && p.Spec.NodeName != "" {
			bound[p.Name] = time.Now()
		}
		if p.Status.Phase != corev1.PodRunning {
			return
		}
		if _, seen := running[p.Name]; !seen {
			running[p.Name] = time.Now()
			if len(running) == n {
				close(done)
			}
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: see, UpdateFunc: func(_, o any) { see(o) }})
	// The DaemonSet's status, followed by a watch: at small sizes the whole
	// rollout takes about a second, which polling would blur.
	var allReady time.Time
	ready := make(chan struct{})
	dsf := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace("default"),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "metadata.name=" + name }))
	seeDS := func(o any) {
		d, ok := o.(*appsv1.DaemonSet)
		if !ok || d.Status.NumberReady != int32(n) || d.Status.DesiredNumberScheduled != int32(n) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if allReady.IsZero() {
			allReady = time.Now()
			close(ready)
		}
	}
	_, _ = dsf.Apps().V1().DaemonSets().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: seeDS, UpdateFunc: func(_, o any) { seeDS(o) }})
	f.Start(ctx.Done())
	dsf.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	dsf.WaitForCacheSync(ctx.Done())

	two := int64(2)
	labels := map[string]string{"app": name}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: appsv1.DaemonSetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: labels},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector:                  sel,
					TerminationGracePeriodSeconds: &two,
					Tolerations:                   []corev1.Toleration{{Key: "virtual-kubelet.io/provider", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
					Containers:                    []corev1.Container{{Name: "app", Image: "localhost/bench:v1", Command: []string{"sleep", "3600"}}},
				},
			},
		},
	}
	start = time.Now()
	if _, err := cs.AppsV1().DaemonSets("default").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		return rollout{}, fmt.Errorf("creating daemonset: %w", err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		mu.Lock()
		got := len(running)
		mu.Unlock()
		return rollout{}, fmt.Errorf("only %d of %d pods Running: %w", got, n, ctx.Err())
	}
	var r rollout
	select {
	case <-ready:
	case <-ctx.Done():
		return rollout{}, fmt.Errorf("daemonset never reported %d ready: %w", n, ctx.Err())
	}
	r.AllReady = allReady.Sub(start)
	mu.Lock()
	lat := make([]time.Duration, 0, len(running))
	for _, t := range running {
		lat = append(lat, t.Sub(start))
	}
	var node []time.Duration // bound to its Node → Running: the Node's own part
	for name, t := range running {
		if b, ok := bound[name]; ok {
			node = append(node, t.Sub(b))
		}
	}
	mu.Unlock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	sort.Slice(node, func(i, j int) bool { return node[i] < node[j] })
	r.P50, r.P90, r.P99 = pct(lat, 50), pct(lat, 90), pct(lat, 99)
	slog.Info("rollout", "name", name, "p50", r.P50, "p99", r.P99, "boundToRunningP50", pct(node, 50), "boundToRunningP99", pct(node, 99))
	return r, nil
}

func pct(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := (len(s)*p + 99) / 100
	if i > len(s) {
		i = len(s)
	}
	if i < 1 {
		i = 1
	}
	return s[i-1]
}

// deleteDaemonSet removes a DaemonSet and waits for its pods to go.
func deleteDaemonSet(ctx context.Context, cs kubernetes.Interface, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	bg := metav1.DeletePropagationBackground
	if err := cs.AppsV1().DaemonSets("default").Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
		return err
	}
	for {
		l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err == nil && len(l.Items) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pods of %s not gone: %w", name, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// nodeMatches reports whether node's Ready status is want: True, not True
// (any other want), or, with want "", whether it exists.
func nodeMatches(node *corev1.Node, want corev1.ConditionStatus) bool {
	if want == "" {
		return true
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == want || want != corev1.ConditionTrue && c.Status != corev1.ConditionTrue
		}
	}
	return false
}

// waitNodes waits until n Nodes matching sel are Ready (want=True), not
// Ready (any other status), or exist (want=""). It follows the Nodes with
// a watch: listing thousands of Nodes again and again would load the API
// server the benchmark measures.
func waitNodes(ctx context.Context, cs kubernetes.Interface, sel string, n int, want corev1.ConditionStatus, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		mu      sync.Mutex
		matched = map[string]bool{}
		enough  = make(chan struct{})
		closed  bool
	)
	set := func(o any, deleted bool) {
		if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
			o = t.Obj
		}
		node, ok := o.(*corev1.Node)
		if !ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !deleted && nodeMatches(node, want) {
			matched[node.Name] = true
		} else {
			delete(matched, node.Name)
		}
		if len(matched) >= n && !closed {
			closed = true
			close(enough)
		}
	}
	lw := cache.NewFilteredListWatchFromClient(cs.CoreV1().RESTClient(), "nodes", "", func(o *metav1.ListOptions) { o.LabelSelector = sel })
	inf := cache.NewSharedIndexInformer(lw, &corev1.Node{}, 0, cache.Indexers{})
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { set(o, false) },
		UpdateFunc: func(_, o any) { set(o, false) },
		DeleteFunc: func(o any) { set(o, true) },
	})
	go inf.Run(ctx.Done())
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(matched) }
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
	for {
		select {
		case <-enough:
			return time.Since(start), nil
		case <-ctx.Done():
			return 0, fmt.Errorf("%d of %d nodes %s=%s: %w", count(), n, sel, want, ctx.Err())
		case <-progress.C:
			slog.Info("waiting for nodes", "want", want, "got", count(), "of", n, "after", time.Since(start).Round(time.Second))
		}
	}
}

// procStat reads a process's RSS (bytes) and CPU time.
func procStat(pid int) (rss int64, cpu time.Duration) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				rss = kb * 1024
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+2:])
			if len(f) > 13 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				cpu = time.Duration(ut+st) * time.Second / 100 // USER_HZ
			}
		}
	}
	return rss, cpu
}

// apiWrites reads kube-apiserver's count of write requests (every client's)
// by verb and resource, from its /metrics.
func apiWrites(ctx context.Context, cs kubernetes.Interface) (map[string]float64, error) {
	b, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading kube-apiserver metrics: %w", err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parsing kube-apiserver metrics: %w", err)
	}
	out := map[string]float64{}
	for _, m := range families["apiserver_request_total"].GetMetric() {
		l := map[string]string{}
		for _, lp := range m.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		switch l["verb"] {
		case "POST", "PUT", "PATCH", "DELETE", "APPLY":
		default:
			continue
		}
		res := l["resource"]
		if l["subresource"] != "" {
			res += "/" + l["subresource"]
		}
		out[l["verb"]+" "+res] += m.GetCounter().GetValue() + m.GetUntyped().GetValue()
	}
	return out, nil
}

// writeCensus says which writes kube-apiserver served between two
// apiWrites readings, per device, most first.
func writeCensus(before, after map[string]float64, devices int) string {
	type kv struct {
		k string
		n float64
	}
	var d []kv
	var total float64
	for k, v := range after {
		if n := v - before[k]; n > 0 {
			d = append(d, kv{k, n})
			total += n
		}
	}
	slices.SortFunc(d, func(a, b kv) int { return int(b.n - a.n) })
	var s strings.Builder
	fmt.Fprintf(&s, "%.1f per device:", total/float64(devices))
	for _, e := range d {
		if e.n/float64(devices) >= 0.05 {
			fmt.Fprintf(&s, " %s %.2f;", e.k, e.n/float64(devices))
		}
	}
	return s.String()
}
