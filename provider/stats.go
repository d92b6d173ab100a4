package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// statsTimeout bounds one stats round trip to a device.
const statsTimeout = 10 * time.Second

// errNoNode answers the routes that need a Node on the shared port.
var errNoNode = errdefs.NotFound("this port serves many Nodes: ask the Node's own kubelet port (status.daemonEndpoints.kubeletEndpoint.port)")

// nodePods lists the pods bound to the Node of the request's port (/pods).
func (p *Provider) nodePods(ctx context.Context) ([]*corev1.Pod, error) {
	dev := connDevice(ctx)
	if dev == "" {
		return nil, errNoNode
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*corev1.Pod
	for _, ent := range p.pods.byKey {
		if ent.pod != nil && ent.pod.Spec.NodeName == dev {
			out = append(out, p.podWithStatus(ent))
		}
	}
	return out, nil
}

// deviceStats asks the device of the request's port for its usage.
func (p *Provider) deviceStats(ctx context.Context) (string, *bridge.StatsReport, error) {
	dev := connDevice(ctx)
	if dev == "" {
		return "", nil, errNoNode
	}
	if !p.deviceFresh(dev) {
		return dev, nil, fmt.Errorf("device %s is offline", dev)
	}
	if err := p.needProtocol(dev, 5, "stats"); err != nil {
		return dev, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, statsTimeout)
	defer cancel()
	s, err := p.openSession(ctx, dev, &bridge.SessionRequest{Kind: bridge.SessionStats})
	if err != nil {
		return dev, nil, err
	}
	r := &streamReader{s: s}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, bridge.MaxMessageBytes))
	if err != nil {
		return dev, nil, fmt.Errorf("reading the stats of device %s: %w", dev, err)
	}
	var rep bridge.StatsReport
	if err := json.Unmarshal(data, &rep); err != nil {
		return dev, nil, fmt.Errorf("decoding the stats of device %s: %w", dev, err)
	}
	return dev, &rep, nil
}

// cpuSample is a cumulative CPU figure at a time.
type cpuSample struct {
	t     time.Time
	nanos uint64
}

// cpuRate returns the CPU usage in nanocores since key's last sample.
func (p *Provider) cpuRate(key string, t time.Time, nanos uint64) *uint64 {
	p.cpuMu.Lock()
	defer p.cpuMu.Unlock()
	prev, ok := p.cpuPrev[key]
	p.cpuPrev[key] = cpuSample{t: t, nanos: nanos}
	if !ok || !t.After(prev.t) || nanos < prev.nanos {
		return nil
	}
	rate := uint64(float64(nanos-prev.nanos) / t.Sub(prev.t).Seconds())
	return &rate
}

// knownPods returns the namespace and name of device's pods by UID, so that
// stats name only the pods Kubernetes has bound to the device.
func (p *Provider) knownPods(device string) map[string]*corev1.Pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]*corev1.Pod{}
	for _, ent := range p.pods.byKey {
		if ent.pod != nil && ent.pod.Spec.NodeName == device {
			out[string(ent.pod.UID)] = ent.pod
		}
	}
	return out
}

// GetStatsSummary answers /stats/summary for the Node of the request's
// port, from the device's report.
func (p *Provider) GetStatsSummary(ctx context.Context) (*statsv1alpha1.Summary, error) {
	dev, rep, err := p.deviceStats(ctx)
	if err != nil {
		return nil, err
	}
	at := metav1.NewTime(rep.Time)
	n := rep.Node
	sum := &statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{
		NodeName:  dev,
		StartTime: metav1.NewTime(n.StartTime),
		CPU: &statsv1alpha1.CPUStats{Time: at, UsageCoreNanoSeconds: ptr(n.CPUNanos),
			UsageNanoCores: p.cpuRate(dev, rep.Time, n.CPUNanos)},
		Memory: &statsv1alpha1.MemoryStats{Time: at, WorkingSetBytes: ptr(n.MemoryWorkingSetBytes),
			UsageBytes: ptr(n.MemoryUsageBytes), AvailableBytes: ptr(n.MemoryAvailableBytes)},
	}}
	known := p.knownPods(dev)
	for _, ps := range rep.Pods {
		pod := known[ps.UID]
		if pod == nil {
			continue
		}
		out := statsv1alpha1.PodStats{PodRef: statsv1alpha1.PodReference{Name: pod.Name, Namespace: pod.Namespace, UID: ps.UID}}
		if pod.Status.StartTime != nil {
			out.StartTime = *pod.Status.StartTime
		}
		var cpu, cpuRate, ws, usage uint64
		rated := true
		for _, c := range ps.Containers {
			t := metav1.NewTime(c.Time)
			rate := p.cpuRate(dev+"/"+ps.UID+"/"+c.Name, c.Time, c.CPUNanos)
			if rate == nil {
				rated = false
			} else {
				cpuRate += *rate
			}
			cpu += c.CPUNanos
			ws += c.MemoryWorkingSetBytes
			usage += c.MemoryUsageBytes
			out.Containers = append(out.Containers, statsv1alpha1.ContainerStats{
				Name: c.Name, StartTime: metav1.NewTime(c.StartTime),
				CPU:    &statsv1alpha1.CPUStats{Time: t, UsageCoreNanoSeconds: ptr(c.CPUNanos), UsageNanoCores: rate},
				Memory: &statsv1alpha1.MemoryStats{Time: t, WorkingSetBytes: ptr(c.MemoryWorkingSetBytes), UsageBytes: ptr(c.MemoryUsageBytes)},
			})
		}
		out.CPU = &statsv1alpha1.CPUStats{Time: at, UsageCoreNanoSeconds: ptr(cpu)}
		if rated {
			out.CPU.UsageNanoCores = ptr(cpuRate)
		}
		out.Memory = &statsv1alpha1.MemoryStats{Time: at, WorkingSetBytes: ptr(ws), UsageBytes: ptr(usage)}
		sum.Pods = append(sum.Pods, out)
	}
	return sum, nil
}

