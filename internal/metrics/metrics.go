// Package metrics holds the Prometheus metrics of vk-fleet, its auth callout
// and the device agent: their definitions (one place, so that
// docs/operations.md lists them all), the registry they are served from, and
// the HTTP handler. Labels are bounded sets (kinds, results, reasons, verbs):
// no metric has a label per pod, and per-device labels exist only on the
// agent's own endpoint, which serves one device.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry holds every metric of this process, with the Go runtime's and the
// process's own.
var Registry = prometheus.NewRegistry()

func init() {
	Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// Handler serves Registry in the Prometheus exposition formats.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{Registry: Registry})
}

func counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	Registry.MustRegister(c)
	return c
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	Registry.MustRegister(c)
	return c
}

func histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	Registry.MustRegister(h)
	return h
}

func histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	Registry.MustRegister(h)
	return h
}

// vk-fleet (the provider).
var (
	WorkloadWrites = counterVec("vkfleet_workload_writes_total",
		"Writes to the workloads bucket: a pod's workload published or withdrawn.", "op")
	StatusReports = counter("vkfleet_pod_status_reports_total",
		"Pod statuses read from devices (the status bucket).")
	RejectedMessages = counterVec("vkfleet_rejected_messages_total",
		"Messages from devices refused: undecodable, or naming another device.", "kind")
	NodeWrites = counterVec("vkfleet_node_writes_total",
		"Writes of device Nodes: their status and their leases, by result.", "kind", "result")
	PodStatusWritesDeferred = counter("vkfleet_pod_status_writes_deferred_total",
		"Pod status writes that waited for a backlog of Node writes (a fleet coming back at once) to clear.")
	NATSHandshakesWaited = counter("vkfleet_nats_handshakes_waited_total",
		"Client TLS handshakes that waited for their turn: the connections being set up (in a handshake or waiting for the auth callout) were at the limit.")
	NATSHandshakesRefused = counter("vkfleet_nats_handshakes_refused_total",
		"Client TLS handshakes refused after waiting too long for their turn (the client tries again).")
	NATSReconnects = counter("vkfleet_nats_reconnects_total",
		"Reconnects of vk-fleet's own NATS connection.")
	Enrollments = counterVec("vkfleet_enrollments_total",
		"Enrollment requests answered, by result (ok or the error code the device got).", "result")
	KubeRequestDuration = histogramVec("vkfleet_kube_api_request_duration_seconds",
		"Latency of requests to the Kubernetes API server, by verb.", prometheus.ExponentialBuckets(0.002, 2, 12), "verb")
	KubeRequests = counterVec("vkfleet_kube_api_requests_total",
		"Requests to the Kubernetes API server, by method and HTTP code (<error> when none came back).", "method", "code")
)

// The auth callout.
var (
	CalloutDecisions = counterVec("vkfleet_callout_decisions_total",
		"Connections the auth callout decided on, by result (allowed, denied), identity kind and reason.", "result", "kind", "reason")
	CalloutDuration = histogram("vkfleet_callout_duration_seconds",
		"Time the auth callout took to answer a connection.", prometheus.ExponentialBuckets(0.0005, 2, 12))
)

// The device agent (its own, local endpoint).
var (
	AgentReconcileDuration = histogram("vkfleet_agent_reconcile_duration_seconds",
		"Duration of the agent's reconcile passes.", prometheus.ExponentialBuckets(0.001, 2, 14))
	AgentRuntimeErrors = counterVec("vkfleet_agent_runtime_errors_total",
		"Errors of calls to podman, by operation.", "op")
	AgentImagePullDuration = histogram("vkfleet_agent_image_pull_duration_seconds",
		"Duration of image pulls, successful or not.", prometheus.ExponentialBuckets(0.1, 2, 12))
	AgentHeartbeats = counterVec("vkfleet_agent_heartbeats_total",
		"Heartbeats sent: full (with the device's state) or quiet.", "kind")
)

// RegisterReady reports ready() as vkfleet_ready (1 or 0): whether this
// process serves, as its /readyz says.
func RegisterReady(ready func() bool) error {
	return Registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "vkfleet_ready",
		Help: "1 while this process is ready (its /readyz): vk-fleet once devices can connect, the callout once its device cache synced and NATS is connected.",
	}, func() float64 {
		if ready() {
			return 1
		}
		return 0
	}))
}
