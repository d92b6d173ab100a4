package metricsserver_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/vk-fleet/vk-fleet/test/framework/controlplane"
	"github.com/vk-fleet/vk-fleet/test/framework/metricsserver"
)

// binDirs returns the control-plane and metrics-server binaries or skips
// the test, unless VKF_REQUIRE_CONTROLPLANE=1 demands them.
func binDirs(t *testing.T) (cpBin, msBin string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real control plane and metrics-server; skipped with -short")
	}
	cpBin, err := controlplane.BinDir()
	if err == nil {
		msBin, err = metricsserver.BinDir()
	}
	if err != nil {
		if os.Getenv("VKF_REQUIRE_CONTROLPLANE") == "1" {
			t.Fatalf("control-plane and metrics-server binaries required (VKF_REQUIRE_CONTROLPLANE=1): %v", err)
		}
		t.Skipf("control-plane or metrics-server binaries not available, skipping (build them with "+
			"hack/controlplane-build.sh and hack/metrics-server-build.sh, or set VKF_REQUIRE_CONTROLPLANE=1 to fail): %v", err)
	}
	return cpBin, msBin
}

const (
	nodeName      = "vkf-metrics-node"
	podName       = "vkf-metrics-pod"
	containerName = "app"
	// The fake kubelet's usage: CPU in cores, memory in bytes.
	nodeCPU      = 0.5
	nodeMemory   = 256 << 20
	containerCPU = 0.1
	containerMem = 16 << 20
)

func TestMetricsServer(t *testing.T) {
	cpBin, msBin := binDirs(t)
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))

	cp, err := controlplane.Start(ctx, controlplane.Config{
		BinDir: cpBin,
		Dir:    t.TempDir(),
		Logger: log,
		// About 5s faster; this test needs no controller's RBAC.
		ExtraControllerManagerArgs: []string{"--use-service-account-credentials=false"},
	})
	if err != nil {
		t.Fatalf("starting control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping control plane: %v", err)
		}
	})
	client := kubernetes.NewForConfigOrDie(cp.RESTConfig)

	// A Node whose kubelet is the fake below, and a running pod on it,
	// exist before metrics-server starts: its first scrape, at start,
	// then counts, and usage appears one resolution later.
	kubelet := startFakeKubelet(t, cp)
	createNode(t, client, kubelet.port)
	createRunningPod(t, client)

	begin := time.Now()
	ms, err := metricsserver.Start(ctx, metricsserver.Config{
		ControlPlane: cp,
		BinDir:       msBin,
		Dir:          t.TempDir(),
		Logger:       log,
	})
	if err != nil {
		t.Fatalf("starting metrics-server: %v", err)
	}
	t.Cleanup(func() {
		if err := ms.Stop(); err != nil {
			t.Errorf("stopping metrics-server: %v", err)
		}
	})
	t.Logf("metrics-server available in %v at %s, args %q", time.Since(begin).Round(time.Millisecond), ms.URL, ms.Args)

	t.Run("metrics API answers through the API server", func(t *testing.T) {
		var code int
		body, err := client.CoreV1().RESTClient().Get().AbsPath("/apis/metrics.k8s.io/v1beta1/nodes").Do(ctx).StatusCode(&code).Raw()
		if err != nil {
			t.Fatalf("GET /apis/metrics.k8s.io/v1beta1/nodes: %d %v", code, err)
		}
		var list metricsList
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatalf("decoding %s: %v", body, err)
		}
		if code != http.StatusOK || list.Kind != "NodeMetricsList" {
			t.Errorf("got %d %s, want 200 NodeMetricsList: %s", code, list.Kind, body)
		}
	})

	t.Run("kubelet is scraped with the client certificate", func(t *testing.T) {
		s := kubelet.waitForScrape(t, func(s scrape) bool { return s.commonName != "" })
		if s.commonName != metricsserver.ClientCertUser || s.path != "/metrics/resource" {
			t.Errorf("scraped %s as %q, want /metrics/resource as %q", s.path, s.commonName, metricsserver.ClientCertUser)
		}
		checkMayGetNodeMetrics(t, client, ms.User, nil)
	})

	t.Run("kubectl top shows the kubelet's usage", func(t *testing.T) {
		nodes := waitForMetrics(t, client, "/apis/metrics.k8s.io/v1beta1/nodes")
		t.Logf("node metrics after %v", time.Since(begin).Round(time.Millisecond))
		checkUsage(t, "node", nodes.Items[0].Usage, nodeCPU, nodeMemory)
		pods := waitForMetrics(t, client, "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods")
		if c := pods.Items[0].Containers; len(c) != 1 || c[0].Name != containerName {
			t.Fatalf("pod containers: %+v", c)
		}
		checkUsage(t, "container", pods.Items[0].Containers[0].Usage, containerCPU, containerMem)

		out, err := cp.Kubectl(ctx, "top", "node", nodeName)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kubectl top node:\n%s", out)
		if !strings.Contains(string(out), nodeName) || !strings.Contains(string(out), "256Mi") {
			t.Errorf("kubectl top node lacks %s with 256Mi:\n%s", nodeName, out)
		}
		out, err = cp.Kubectl(ctx, "top", "pod", "--namespace=default", "--containers")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kubectl top pod --containers:\n%s", out)
		if !strings.Contains(string(out), podName) || !strings.Contains(string(out), "16Mi") {
			t.Errorf("kubectl top pod lacks %s with 16Mi:\n%s", podName, out)
		}
	})

	t.Run("service account token", func(t *testing.T) {
		if err := ms.Stop(); err != nil {
			t.Fatal(err)
		}
		since := time.Now()
		ms, err := metricsserver.Start(ctx, metricsserver.Config{
			ControlPlane: cp,
			BinDir:       msBin,
			Dir:          t.TempDir(),
			Credential:   metricsserver.ServiceAccountToken,
			Logger:       log,
		})
		if err != nil {
			t.Fatalf("restarting metrics-server with a token: %v", err)
		}
		t.Cleanup(func() {
			if err := ms.Stop(); err != nil {
				t.Errorf("stopping metrics-server: %v", err)
			}
		})
		t.Logf("restarted in %v", time.Since(since).Round(time.Millisecond))
		s := kubelet.waitForScrape(t, func(s scrape) bool { return s.at.After(since) })
		if s.commonName != "" || s.token == "" {
			t.Fatalf("scraped with certificate %q and token %t, want a token only", s.commonName, s.token != "")
		}
		// What a kubelet does with a bearer token: TokenReview, then
		// SubjectAccessReview for nodes/metrics.
		review, err := client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
			Spec: authenticationv1.TokenReviewSpec{Token: s.token},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !review.Status.Authenticated || review.Status.User.Username != metricsserver.ServiceAccountUser || ms.User != metricsserver.ServiceAccountUser {
			t.Fatalf("token review: %+v, server user %q; want %s", review.Status, ms.User, metricsserver.ServiceAccountUser)
		}
		checkMayGetNodeMetrics(t, client, review.Status.User.Username, review.Status.User.Groups)
	})
}

