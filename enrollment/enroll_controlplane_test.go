package enrollment_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/enrollment"
	"github.com/vk-fleet/vk-fleet/registry"
	"github.com/vk-fleet/vk-fleet/test/framework/controlplane"
)

// binDir returns the control-plane binaries or skips the test, unless
// VKF_REQUIRE_CONTROLPLANE=1 demands them.
func binDir(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real control plane; skipped with -short")
	}
	dir, err := controlplane.BinDir()
	if err != nil {
		if os.Getenv("VKF_REQUIRE_CONTROLPLANE") == "1" {
			t.Fatalf("control-plane binaries required (VKF_REQUIRE_CONTROLPLANE=1): %v", err)
		}
		t.Skipf("control-plane binaries not available, skipping (build them with hack/controlplane-build.sh, "+
			"or set VKF_REQUIRE_CONTROLPLANE=1 to fail): %v", err)
	}
	return dir
}

// requestCounter counts a client's API requests by verb and resource.
type requestCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		if req.URL.Query().Get("watch") != "true" {
			kind := "other"
			for _, r := range []string{"secrets", "nodes"} {
				if strings.Contains(req.URL.Path, "/"+r) {
					kind = r
				}
			}
			c.mu.Lock()
			c.n[req.Method+" "+kind]++
			c.mu.Unlock()
		}
		return rt.RoundTrip(req)
	})
}

func (c *requestCounter) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprint(c.n)
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// countingRegistrar counts the enrollments that reach one replica.
type countingRegistrar struct {
	enrollment.Registrar
	n atomic.Int64
}

func (c *countingRegistrar) Enroll(ctx context.Context, e registry.Enrollment) (string, error) {
	c.n.Add(1)
	return c.Registrar.Enroll(ctx, e)
}

// 1,000 devices enroll at once with one 1,000-use token through two
// vk-fleet replicas (each with its own enrollment service, registry and
// device cache) against a real API server; 20 more are refused. The time
// it takes is logged, not asserted.
func TestEnrollThousandWithOneToken(t *testing.T) {
	bin := binDir(t)
	const (
		devices  = 1000
		extra    = 20
		replicas = 2
	)
	ctx := t.Context()
	cp, err := controlplane.Start(ctx, controlplane.Config{
		BinDir: bin,
		Dir:    t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		// Long enough that the node controller leaves the new Nodes'
		// status alone while the test reads it.
		NodeMonitorGracePeriod: 5 * time.Minute,
		// Skips minting a token per controller: ~5s faster to start.
		ExtraControllerManagerArgs: []string{"--use-service-account-credentials=false"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Stop() })
	admin, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := registry.New(admin).CreateToken(ctx, registry.TokenOptions{TTL: time.Hour, Uses: devices, Labels: map[string]string{"fleet": "load"}})
	if err != nil {
		t.Fatal(err)
	}

	srv, client := startNATS(t)
	counted := make([]*countingRegistrar, replicas)
	requests := make([]*requestCounter, replicas)
	for i := range replicas {
		// As vk-fleet's own client: --kube-api-qps 500, --kube-api-burst 1000.
		cfg := rest.CopyConfig(cp.RESTConfig)
		cfg.QPS, cfg.Burst = 500, 1000
		requests[i] = &requestCounter{n: map[string]int{}}
		cfg.WrapTransport = requests[i].wrap
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		cache := registry.NewCache(cs)
		if err := cache.Run(ctx); err != nil {
			t.Fatal(err)
		}
		reg := registry.New(cs).WithDeviceLookup(cache.DeviceByNKey)
		counted[i] = &countingRegistrar{Registrar: enrollment.RegistryRegistrar{R: reg}}
		startServe(t, connect(t, srv), counted[i])
	}
	// Both replicas are subscribed once both have answered a request.
	waitFor(t, "both replicas to serve", func() bool {
		if _, err := request(t, client, &bridge.EnrollRequest{Name: "probe"}, time.Second); err != nil {
			return false
		}
		for _, c := range counted {
			if c.n.Load() == 0 {
				return false
			}
		}
		return true
	})
	for _, c := range counted {
		c.n.Store(0)
	}

	reqs := make([]*bridge.EnrollRequest, devices+extra)
	for i := range reqs {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		reqs[i] = &bridge.EnrollRequest{Token: tok.String(), Name: fmt.Sprintf("dev-%04d", i), NKey: pub, ProtocolVersion: bridge.ProtocolVersion}
	}
	enrollAll := func(reqs []*bridge.EnrollRequest) (enrolled int, usedUp int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, req := range reqs {
			wg.Go(func() {
				resp, err := request(t, client, req, time.Minute)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					t.Errorf("%s: %v", req.Name, err)
				case resp.Error == nil:
					enrolled++
				case errors.Is(resp.Error, bridge.ErrTokenUsedUp):
					usedUp++
				default:
					t.Errorf("%s: %s: %s", req.Name, resp.Error.Code, resp.Error.Message)
				}
			})
		}
		wg.Wait()
		return enrolled, usedUp
	}

	begin := time.Now()
	enrolled, usedUp := enrollAll(reqs)
	elapsed := time.Since(begin)
	t.Logf("%d enrollment requests (%d-use token, %d replicas) answered in %s: %d enrolled, %d used up",
		len(reqs), devices, replicas, elapsed.Round(time.Millisecond), enrolled, usedUp)
	for i := range replicas {
		t.Logf("replica %d: %d requests; API requests %s", i, counted[i].n.Load(), requests[i])
	}
	if enrolled != devices || usedUp != extra {
		t.Errorf("%d enrolled and %d refused as used up, want %d and %d", enrolled, usedUp, devices, extra)
	}

	// More attempts, now that the token is used up.
	more := make([]*bridge.EnrollRequest, extra)
	for i := range more {
		r := *reqs[i]
		r.Name = fmt.Sprintf("late-%02d", i)
		kp, _ := nkeys.CreateUser()
		r.NKey, _ = kp.PublicKey()
		more[i] = &r
	}
	if enrolled, usedUp := enrollAll(more); enrolled != 0 || usedUp != extra {
		t.Errorf("after the token was used up: %d enrolled and %d refused as used up, want 0 and %d", enrolled, usedUp, extra)
	}

	nodes, err := admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: registry.LabelManaged + "=true"})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != devices {
		t.Errorf("%d device Nodes, want %d", len(nodes.Items), devices)
	}
	for _, n := range nodes.Items {
		var ready *corev1.NodeCondition
		for i, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				ready = &n.Status.Conditions[i]
			}
		}
		if ready == nil || ready.Status != corev1.ConditionFalse {
			t.Errorf("node %s: Ready condition %+v, want False", n.Name, ready)
		}
		if n.Labels["fleet"] != "load" || n.Annotations[registry.AnnotationEnrollToken] != tok.ID {
			t.Errorf("node %s: labels %v, annotations %v", n.Name, n.Labels, n.Annotations)
		}
	}
	s, err := admin.CoreV1().Secrets(registry.DefaultTokenNamespace).Get(ctx, bootstraputil.BootstrapTokenSecretName(tok.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if left := string(s.Data[registry.KeyUsesLeft]); left != "0" {
		t.Errorf("uses left %s, want 0", left)
	}
}
