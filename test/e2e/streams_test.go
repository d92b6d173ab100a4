package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/vk-fleet/vk-fleet/test/framework/controlplane"
	"github.com/vk-fleet/vk-fleet/test/framework/metricsserver"
)

// kubectl runs the cached kubectl against the shared cluster with stdin,
// returning stdout, stderr and its exit code.
func kubectl(t *testing.T, ctx context.Context, stdin string, args ...string) (string, string, int) {
	t.Helper()
	bin, err := controlplane.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "kubectl"), append([]string{"--kubeconfig=" + cluster.CP.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("kubectl %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// kubectl exec through the real API server: output, stderr, stdin and the
// command's exit code reach the client.
func TestKubectlExec(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "exec")
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), sleeper(ns, "shell", devA), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ns, "shell")
	ctx := t.Context()
	if out, errOut, code := kubectl(t, ctx, "", "exec", "-n", ns, "shell", "--", "echo", "hi"); out != "hi\n" || code != 0 {
		t.Errorf("kubectl exec echo hi: %q (stderr %q), exit %d", out, errOut, code)
	}
	if _, errOut, code := kubectl(t, ctx, "", "exec", "-n", ns, "shell", "--", "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("kubectl exec sh -c 'exit 7': exit %d (stderr %q), want 7", code, errOut)
	}
	if out, errOut, code := kubectl(t, ctx, "", "exec", "-n", ns, "shell", "--", "sh", "-c", "echo out; echo err >&2"); out != "out\n" || !strings.Contains(errOut, "err") || code != 0 {
		t.Errorf("kubectl exec with stderr: stdout %q, stderr %q, exit %d", out, errOut, code)
	}
	in := strings.Repeat("0123456789", 20000) + "\n" // 200 kB: several frames and credit grants
	if out, errOut, code := kubectl(t, ctx, in, "exec", "-i", "-n", ns, "shell", "--", "cat"); out != in || code != 0 {
		t.Errorf("kubectl exec -i cat: %d bytes back of %d (stderr %q), exit %d", len(out), len(in), errOut, code)
	}
	if _, errOut, code := kubectl(t, ctx, "", "exec", "-n", ns, "shell", "-c", "nosuch", "--", "true"); code == 0 {
		t.Errorf("kubectl exec -c nosuch succeeded (stderr %q)", errOut)
	}
	if _, errOut, code := kubectl(t, ctx, "", "exec", "-n", ns, "shell", "--", "/no/such/binary"); code == 0 {
		t.Errorf("kubectl exec of a missing binary succeeded (stderr %q)", errOut)
	}
}

// sizeQueue hands remotecommand one terminal size.
type sizeQueue struct {
	sizes chan remotecommand.TerminalSize
}

func (q *sizeQueue) Next() *remotecommand.TerminalSize {
	s, ok := <-q.sizes
	if !ok {
		return nil
	}
	return &s
}

// Exec with a TTY, over both transports the API server's clients use
// (WebSocket, as kubectl 1.37 does, and SPDY): the terminal has the size
// the client set, and the exit code comes back.
func TestExecWithTTYOverWebSocketAndSPDY(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "tty")
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), sleeper(ns, "term", devB), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ns, "term")
	for _, transport := range []string{"websocket", "spdy"} {
		t.Run(transport, func(t *testing.T) {
			req := cluster.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name("term").SubResource("exec").
				VersionedParams(&corev1.PodExecOptions{Container: "main", Command: []string{"sh", "-c", "stty size; exit 3"}, Stdin: true, Stdout: true, TTY: true}, scheme.ParameterCodec)
			var (
				ex  remotecommand.Executor
				err error
			)
			if transport == "websocket" {
				ex, err = remotecommand.NewWebSocketExecutor(cluster.CP.RESTConfig, "GET", req.URL().String())
			} else {
				ex, err = remotecommand.NewSPDYExecutor(cluster.CP.RESTConfig, "POST", req.URL())
			}
			if err != nil {
				t.Fatal(err)
			}
			q := &sizeQueue{sizes: make(chan remotecommand.TerminalSize, 1)}
			q.sizes <- remotecommand.TerminalSize{Width: 100, Height: 40}
			defer close(q.sizes)
			stdinR, stdinW := io.Pipe()
			defer stdinW.Close()
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdinR, Stdout: &out, Tty: true, TerminalSizeQueue: q})
			var ce interface{ ExitStatus() int }
			if !errors.As(err, &ce) || ce.ExitStatus() != 3 {
				t.Errorf("exit: %v, want code 3", err)
			}
			if got := strings.TrimSpace(out.String()); got != "40 100" {
				t.Errorf("stty size in the TTY = %q, want \"40 100\"", got)
			}
		})
	}
}

