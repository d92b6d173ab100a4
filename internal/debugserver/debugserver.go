// Package debugserver serves pprof profiles and expvar metrics (goroutines,
// API server requests, NATS traffic) on a local address, for benchmarks and
// for operators chasing a problem, and the health endpoints (/healthz,
// /readyz) that a Deployment probes, beside the Prometheus metrics
// (/metrics, package metrics).
package debugserver

import (
	"context"
	"errors"
	"expvar"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"runtime"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	clientmetrics "k8s.io/client-go/tools/metrics"

	"github.com/vk-fleet/vk-fleet/internal/metrics"
)

// KubeRequests counts requests sent to the Kubernetes API server.
var KubeRequests = expvar.NewInt("kube_requests")

func init() {
	expvar.Publish("goroutines", expvar.Func(func() any { return runtime.NumGoroutine() }))
}

// CountRequests makes cfg's clients count their requests in KubeRequests,
// and every client-go client of the process report request latencies and
// results to Prometheus (metrics.KubeRequestDuration, metrics.KubeRequests).
func CountRequests(cfg *rest.Config) {
	clientMetricsOnce.Do(func() {
		clientmetrics.Register(clientmetrics.RegisterOpts{RequestLatency: latency{}, RequestResult: results{}})
	})
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			KubeRequests.Add(1)
			return rt.RoundTrip(r)
		})
	})
}

var clientMetricsOnce sync.Once

type latency struct{}

func (latency) Observe(_ context.Context, verb string, _ url.URL, d time.Duration) {
	metrics.KubeRequestDuration.WithLabelValues(verb).Observe(d.Seconds())
}

type results struct{}

func (results) Increment(_ context.Context, code, method, _ string) {
	metrics.KubeRequests.WithLabelValues(method, code).Inc()
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Run serves /debug/pprof/ and /debug/vars on addr until ctx ends.
func Run(ctx context.Context, addr string, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/debug/vars", expvar.Handler())
	mux.Handle("/metrics", metrics.Handler())
	return serve(ctx, addr, "debug", mux, log)
}

// Health serves /healthz (the process answers), /readyz (ready reports
// true) and /metrics on addr until ctx ends.
func Health(ctx context.Context, addr string, ready func() bool, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/metrics", metrics.Handler())
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return serve(ctx, addr, "health", mux, log)
}

func serve(ctx context.Context, addr, what string, h http.Handler, log *slog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening for %s requests: %w", what, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info(what+" endpoint listening", "addr", l.Addr().String())
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
