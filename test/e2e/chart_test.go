package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/vk-fleet/vk-fleet/test/chart"
	"github.com/vk-fleet/vk-fleet/test/framework/controlplane"
	"github.com/vk-fleet/vk-fleet/test/framework/devcluster"
)

// The chart installs into a real control plane with the Helm SDK. Its
// Deployment cannot run there (no real kubelet), so this test plays the
// kubelet: it starts vk-fleet out of cluster with exactly the Deployment's
// args, env and mounted Secrets/ConfigMaps, authenticated as the chart's
// ServiceAccount (a TokenRequest token). A device enrolls, a DaemonSet pod
// runs on it and `kubectl logs` reads it: the chart's RBAC suffices. Then
// `helm upgrade` drops an object and `helm uninstall` leaves nothing with the
// release's labels.
//
// It runs its own control plane: a second vk-fleet on the shared cluster
// would see the shared devices in its registry and serve their pods too.
func TestChartInstallsAndItsRBACSuffices(t *testing.T) {
	needCluster(t)
	const (
		release = "vkf"
		ns      = "vk-fleet"
		dev     = "chart-pi"
	)
	start := time.Now()
	dir := t.TempDir()
	bin, err := controlplane.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	cp, err := controlplane.Start(t.Context(), controlplane.Config{BinDir: bin, Dir: filepath.Join(dir, "cp"), VerifyKubeletServingCerts: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	cs, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	binDir := os.Getenv(devcluster.EnvBinDir)
	if binDir == "" {
		t.Fatalf("%s must be set (hack/test.sh sets it)", devcluster.EnvBinDir)
	}
	t.Logf("control plane up in %s", time.Since(start).Round(time.Millisecond))

	// What an admin gives the chart: the namespace, the kubelet API's
	// serving certificate (this API server verifies it) and the CA of the
	// API server's kubelet client certificate.
	if _, err := cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cert, key, err := cp.ServingCert("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "kubelet-tls"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(t.Context(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "kubelet-client-ca"}, Data: map[string]string{"ca.crt": string(cp.CACertPEM)},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	free := func() int {
		p, err := devcluster.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	natsPort, kubeletPort, rangePort, healthPort := free(), free(), free(), free()
	vals := map[string]any{
		"nats":       map[string]any{"port": natsPort},
		"healthPort": healthPort,
		"kubelet": map[string]any{
			"port": kubeletPort, "portRange": fmt.Sprintf("%d-%d", rangePort, rangePort),
			"tlsSecret": "kubelet-tls", "clientCAConfigMap": "kubelet-client-ca",
		},
		"heartbeatTimeout": "8s",
		"logLevel":         "debug",
	}

	helmCfg, err := chart.ActionConfig(cp.Kubeconfig, ns)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := chart.Load()
	if err != nil {
		t.Fatal(err)
	}
	in := action.NewInstall(helmCfg)
	in.ReleaseName, in.Namespace, in.Timeout = release, ns, time.Minute
	rel, err := in.RunWithContext(t.Context(), ch, vals)
	if err != nil {
		t.Fatalf("helm install: %v", err)
	}
	uninstalled := false
	t.Cleanup(func() {
		if !uninstalled {
			_, _ = action.NewUninstall(helmCfg).Run(release)
		}
	})

	// Play the kubelet for the chart's pod.
	var dep appsv1.Deployment
	for _, doc := range releaseutil.SplitManifests(rel.Manifest) {
		var head metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &head); err == nil && head.Kind == "Deployment" {
			if err := yaml.Unmarshal([]byte(doc), &dep); err != nil {
				t.Fatal(err)
			}
		}
	}
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("rendered Deployment has %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	mounts := map[string]string{} // mountPath → local directory
	for _, m := range c.VolumeMounts {
		local := filepath.Join(dir, "volumes", m.Name)
		if err := os.MkdirAll(local, 0o700); err != nil {
			t.Fatal(err)
		}
		mounts[m.MountPath] = local
		for _, v := range pod.Volumes {
			if v.Name != m.Name {
				continue
			}
			data := map[string][]byte{}
			var items []corev1.KeyToPath
			switch {
			case v.Secret != nil:
				s, err := cs.CoreV1().Secrets(ns).Get(t.Context(), v.Secret.SecretName, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				data, items = s.Data, v.Secret.Items
			case v.ConfigMap != nil:
				cm, err := cs.CoreV1().ConfigMaps(ns).Get(t.Context(), v.ConfigMap.Name, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				for k, s := range cm.Data {
					data[k] = []byte(s)
				}
				items = v.ConfigMap.Items
			}
			for _, it := range items {
				if err := os.WriteFile(filepath.Join(local, it.Path), data[it.Key], 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	args := []string{"--kubeconfig", serviceAccountKubeconfig(t, cp, cs, ns, pod.ServiceAccountName, dir)}
	for _, a := range c.Args {
		// A path under a mount goes to the mount's local directory.
		if flag, val, ok := strings.Cut(a, "="); ok {
			best := ""
			for mp := range mounts {
				if (val == mp || strings.HasPrefix(val, mp+"/")) && len(mp) > len(best) {
					best = mp
				}
			}
			if best != "" {
				a = flag + "=" + mounts[best] + strings.TrimPrefix(val, best)
			}
		}
		args = append(args, a)
	}
	var env []string
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			v = map[string]string{"status.podIP": "127.0.0.1", "metadata.name": release + "-0", "metadata.namespace": ns}[e.ValueFrom.FieldRef.FieldPath]
		}
		env = append(env, e.Name+"="+v)
	}
	t.Logf("vk-fleet %s", strings.Join(args[2:], " "))
	proc, err := devcluster.StartProcess("chart-vk-fleet", filepath.Join(dir, "vk-fleet.log"), env, filepath.Join(binDir, "vk-fleet"), args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		proc.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("vk-fleet log tail:\n%s", proc.Tail(60))
		}
	})
	// The probes of the Deployment answer.
	for _, path := range []string{c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path} {
		eventually(t, time.Minute, "vk-fleet "+path, func(context.Context) (bool, string) {
			if proc.Exited() {
				t.Fatalf("vk-fleet exited:\n%s", proc.Tail(30))
			}
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", healthPort, path))
			if err != nil {
				return false, err.Error()
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, resp.Status
		})
	}

	// An admin enrolls a device, as NOTES.txt says.
	admin, err := cp.ClientKubeconfig("chart-admin", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	fleetctl := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), filepath.Join(binDir, "fleetctl"), args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+admin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fleetctl %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	token := strings.TrimSpace(fleetctl("token", "create", "--ttl", "10m"))
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, []byte(fleetctl("ca")), 0o644); err != nil {
		t.Fatal(err)
	}
	fleetctl("enroll", "--server", "tls://127.0.0.1:"+strconv.Itoa(natsPort), "--token", token, "--name", dev,
		"--ca", caFile, "--root", cluster.DeviceRoot(dev), "--state-dir", cluster.AgentStateDir(dev), "--podman-url", cluster.Podman.URI)
	if err := cluster.StartAgent(t.Context(), dev); err != nil {
		t.Fatal(err)
	}
	// What the agent leaves in the shared podman on a failure goes with the
	// cluster's reset at the end of the run.
	t.Cleanup(func() { cluster.StopAgent(dev) })
	eventually(t, time.Minute, "Node "+dev+" Ready", func(ctx context.Context) (bool, string) {
		n, err := cs.CoreV1().Nodes().Get(ctx, dev, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return nodeReady(n), fmt.Sprint(n.Status.Conditions)
	})

	// A DaemonSet pod runs on it, and `kubectl logs` reaches it through the
	// kubelet API vk-fleet serves with the chart's certificate.
	ds := daemonSet("default", "hello", map[string]string{"kubernetes.io/hostname": dev}, "sh", "-c", "echo hello from the chart; sleep 3600")
	if _, err := cs.AppsV1().DaemonSets("default").Create(t.Context(), ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var podName string
	eventually(t, 2*time.Minute, "the DaemonSet pod Running on "+dev, func(ctx context.Context) (bool, string) {
		l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=hello"})
		if err != nil || len(l.Items) != 1 {
			return false, fmt.Sprintf("%v pods, err %v", len(l.Items), err)
		}
		p := l.Items[0]
		podName = p.Name
		return p.Spec.NodeName == dev && p.Status.Phase == corev1.PodRunning, fmt.Sprintf("%s on %q: %s", p.Name, p.Spec.NodeName, p.Status.Phase)
	})
	eventually(t, time.Minute, "kubectl logs", func(ctx context.Context) (bool, string) {
		out, err := cp.Kubectl(ctx, "logs", "-n", "default", podName)
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(string(out), "hello from the chart"), string(out)
	})
	policy := metav1.DeletePropagationForeground
	if err := cs.AppsV1().DaemonSets("default").Delete(t.Context(), "hello", metav1.DeleteOptions{PropagationPolicy: &policy}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the DaemonSet's container removed", func(ctx context.Context) (bool, string) {
		n := len(podmanPods(t, ctx, dev))
		return n == 0, fmt.Sprintf("%d podman pods", n)
	})
	if logs, err := os.ReadFile(proc.Log); err == nil && strings.Contains(string(logs), "forbidden") {
		t.Errorf("vk-fleet was refused something by RBAC:\n%s", grepLines(string(logs), "forbidden"))
	}
	proc.Stop(10 * time.Second)

	// helm upgrade: an object the new values drop is deleted.
	up := action.NewUpgrade(helmCfg)
	up.Namespace, up.Timeout = ns, time.Minute
	vals["flowControl"] = map[string]any{"enabled": false}
	if _, err := up.RunWithContext(t.Context(), release, ch, vals); err != nil {
		t.Fatalf("helm upgrade: %v", err)
	}
	if left := releaseObjects(t, cp, release); !strings.Contains(strings.Join(left, " "), "deployments/vkf-vk-fleet") ||
		strings.Contains(strings.Join(left, " "), "flowschemas") || strings.Contains(strings.Join(left, " "), "prioritylevelconfigurations") {
		t.Errorf("after the upgrade, the release's objects are %v; want the Deployment and no FlowSchema or PriorityLevelConfiguration", left)
	}

	// helm uninstall: nothing with the release's labels is left. The
	// Secrets vk-fleet made (its NATS CA and store key) carry no release
	// label and stay, on purpose: devices pin that CA.
	if _, err := action.NewUninstall(helmCfg).Run(release); err != nil {
		t.Fatalf("helm uninstall: %v", err)
	}
	uninstalled = true
	if left := releaseObjects(t, cp, release); len(left) > 0 {
		t.Errorf("helm uninstall left %v", left)
	}
	if _, err := cs.CoreV1().Secrets("kube-system").Get(t.Context(), "vk-fleet-nats-ca", metav1.GetOptions{}); err != nil {
		t.Errorf("the NATS CA Secret did not survive the uninstall: %v", err)
	}
	t.Logf("took %s", time.Since(start).Round(time.Millisecond))
}

// serviceAccountKubeconfig writes a kubeconfig that authenticates as
// namespace/name with a token from the TokenRequest API.
func serviceAccountKubeconfig(t *testing.T, cp *controlplane.ControlPlane, cs kubernetes.Interface, namespace, name, dir string) string {
	t.Helper()
	exp := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(t.Context(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a token of %s/%s: %v", namespace, name, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["cp"] = &clientcmdapi.Cluster{Server: cp.APIServerURL, CertificateAuthorityData: cp.CACertPEM}
	cfg.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["sa"] = &clientcmdapi.Context{Cluster: "cp", AuthInfo: "sa"}
	cfg.CurrentContext = "sa"
	path := filepath.Join(dir, "sa.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// releaseObjects lists every object labelled as release's, as
// "<resource>/<name>", over the kinds the chart makes.
func releaseObjects(t *testing.T, cp *controlplane.ControlPlane, release string) []string {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, gvr := range []schema.GroupVersionResource{
		{Version: "v1", Resource: "serviceaccounts"}, {Version: "v1", Resource: "services"},
		{Version: "v1", Resource: "persistentvolumeclaims"}, {Version: "v1", Resource: "configmaps"},
		{Version: "v1", Resource: "secrets"},
		{Group: "apps", Version: "v1", Resource: "deployments"},
		{Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
		{Group: "flowcontrol.apiserver.k8s.io", Version: "v1", Resource: "flowschemas"},
		{Group: "flowcontrol.apiserver.k8s.io", Version: "v1", Resource: "prioritylevelconfigurations"},
	} {
		l, err := dyn.Resource(gvr).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + release})
		if err != nil {
			t.Fatalf("listing %s: %v", gvr.Resource, err)
		}
		for _, o := range l.Items {
			out = append(out, gvr.Resource+"/"+o.GetName())
		}
	}
	return out
}

func grepLines(s, word string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
