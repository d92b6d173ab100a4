package provider

import (
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// withDevice makes p know device pi-1 at protocol version v.
func withDevice(p *Provider, v int) {
	p.devices = map[string]*device{"pi-1": {name: "pi-1", hb: &bridge.Heartbeat{Time: time.Now(), Inventory: bridge.Inventory{ProtocolVersion: v}}}}
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}}
}

func envMap(env []bridge.EnvVar) map[string]bridge.EnvVar {
	m := map[string]bridge.EnvVar{}
	for _, e := range env {
		m[e.Name] = e
	}
	return m
}

// The conformance specs "Downward API should provide pod name, namespace
// and IP address / host IP / hostIPs as env vars": the provider resolves
// what it knows and leaves the IPs to the device, named by FieldRef.
func TestDownwardAPIEnv(t *testing.T) {
	p := testProvider(t)
	withDevice(p, bridge.ProtocolVersion)
	pod := basePod()
	pod.Spec.ServiceAccountName = "robot"
	pod.Labels = map[string]string{"app": "web"}
	c := &pod.Spec.Containers[0]
	c.Env = []corev1.EnvVar{
		fieldEnv("POD_NAME", "metadata.name"), fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("POD_UID", "metadata.uid"), fieldEnv("APP", "metadata.labels['app']"),
		fieldEnv("NODE", "spec.nodeName"), fieldEnv("SA", "spec.serviceAccountName"),
		fieldEnv("POD_IP", "status.podIP"), fieldEnv("POD_IPS", "status.podIPs"),
		fieldEnv("HOST_IP", "status.hostIP"), fieldEnv("HOST_IPS", "status.hostIPs"),
		{Name: "POD_IP", Value: "overridden"}, fieldEnv("POD_IP", "status.podIP"), // the last one wins
	}
	w, _, refusal, pending := p.translate(t.Context(), pod)
	if refusal != "" || pending != nil {
		t.Fatalf("refusal %q, pending %v", refusal, pending)
	}
	got := envMap(w.Containers[0].Env)
	if len(got) != len(w.Containers[0].Env) {
		t.Errorf("a variable twice: %+v", w.Containers[0].Env)
	}
	for name, want := range map[string]string{"POD_NAME": "web", "POD_NAMESPACE": "ns", "POD_UID": "uid-1", "APP": "web", "NODE": "pi-1", "SA": "robot"} {
		if e := got[name]; e.Value != want || e.FieldRef != "" {
			t.Errorf("%s = %+v, want value %q", name, e, want)
		}
	}
	for name, want := range map[string]string{"POD_IP": bridge.FieldPodIP, "POD_IPS": bridge.FieldPodIPs, "HOST_IP": bridge.FieldHostIP, "HOST_IPS": bridge.FieldHostIPs} {
		if e := got[name]; e.FieldRef != want || e.Value != "" {
			t.Errorf("%s = %+v, want fieldRef %q", name, e, want)
		}
	}
	if old, now := bridge.RestartHash(w), bridge.RestartHash(&bridge.Workload{Containers: []bridge.Container{{Name: "c", Image: "img:1"}}}); old != now {
		t.Errorf("env changed the restart hash: %s, want %s", old, now)
	}

	// An agent older than 8 would set the variables empty: refused, with
	// the reason. A device not heard from yet: wait.
	withDevice(p, 7)
	if _, _, refusal, _ := p.translate(t.Context(), pod); !strings.Contains(refusal, "too old for env") || !strings.Contains(refusal, "protocol 7, needs 8") {
		t.Errorf("refusal for a v7 device = %q", refusal)
	}
	p.devices = nil
	if w, _, refusal, pending := p.translate(t.Context(), pod); w != nil || refusal != "" || pending == nil || !strings.Contains(pending.Error(), "waiting for device pi-1") {
		t.Errorf("unknown device: workload %v, refusal %q, pending %v", w != nil, refusal, pending)
	}
	// Without such variables an older device is fine.
	withDevice(p, 7)
	if _, _, refusal, _ := p.translate(t.Context(), basePod()); refusal != "" {
		t.Errorf("a plain pod refused on a v7 device: %q", refusal)
	}
}