// GetMetricsResource answers /metrics/resource for the Node of the
// request's port: the metrics a kubelet serves there and metrics-server
// reads, in seconds and bytes, stamped with the device's sample times.
func (p *Provider) GetMetricsResource(ctx context.Context) ([]*dto.MetricFamily, error) {
	dev, rep, err := p.deviceStats(ctx)
	scrapeErr := 0.0
	if err != nil {
		if dev == "" {
			return nil, err
		}
		scrapeErr = 1
	}
	gauge := func(name, help string, typ dto.MetricType) *dto.MetricFamily {
		return &dto.MetricFamily{Name: ptr(name), Help: ptr(help), Type: &typ}
	}
	add := func(mf *dto.MetricFamily, v float64, t time.Time, labels ...string) {
		m := &dto.Metric{}
		for i := 0; i+1 < len(labels); i += 2 {
			m.Label = append(m.Label, &dto.LabelPair{Name: ptr(labels[i]), Value: ptr(labels[i+1])})
		}
		if mf.GetType() == dto.MetricType_COUNTER {
			m.Counter = &dto.Counter{Value: ptr(v)}
		} else {
			m.Gauge = &dto.Gauge{Value: ptr(v)}
		}
		if !t.IsZero() {
			m.TimestampMs = ptr(t.UnixMilli())
		}
		mf.Metric = append(mf.Metric, m)
	}
	scrape := gauge("resource_scrape_error", "1 if there was an error while getting container metrics, 0 otherwise", dto.MetricType_GAUGE)
	add(scrape, scrapeErr, time.Time{})
	if rep == nil {
		return []*dto.MetricFamily{scrape}, nil
	}
	nodeCPU := gauge("node_cpu_usage_seconds_total", "Cumulative cpu time consumed by the node in core-seconds", dto.MetricType_COUNTER)
	nodeMem := gauge("node_memory_working_set_bytes", "Current working set of the node in bytes", dto.MetricType_GAUGE)
	podCPU := gauge("pod_cpu_usage_seconds_total", "Cumulative cpu time consumed by the pod in core-seconds", dto.MetricType_COUNTER)
	podMem := gauge("pod_memory_working_set_bytes", "Current working set of the pod in bytes", dto.MetricType_GAUGE)
	ctrCPU := gauge("container_cpu_usage_seconds_total", "Cumulative cpu time consumed by the container in core-seconds", dto.MetricType_COUNTER)
	ctrMem := gauge("container_memory_working_set_bytes", "Current working set of the container in bytes", dto.MetricType_GAUGE)
	ctrStart := gauge("container_start_time_seconds", "Start time of the container since unix epoch in seconds", dto.MetricType_GAUGE)
	add(nodeCPU, float64(rep.Node.CPUNanos)/1e9, rep.Time)
	add(nodeMem, float64(rep.Node.MemoryWorkingSetBytes), rep.Time)
	known := p.knownPods(dev)
	for _, ps := range rep.Pods {
		pod := known[ps.UID]
		if pod == nil {
			continue
		}
		var cpu, mem float64
		for _, c := range ps.Containers {
			l := []string{"container", c.Name, "namespace", pod.Namespace, "pod", pod.Name}
			add(ctrCPU, float64(c.CPUNanos)/1e9, c.Time, l...)
			add(ctrMem, float64(c.MemoryWorkingSetBytes), c.Time, l...)
			if !c.StartTime.IsZero() {
				add(ctrStart, float64(c.StartTime.UnixNano())/1e9, c.Time, l...)
			}
			cpu += float64(c.CPUNanos) / 1e9
			mem += float64(c.MemoryWorkingSetBytes)
		}
		add(podCPU, cpu, rep.Time, "namespace", pod.Namespace, "pod", pod.Name)
		add(podMem, mem, rep.Time, "namespace", pod.Namespace, "pod", pod.Name)
	}
	out := []*dto.MetricFamily{ctrCPU, ctrMem, ctrStart, nodeCPU, nodeMem, podCPU, podMem, scrape}
	var nonEmpty []*dto.MetricFamily
	for _, mf := range out {
		if len(mf.Metric) > 0 {
			nonEmpty = append(nonEmpty, mf)
		}
	}
	return nonEmpty, nil
}

func ptr[T any](v T) *T { return &v }
