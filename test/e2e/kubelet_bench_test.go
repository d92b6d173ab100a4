package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/vk-fleet/vk-fleet/nodeagent"
	"github.com/vk-fleet/vk-fleet/nodeagent/podman"
	"github.com/vk-fleet/vk-fleet/test/framework/controlplane"
)

// The kubelet API's costs over the whole path (client → kube-apiserver →
// vk-fleet → NATS → device agent → podman), each next to the same
// operation run directly against podman on the same machine. hack/bench-kubelet.sh
// runs them and prints the table with the ratios.

const benchLogBytes = 32 << 20

var benchOnce struct {
	sync.Once
	ns  string
	uid string
	err error
}

// benchPod starts, once, a pod on devA that has written benchLogBytes to its
// log and serves a 16 MiB file on port 8080 inside its network namespace.
func benchPod(b *testing.B) (ns, uid string) {
	if cluster == nil {
		b.Skip(skipReason)
	}
	benchOnce.Do(func() {
		ctx := context.Background()
		ns := fmt.Sprintf("bench-%d", time.Now().UnixNano())
		if _, err := cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			benchOnce.err = err
			return
		}
		pod := sleeper(ns, "bench", devA)
		pod.Spec.Containers[0].Command = []string{"sh", "-c", fmt.Sprintf(
			"mkdir -p /www && dd if=/dev/urandom of=/www/big bs=1048576 count=16 2>/dev/null && "+
				"yes 0123456789012345678901234567890123456789012345678901234567890123456789 | head -c %d; echo; echo done; exec httpd -f -p 8080 -h /www", benchLogBytes)}
		created, err := cluster.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			benchOnce.err = err
			return
		}
		deadline := time.Now().Add(3 * time.Minute)
		for {
			out, err := cluster.Client.CoreV1().Pods(ns).GetLogs("bench", &corev1.PodLogOptions{TailLines: ptrTo(int64(1))}).DoRaw(ctx)
			if err == nil && bytes.Equal(out, []byte("done\n")) {
				break
			}
			if time.Now().After(deadline) {
				benchOnce.err = fmt.Errorf("bench pod not ready: %q %v", out, err)
				return
			}
			<-time.After(500 * time.Millisecond) // polling interval
		}
		benchOnce.ns, benchOnce.uid = ns, string(created.UID)
	})
	if benchOnce.err != nil {
		b.Fatal(benchOnce.err)
	}
	return benchOnce.ns, benchOnce.uid
}

func ptrTo[T any](v T) *T { return &v }

func benchRuntime(b *testing.B) *podman.Runtime {
	rt, err := podman.New(context.Background(), cluster.Podman.URI, devA)
	if err != nil {
		b.Fatal(err)
	}
	return rt
}

// firstByte records when the first byte arrives.
type firstByte struct {
	start time.Time
	at    time.Duration
}

func (f *firstByte) Write(p []byte) (int, error) {
	if f.at == 0 && len(p) > 0 {
		f.at = time.Since(f.start)
	}
	return len(p), nil
}

func reportFirstByte(b *testing.B, total time.Duration) {
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/first-byte")
}

func BenchmarkKubeletExecFirstByte(b *testing.B) {
	ns, uid := benchPod(b)
	b.Run("vk-fleet", func(b *testing.B) {
		var total time.Duration
		for b.Loop() {
			req := cluster.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name("bench").SubResource("exec").
				VersionedParams(&corev1.PodExecOptions{Container: "main", Command: []string{"echo", "hi"}, Stdout: true}, scheme.ParameterCodec)
			ex, err := remotecommand.NewWebSocketExecutor(cluster.CP.RESTConfig, "GET", req.URL().String())
			if err != nil {
				b.Fatal(err)
			}
			fb := &firstByte{start: time.Now()}
			if err := ex.StreamWithContext(b.Context(), remotecommand.StreamOptions{Stdout: fb}); err != nil {
				b.Fatal(err)
			}
			total += fb.at
		}
		reportFirstByte(b, total)
	})
	b.Run("podman", func(b *testing.B) {
		rt := benchRuntime(b)
		var total time.Duration
		for b.Loop() {
			fb := &firstByte{start: time.Now()}
			if _, err := rt.Exec(b.Context(), uid, "main", []string{"echo", "hi"}, nodeagent.StreamIO{Stdout: fb}); err != nil {
				b.Fatal(err)
			}
			total += fb.at
		}
		reportFirstByte(b, total)
	})
}