// checkMayGetNodeMetrics asks the API server what a kubelet's authorizer
// asks for GET /metrics/resource.
func checkMayGetNodeMetrics(t *testing.T, client kubernetes.Interface, user string, groups []string) {
	t.Helper()
	sar, err := client.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   user,
			Groups: groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: "get", Resource: "nodes", Subresource: "metrics", Name: nodeName,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !sar.Status.Allowed {
		t.Errorf("%s may not get nodes/metrics: %+v", user, sar.Status)
	}
}

// metricsList is the part of NodeMetricsList and PodMetricsList the test
// reads.
type metricsList struct {
	Kind  string `json:"kind"`
	Items []struct {
		Metadata   metav1.ObjectMeta   `json:"metadata"`
		Window     string              `json:"window"`
		Usage      corev1.ResourceList `json:"usage"`
		Containers []struct {
			Name  string              `json:"name"`
			Usage corev1.ResourceList `json:"usage"`
		} `json:"containers"`
	} `json:"items"`
}

// waitForMetrics polls path through the API server until it lists an
// item; metrics-server needs two scrapes, one resolution apart.
func waitForMetrics(t *testing.T, client kubernetes.Interface, path string) metricsList {
	t.Helper()
	var list metricsList
	err := wait.PollUntilContextTimeout(t.Context(), 250*time.Millisecond, 3*metricsserver.MinMetricResolution, true, func(ctx context.Context) (bool, error) {
		body, err := client.CoreV1().RESTClient().Get().AbsPath(path).DoRaw(ctx)
		if err != nil {
			return false, err
		}
		list = metricsList{}
		if err := json.Unmarshal(body, &list); err != nil {
			return false, fmt.Errorf("decoding %s: %w", body, err)
		}
		return len(list.Items) > 0, nil
	})
	if err != nil {
		t.Fatalf("waiting for metrics at %s: %v", path, err)
	}
	return list
}

// checkUsage compares usage with the rates the fake kubelet reports.
func checkUsage(t *testing.T, what string, usage corev1.ResourceList, cores float64, memory int64) {
	t.Helper()
	cpu, mem := usage[corev1.ResourceCPU], usage[corev1.ResourceMemory]
	if got := float64(cpu.MilliValue()) / 1000; got < cores*0.95 || got > cores*1.05 {
		t.Errorf("%s cpu %s, want %v cores", what, cpu.String(), cores)
	}
	if mem.Value() != memory {
		t.Errorf("%s memory %s, want %d bytes", what, mem.String(), memory)
	}
}

