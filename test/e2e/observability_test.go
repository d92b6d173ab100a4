package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/vk-fleet/vk-fleet/test/framework/devcluster"
)

// scrape reads a Prometheus text endpoint into series → value.
func scrape(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("%s: %s: %s", url, resp.Status, b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// podEvents lists the reasons and messages of the Events of a pod.
func objectEvents(ctx context.Context, ns, kind, name string) ([]string, error) {
	l, err := cluster.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: fields.Set{
		"involvedObject.kind": kind, "involvedObject.name": name}.AsSelector().String()})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range l.Items {
		out = append(out, e.Type+" "+e.Reason+" "+e.Message)
	}
	return out, nil
}

func hasEvent(events []string, prefix string) bool {
	for _, e := range events {
		if strings.HasPrefix(e, prefix) {
			return true
		}
	}
	return false
}

// An operator sees the fleet where they see the cluster: vk-fleet's
// Prometheus metrics move with what they measure; a device pod's Events read
// like a kubelet's (Started, image pull failures, failing probes); a device
// whose agent stops says why it is not Ready, in its Node and in Events.
func TestFleetIsObservable(t *testing.T) {
	needCluster(t)
	ctx := t.Context()
	const dev = "pi-observed"
	if err := cluster.EnrollWith(ctx, dev, devcluster.EnrollOptions{Labels: []string{"observed=yes"}}); err != nil {
		t.Fatal(err)
	}
	agentPort, err := devcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	agentMetrics := "http://127.0.0.1:" + strconv.Itoa(agentPort) + "/metrics"
	if err := cluster.StartAgentWith(ctx, dev, "--metrics-listen", "127.0.0.1:"+strconv.Itoa(agentPort)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cluster.StopAgent(dev)
		_ = cluster.Client.CoreV1().Nodes().Delete(context.Background(), dev, metav1.DeleteOptions{})
	})
	eventually(t, 2*time.Minute, dev+" Ready", func(ctx context.Context) (bool, string) {
		n, err := cluster.Client.CoreV1().Nodes().Get(ctx, dev, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return nodeReady(n), "not ready"
	})

	metricsURL := "http://" + cluster.HealthAddr + "/metrics"
	first, err := scrape(ctx, metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, series := range []string{
		`vkfleet_ready`,
		`vkfleet_devices{state="connected"}`,
		`vkfleet_device_heartbeat_age_seconds_count`,
		`vkfleet_pods{phase="Running"}`,
		`vkfleet_callout_decisions_total{kind="device",reason="ok",result="allowed"}`,
		`vkfleet_node_writes_total{kind="lease",result="ok"}`,
		`vkfleet_kube_api_requests_total{code="200",method="PATCH"}`,
	} {
		if _, ok := first[series]; !ok {
			t.Errorf("vk-fleet's /metrics lacks %s", series)
		}
	}
	if first[`vkfleet_ready`] != 1 || first[`vkfleet_devices{state="connected"}`] < 3 {
		t.Errorf("vkfleet_ready %v, connected devices %v; want 1 and at least 3", first[`vkfleet_ready`], first[`vkfleet_devices{state="connected"}`])
	}

	// Pods: one that runs with a failing readiness probe, one whose image
	// does not exist.
	ns := createNamespace(t, "observed")
	mk := func(name, image string, probe *corev1.Probe) {
		t.Helper()
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.PodSpec{
				NodeSelector: map[string]string{"observed": "yes"}, Tolerations: []corev1.Toleration{deviceToleration},
				TerminationGracePeriodSeconds: int64p(1),
				Containers: []corev1.Container{{Name: "main", Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
					Command: []string{"sleep", "3600"}, ReadinessProbe: probe}},
			},
		}
		if _, err := cluster.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mk("unready", cluster.Image, &corev1.Probe{PeriodSeconds: 1, FailureThreshold: 1,
		ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"false"}}}})
	mk("missing-image", "127.0.0.1:1/vk-fleet/does-not-exist:v1", nil)
	eventually(t, 2*time.Minute, "kubelet's Events on the pods", func(ctx context.Context) (bool, string) {
		unready, err := objectEvents(ctx, ns, "Pod", "unready")
		if err != nil {
			return false, err.Error()
		}
		missing, err := objectEvents(ctx, ns, "Pod", "missing-image")
		if err != nil {
			return false, err.Error()
		}
		ok := hasEvent(unready, "Normal Started Started container main") &&
			hasEvent(unready, "Warning Unhealthy Readiness probe failed") &&
			hasEvent(missing, `Warning Failed Failed to pull image "127.0.0.1:1/vk-fleet/does-not-exist:v1"`)
		return ok, fmt.Sprintf("unready: %q; missing-image: %q", unready, missing)
	})
	eventually(t, time.Minute, "metrics that moved", func(ctx context.Context) (bool, string) {
		now, err := scrape(ctx, metricsURL)
		if err != nil {
			return false, err.Error()
		}
		moved := func(s string) bool { return now[s] > first[s] }
		ok := moved(`vkfleet_workload_writes_total{op="publish"}`) && moved(`vkfleet_pod_status_reports_total`) &&
			moved(`vkfleet_node_writes_total{kind="lease",result="ok"}`) && now[`vkfleet_pods{phase="Pending"}`] >= 1
		if am, err := scrape(ctx, agentMetrics); err != nil || am[`vkfleet_agent_reconcile_duration_seconds_count`] == 0 ||
			am[`vkfleet_agent_heartbeats_total{kind="full"}`] == 0 || am[`vkfleet_agent_runtime_errors_total{op="create"}`]+am[`vkfleet_agent_image_pull_duration_seconds_count`] == 0 {
			return false, fmt.Sprintf("agent metrics: %v (err %v)", am, err)
		}
		return ok, fmt.Sprintf("publish %v→%v, status reports %v→%v, leases %v→%v, pending %v",
			first[`vkfleet_workload_writes_total{op="publish"}`], now[`vkfleet_workload_writes_total{op="publish"}`],
			first[`vkfleet_pod_status_reports_total`], now[`vkfleet_pod_status_reports_total`],
			first[`vkfleet_node_writes_total{kind="lease",result="ok"}`], now[`vkfleet_node_writes_total{kind="lease",result="ok"}`],
			now[`vkfleet_pods{phase="Pending"}`])
	})

	// At the device: `device-agent status` lists both pods.
	out, err := exec.CommandContext(ctx, cluster.Binary("device-agent"), "status", "--state-dir", cluster.AgentStateDir(dev)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "unready") || !strings.Contains(string(out), "missing-image") || !strings.Contains(string(out), "connected to vk-fleet") {
		t.Errorf("device-agent status: %v\n%s", err, out)
	}

	// The agent stops: the Node says the link is down, at the heartbeat
	// timeout, and an Event says so; back, another Event.
	cluster.StopAgent(dev)
	eventually(t, 2*time.Minute, dev+" Unknown with reason DeviceLinkDown", func(ctx context.Context) (bool, string) {
		n, err := cluster.Client.CoreV1().Nodes().Get(ctx, dev, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionUnknown && c.Reason == "DeviceLinkDown", string(c.Status) + "/" + c.Reason + ": " + c.Message
			}
		}
		return false, "no Ready condition"
	})
	silent, err := scrape(ctx, metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	if silent[`vkfleet_devices{state="silent"}`] < 1 {
		t.Errorf("vkfleet_devices{state=\"silent\"} = %v with %s's agent stopped", silent[`vkfleet_devices{state="silent"}`], dev)
	}
	if err := cluster.StartAgent(ctx, dev); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "NodeNotReady and NodeReady Events on "+dev, func(ctx context.Context) (bool, string) {
		evs, err := objectEvents(ctx, "default", "Node", dev)
		if err != nil {
			return false, err.Error()
		}
		return hasEvent(evs, "Warning NodeNotReady Node "+dev+" status is now: NodeNotReady") &&
			hasEvent(evs, "Normal NodeReady Node "+dev+" status is now: NodeReady"), fmt.Sprintf("%q", evs)
	})
}