func BenchmarkKubeletLogsFirstByte(b *testing.B) {
	ns, uid := benchPod(b)
	tail := int64(10)
	b.Run("vk-fleet", func(b *testing.B) {
		var total time.Duration
		for b.Loop() {
			fb := &firstByte{start: time.Now()}
			rc, err := cluster.Client.CoreV1().Pods(ns).GetLogs("bench", &corev1.PodLogOptions{TailLines: &tail}).Stream(b.Context())
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(fb, rc)
			rc.Close()
			total += fb.at
		}
		reportFirstByte(b, total)
	})
	b.Run("podman", func(b *testing.B) {
		rt := benchRuntime(b)
		var total time.Duration
		for b.Loop() {
			fb := &firstByte{start: time.Now()}
			rc, err := rt.ContainerLogs(b.Context(), uid, "main", nodeagent.LogOptions{TailLines: &tail})
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(fb, rc)
			rc.Close()
			total += fb.at
		}
		reportFirstByte(b, total)
	})
}

// logs -f of a container whose log holds benchLogBytes: the stream is read
// to that many bytes.
func BenchmarkKubeletLogsFollowThroughput(b *testing.B) {
	ns, uid := benchPod(b)
	b.Run("vk-fleet", func(b *testing.B) {
		b.SetBytes(benchLogBytes)
		for b.Loop() {
			rc, err := cluster.Client.CoreV1().Pods(ns).GetLogs("bench", &corev1.PodLogOptions{Follow: true}).Stream(b.Context())
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.CopyN(io.Discard, rc, benchLogBytes)
			rc.Close()
			if err != nil {
				b.Fatalf("read %d bytes: %v", n, err)
			}
		}
	})
	b.Run("podman", func(b *testing.B) {
		rt := benchRuntime(b)
		b.SetBytes(benchLogBytes)
		for b.Loop() {
			rc, err := rt.ContainerLogs(b.Context(), uid, "main", nodeagent.LogOptions{Follow: true})
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.CopyN(io.Discard, rc, benchLogBytes)
			rc.Close()
			if err != nil {
				b.Fatalf("read %d bytes: %v", n, err)
			}
		}
	})
}

// GET of a 16 MiB file from port 8080 in the pod: through kubectl
// port-forward, and through a connection the device agent's runtime opens
// in the pod's network namespace.
func BenchmarkKubeletPortForwardThroughput(b *testing.B) {
	ns, uid := benchPod(b)
	const size = 16 << 20
	fetch := func(b *testing.B, client *http.Client) {
		resp, err := client.Get("http://127.0.0.1:8080/big")
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size {
			b.Fatalf("read %d bytes: %v", n, err)
		}
	}
	b.Run("vk-fleet", func(b *testing.B) {
		port := startPortForward(b, ns, "bench", 8080)
		client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", "127.0.0.1:"+port)
		}}}
		b.SetBytes(size)
		for b.Loop() {
			fetch(b, client)
		}
	})
	b.Run("podman", func(b *testing.B) {
		rt := benchRuntime(b)
		client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return rt.DialPod(ctx, uid, 8080)
		}}}
		b.SetBytes(size)
		for b.Loop() {
			fetch(b, client)
		}
	})
}

// startPortForward runs kubectl port-forward to pod's port and returns the
// local port, stopping it when b ends.
func startPortForward(b *testing.B, ns, pod string, port int) string {
	bin, err := controlplane.BinDir()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pf := exec.CommandContext(ctx, filepath.Join(bin, "kubectl"), "--kubeconfig="+cluster.CP.Kubeconfig, "port-forward", "-n", ns, "pod/"+pod, fmt.Sprintf(":%d", port))
	stdout, err := pf.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := pf.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cancel(); _ = pf.Wait() })
	sc := bufio.NewScanner(stdout)
	re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+)`)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return m[1]
		}
	}
	b.Fatal("kubectl port-forward printed no port")
	return ""
}