// $(VAR) cannot refer to a variable the device fills in: the provider
// cannot expand it and the device does not, so the pod is refused rather
// than run with the reference as written.
func TestDeviceEnvReferencesRefused(t *testing.T) {
	p := testProvider(t)
	withDevice(p, bridge.ProtocolVersion)
	for name, mutate := range map[string]func(c *corev1.Container){
		"args":    func(c *corev1.Container) { c.Args = []string{"--bind=$(POD_IP)"} },
		"command": func(c *corev1.Container) { c.Command = []string{"echo", "$(POD_IP)"} },
		"env": func(c *corev1.Container) {
			c.Env = append(c.Env, corev1.EnvVar{Name: "URL", Value: "http://$(POD_IP):80"})
		},
	} {
		pod := basePod()
		c := &pod.Spec.Containers[0]
		c.Env = append(c.Env, fieldEnv("POD_IP", "status.podIP"))
		mutate(c)
		if _, _, refusal, _ := p.translate(t.Context(), pod); !strings.Contains(refusal, "whose value only the device knows") {
			t.Errorf("%s: refusal = %q", name, refusal)
		}
	}
	// $$(POD_IP) is a literal, and a variable set after the reference is
	// not the one referred to.
	pod := basePod()
	c := &pod.Spec.Containers[0]
	c.Env = append(c.Env, corev1.EnvVar{Name: "X", Value: "$(POD_IP)"}, fieldEnv("POD_IP", "status.podIP"))
	c.Args = []string{"$$(POD_IP)"}
	w, _, refusal, _ := p.translate(t.Context(), pod)
	if refusal != "" {
		t.Fatal(refusal)
	}
	if got := envMap(w.Containers[0].Env)["X"].Value; got != "$(POD_IP)" || w.Containers[0].Args[0] != "$(POD_IP)" {
		t.Errorf("X = %q, args %q", got, w.Containers[0].Args)
	}
}

// Env resolves as in a kubelet: envFrom first, then env in order with
// $(VAR) from the variables before, ConfigMap and Secret keys (a missing
// optional one gives nothing, a missing mandatory one waits), service
// variables last.
func TestContainerEnvKubeletRules(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cfg"}, Data: map[string]string{"colour": "blue", "A": "from-cm"}}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "sec"}, Data: map[string][]byte{"pw": []byte("hunter2")}}
	p := testProvider(t, cm, sec)
	svcs := []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "my-db"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.7",
			Ports: []corev1.ServicePort{{Name: "sql", Port: 5432, Protocol: corev1.ProtocolTCP}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1",
			Ports: []corev1.ServicePort{{Name: "https", Port: 443}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "elsewhere"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.9",
			Ports: []corev1.ServicePort{{Port: 80}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "headless"}, Spec: corev1.ServiceSpec{ClusterIP: "None",
			Ports: []corev1.ServicePort{{Port: 80}}}},
	}
	for _, s := range svcs {
		if _, err := p.cfg.Client.CoreV1().Services(s.Namespace).Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	yes := true
	pod := basePod()
	c := &pod.Spec.Containers[0]
	c.EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}}
	c.Env = []corev1.EnvVar{
		{Name: "A", Value: "$(colour)-$(MY_DB_SERVICE_HOST)"},
		{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "pw"}}},
		{Name: "OPT", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Key: "k", Optional: &yes}}},
		{Name: "MY_DB_SERVICE_PORT", Value: "mine"},
	}
	w, _, refusal, pending := p.translate(t.Context(), pod)
	if refusal != "" || pending != nil {
		t.Fatalf("refusal %q, pending %v", refusal, pending)
	}
	got := map[string]string{}
	for _, e := range w.Containers[0].Env {
		got[e.Name] = e.Value
	}
	for name, want := range map[string]string{
		"A": "blue-10.96.0.7", "colour": "blue", "PW": "hunter2", "MY_DB_SERVICE_PORT": "mine",
		"MY_DB_SERVICE_PORT_SQL": "5432", "MY_DB_PORT": "tcp://10.96.0.7:5432", "MY_DB_PORT_5432_TCP_ADDR": "10.96.0.7",
		"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
	} {
		if got[name] != want {
			t.Errorf("%s = %q, want %q", name, got[name], want)
		}
	}
	for _, name := range []string{"OPT", "ELSEWHERE_SERVICE_HOST", "HEADLESS_SERVICE_HOST"} {
		if v, ok := got[name]; ok {
			t.Errorf("%s = %q, want unset", name, v)
		}
	}
	// enableServiceLinks false keeps only the kubernetes service's.
	pod.Spec.EnableServiceLinks = new(bool)
	w, _, _, _ = p.translate(t.Context(), pod)
	if e := envMap(w.Containers[0].Env); e["MY_DB_SERVICE_PORT_SQL"].Name != "" || e["KUBERNETES_SERVICE_HOST"].Value != "10.96.0.1" || e["A"].Value != "blue-$(MY_DB_SERVICE_HOST)" {
		t.Errorf("without service links: %v", w.Containers[0].Env)
	}

	// A mandatory key that does not exist (yet) waits, as a ConfigMap
	// created later may bring it.
	c.Env = append(c.Env, corev1.EnvVar{Name: "M", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "nope"}}})
	if _, _, refusal, pending := p.translate(t.Context(), pod); refusal != "" || pending == nil || !strings.Contains(pending.Error(), `has no key "nope"`) {
		t.Errorf("missing key: refusal %q, pending %v", refusal, pending)
	}
	// A field a device cannot give is refused.
	c.Env = []corev1.EnvVar{fieldEnv("L", "metadata.labels")}
	if _, _, refusal, _ := p.translate(t.Context(), pod); !strings.Contains(refusal, `"metadata.labels" is not supported in env`) {
		t.Errorf("refusal = %q", refusal)
	}
	if _, _, err := p.containerEnv(t.Context(), pod, c); !errors.Is(err, errInvalidSpec) {
		t.Errorf("err = %v, want errInvalidSpec", err)
	}
}