func createNode(t *testing.T, client kubernetes.Interface, kubeletPort int) {
	t.Helper()
	ctx := t.Context()
	node, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{"type": "virtual-kubelet"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating node: %v", err)
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("2"),
		corev1.ResourceMemory: resource.MustParse("1Gi"),
		corev1.ResourcePods:   resource.MustParse("10"),
	}
	node.Status = corev1.NodeStatus{
		Capacity:        capacity,
		Allocatable:     capacity,
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(kubeletPort)}},
	}
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("setting node status: %v", err)
	}
}

// createRunningPod creates a pod bound to the node and marks it Running:
// metrics-server lists only running pods.
func createRunningPod(t *testing.T, client kubernetes.Interface) {
	t.Helper()
	ctx := t.Context()
	pod, err := client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName},
		Spec: corev1.PodSpec{
			NodeName:   nodeName,
			Containers: []corev1.Container{{Name: containerName, Image: "busybox"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod: %v", err)
	}
	pod.Status.Phase = corev1.PodRunning
	if _, err := client.CoreV1().Pods("default").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("setting pod status: %v", err)
	}
}

// scrape is one request the fake kubelet answered.
type scrape struct {
	at         time.Time
	path       string
	commonName string // of a verified client certificate
	token      string // bearer token
}

// fakeKubelet serves /metrics/resource the way a kubelet does: HTTPS with
// a serving certificate from the cluster CA, client certificates verified
// against it, counters growing at fixed rates and explicit timestamps.
type fakeKubelet struct {
	port  int
	start time.Time

	mu      sync.Mutex
	scrapes []scrape
}

func startFakeKubelet(t *testing.T, cp *controlplane.ControlPlane) *fakeKubelet {
	t.Helper()
	certPEM, keyPEM, err := cp.ServingCert("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cas := x509.NewCertPool()
	cas.AppendCertsFromPEM(cp.CACertPEM)
	// Counters start as if the node had been up for an hour.
	k := &fakeKubelet{start: time.Now().Add(-time.Hour)}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(k.serveHTTP))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    cas,
		ClientAuth:   tls.VerifyClientCertIfGiven,
		MinVersion:   tls.VersionTLS12,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	k.port = srv.Listener.Addr().(*net.TCPAddr).Port
	return k
}

func (k *fakeKubelet) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s := scrape{at: time.Now(), path: r.URL.Path}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		s.commonName = r.TLS.PeerCertificates[0].Subject.CommonName
	}
	s.token, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	k.mu.Lock()
	k.scrapes = append(k.scrapes, s)
	k.mu.Unlock()
	if r.URL.Path != "/metrics/resource" {
		http.NotFound(w, r)
		return
	}
	up := s.at.Sub(k.start).Seconds()
	ts := strconv.FormatInt(s.at.UnixMilli(), 10)
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	labels := `{container="` + containerName + `",namespace="default",pod="` + podName + `"}`
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprint(w, ""+
		"# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds\n"+
		"# TYPE node_cpu_usage_seconds_total counter\n"+
		"node_cpu_usage_seconds_total "+f(nodeCPU*up)+" "+ts+"\n"+
		"# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes\n"+
		"# TYPE node_memory_working_set_bytes gauge\n"+
		"node_memory_working_set_bytes "+f(nodeMemory)+" "+ts+"\n"+
		"# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds\n"+
		"# TYPE container_cpu_usage_seconds_total counter\n"+
		"container_cpu_usage_seconds_total"+labels+" "+f(containerCPU*up)+" "+ts+"\n"+
		"# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes\n"+
		"# TYPE container_memory_working_set_bytes gauge\n"+
		"container_memory_working_set_bytes"+labels+" "+f(containerMem)+" "+ts+"\n"+
		"# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds\n"+
		"# TYPE container_start_time_seconds gauge\n"+
		"container_start_time_seconds"+labels+" "+f(float64(k.start.UnixNano())/1e9)+" "+ts+"\n")
}

// waitForScrape waits for a request matching ok.
func (k *fakeKubelet) waitForScrape(t *testing.T, ok func(scrape) bool) scrape {
	t.Helper()
	var found scrape
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 2*metricsserver.MinMetricResolution, true, func(context.Context) (bool, error) {
		k.mu.Lock()
		defer k.mu.Unlock()
		for _, s := range k.scrapes {
			if ok(s) {
				found = s
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("waiting for the fake kubelet to be scraped: %v", err)
	}
	return found
}