// kubectl port-forward to a port that is published nowhere: concurrent
// connections each get the whole file, intact.
func TestKubectlPortForward(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "pf")
	pod := sleeper(ns, "web", devA)
	pod.Spec.Containers[0].Command = []string{"sh", "-c",
		"mkdir -p /www && dd if=/dev/urandom of=/www/big bs=1048576 count=16 2>/dev/null && sha256sum /www/big | cut -d' ' -f1 > /www/big.sha && echo ready && exec httpd -f -p 8080 -h /www"}
	// Forwarded once it serves, as a user waits for Ready: kubectl
	// port-forward gives up for good when a forwarded connection is
	// refused, and the server starts after writing 16 MB.
	pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{PeriodSeconds: 1,
		ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ns, "web")
	eventually(t, time.Minute, "the pod Ready (serving)", func(ctx context.Context) (bool, string) {
		p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return podCondition(p, corev1.PodReady) == corev1.ConditionTrue, fmt.Sprintf("%+v", p.Status.Conditions)
	})
	bin, err := controlplane.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	pf := exec.CommandContext(ctx, filepath.Join(bin, "kubectl"), "--kubeconfig="+cluster.CP.Kubeconfig, "port-forward", "-n", ns, "pod/web", ":8080")
	stdout, err := pf.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	pf.Stderr = &stderr
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = pf.Wait() }()
	sc := bufio.NewScanner(stdout)
	re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+)`)
	port := ""
	for port == "" && sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			port = m[1]
		}
	}
	if port == "" {
		t.Fatalf("kubectl port-forward printed no port (stderr %q)", stderr.String())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	base := "http://127.0.0.1:" + port
	get := func(path string) ([]byte, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return io.ReadAll(resp.Body)
	}
	var want []byte
	eventually(t, time.Minute, "the file's checksum over the forward", func(context.Context) (bool, string) {
		b, err := get("/big.sha")
		if err != nil {
			return false, err.Error()
		}
		want = bytes.TrimSpace(b)
		return len(want) == 64, string(b)
	})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := get("/big")
			if err != nil {
				errs <- err
				return
			}
			sum := sha256.Sum256(b)
			if got := hex.EncodeToString(sum[:]); got != string(want) || len(b) != 16<<20 {
				errs <- fmt.Errorf("got %d bytes with sha256 %s, want %d bytes with %s", len(b), got, 16<<20, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// The Node routes that name no pod answer on each Node's own port:
// /stats/summary and /metrics/resource of a device Node, with its pods'
// real CPU and memory figures from podman.
func TestNodeStatsOnEachNodesOwnPort(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "stats")
	pod := sleeper(ns, "burner", devB)
	pod.Spec.Containers[0].Command = []string{"sh", "-c", "while true; do i=0; while [ $i -lt 5000 ]; do i=$((i+1)); done; sleep 1; done"}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ns, "burner")
	node, err := cluster.Client.CoreV1().Nodes().Get(t.Context(), devB, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p := node.Status.DaemonEndpoints.KubeletEndpoint.Port; int(p) == cluster.KubeletPort {
		t.Errorf("Node %s advertises the shared kubelet port %d, not one of its own", devB, p)
	}
	// The API server's node proxy refuses loopback addresses ("address not
	// allowed"), and the dev cluster's Nodes are on 127.0.0.1: call the
	// Node's port as the API server and metrics-server do, with the
	// cluster's CA and the admin's credentials.
	client, err := rest.HTTPClientFor(cluster.CP.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	port := node.Status.DaemonEndpoints.KubeletEndpoint.Port
	proxy := func(ctx context.Context, path string) (string, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d%s", port, path), nil)
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("%s: %s", resp.Status, b)
		}
		return string(b), nil
	}
	// Another Node's pods are not this port's.
	other, err := cluster.Client.CoreV1().Nodes().Get(t.Context(), devA, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if other.Status.DaemonEndpoints.KubeletEndpoint.Port == port {
		t.Fatalf("%s and %s share kubelet port %d", devA, devB, port)
	}
	if _, err := proxy(t.Context(), "/containerLogs/"+ns+"/burner/main"); err != nil {
		t.Errorf("logs of a pod of this Node on its port: %v", err)
	}
	eventually(t, time.Minute, "the burner's CPU in /stats/summary", func(ctx context.Context) (bool, string) {
		out, err := proxy(ctx, "/stats/summary")
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(out, `"nodeName":"`+devB+`"`) && strings.Contains(out, `"name":"burner"`) &&
			regexp.MustCompile(`"usageNanoCores":[1-9]`).MatchString(out), out
	})
	eventually(t, time.Minute, "the burner in /metrics/resource", func(ctx context.Context) (bool, string) {
		out, err := proxy(ctx, "/metrics/resource")
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(out, `container_cpu_usage_seconds_total{container="main",namespace="`+ns+`",pod="burner"}`) &&
			strings.Contains(out, "node_memory_working_set_bytes"), out
	})
	_ = cluster.Client.CoreV1().Pods(ns).Delete(t.Context(), "burner", metav1.DeleteOptions{})
}

// kubectl logs --previous shows the run before the last restart, and plain
// kubectl logs only the current run, as with a kubelet.
func TestKubectlLogsPrevious(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "previous")
	pod := sleeper(ns, "crasher", devB)
	pod.Spec.Containers[0].Command = []string{"sh", "-c", "echo run-$(cat /proc/sys/kernel/random/uuid); sleep 2; exit 1"}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, errOut, code := kubectl(t, ctx, "", "logs", "-n", ns, "crasher", "--previous"); code == 0 {
		// Before its first restart there is no previous run.
		p, _ := cluster.Client.CoreV1().Pods(ns).Get(ctx, "crasher", metav1.GetOptions{})
		if p != nil && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].RestartCount == 0 {
			t.Errorf("kubectl logs --previous before any restart succeeded (stderr %q)", errOut)
		}
	}
	eventually(t, 2*time.Minute, "a restarted container that is running again", func(ctx context.Context) (bool, string) {
		p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "crasher", metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) == 0 {
			return false, fmt.Sprint(err)
		}
		cs := p.Status.ContainerStatuses[0]
		return cs.RestartCount >= 1 && cs.State.Running != nil, fmt.Sprintf("restarts %d, state %+v", cs.RestartCount, cs.State)
	})
	var prev, cur string
	eventually(t, time.Minute, "one run in each log", func(ctx context.Context) (bool, string) {
		var c1, c2 int
		prev, _, c1 = kubectl(t, ctx, "", "logs", "-n", ns, "crasher", "--previous")
		cur, _, c2 = kubectl(t, ctx, "", "logs", "-n", ns, "crasher")
		return c1 == 0 && c2 == 0 && strings.Count(prev, "run-") == 1 && strings.Count(cur, "run-") == 1, fmt.Sprintf("previous %q, current %q", prev, cur)
	})
	if prev == cur {
		t.Errorf("--previous and the current log are the same run: %q", cur)
	}
}

// kubectl top node and kubectl top pod show device Nodes and pods, with the
// real metrics-server scraping each Node's own kubelet port.
func TestKubectlTop(t *testing.T) {
	needCluster(t)
	t.Parallel()
	bin, err := metricsserver.BinDir()
	if err != nil {
		t.Fatalf("metrics-server: %v", err)
	}
	ms, err := metricsserver.Start(t.Context(), metricsserver.Config{ControlPlane: cluster.CP, BinDir: bin})
	if err != nil {
		t.Fatalf("starting metrics-server: %v", err)
	}
	t.Cleanup(func() { _ = ms.Stop() })
	ns := createNamespace(t, "top")
	pod := sleeper(ns, "busy", devA)
	pod.Spec.Containers[0].Command = []string{"sh", "-c", "while true; do i=0; while [ $i -lt 5000 ]; do i=$((i+1)); done; sleep 1; done"}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ns, "busy")
	eventually(t, 2*time.Minute, "kubectl top node "+devA, func(ctx context.Context) (bool, string) {
		out, errOut, code := kubectl(t, ctx, "", "top", "node", devA, "--no-headers")
		return code == 0 && strings.HasPrefix(out, devA+" "), out + errOut
	})
	eventually(t, 2*time.Minute, "kubectl top pod busy", func(ctx context.Context) (bool, string) {
		out, errOut, code := kubectl(t, ctx, "", "top", "pod", "-n", ns, "busy", "--containers", "--no-headers")
		return code == 0 && regexp.MustCompile(`^busy\s+main\s+\d+m\s+\d+Mi`).MatchString(out), out + errOut
	})
}

// kubectl attach joins a container's main process: its stdin (the pod
// asks for stdin) and its output.
func TestKubectlAttach(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "attach")
	pod := sleeper(ns, "reader", devB)
	pod.Spec.Containers[0].Stdin = true
	pod.Spec.Containers[0].StdinOnce = true
	pod.Spec.Containers[0].Command = []string{"sh", "-c", "read line; echo got $line"}
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever // the attach ends with the process
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ns, "reader")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, errOut, code := kubectl(t, ctx, "hello\n", "attach", "-i", "-n", ns, "reader")
	if !strings.Contains(out, "got hello") {
		t.Errorf("kubectl attach -i: stdout %q, stderr %q, exit %d; want \"got hello\"", out, errOut, code)
	}
}
