package provider

import (
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/vk-fleet/vk-fleet/bridge"
)

func testProvider(t *testing.T, objs ...any) *Provider {
	t.Helper()
	cs := fake.NewClientset()
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.ConfigMap:
			cs.Tracker().Add(o)
		case *corev1.Secret:
			cs.Tracker().Add(o)
		}
	}
	p := &Provider{cfg: Config{Client: cs}}
	p.cfg.setDefaults()
	p.pods = newPodTable()
	return p
}

func basePod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", UID: "uid-1", Generation: 2},
		Spec: corev1.PodSpec{
			NodeName: "pi-1",
			Containers: []corev1.Container{{
				Name: "c", Image: "img:1", Command: []string{"sh"}, Args: []string{"-c", "true"},
				Env:   []corev1.EnvVar{{Name: "A", Value: "1"}},
				Ports: []corev1.ContainerPort{{ContainerPort: 80, HostPort: 8080, HostIP: "127.0.0.1", Protocol: corev1.ProtocolTCP}},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
					corev1.ResourceMemory: resource.MustParse("64Mi"), corev1.ResourceCPU: resource.MustParse("500m"),
				}},
				VolumeMounts: []corev1.VolumeMount{{Name: "kube-api-access-x", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}},
			}},
			Volumes: []corev1.Volume{{Name: "kube-api-access-x", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}},
			}}}},
		},
	}
}

func TestTranslateBasics(t *testing.T) {
	p := testProvider(t)
	w, ignored, refusal, _ := p.translate(t.Context(), basePod())
	if refusal != "" || len(ignored) != 0 {
		t.Fatalf("refusal %q ignored %v", refusal, ignored)
	}
	if w.UID != "uid-1" || w.Generation != 2 || w.RestartPolicy != bridge.RestartAlways || w.Hostname != "web" {
		t.Errorf("workload = %+v", w)
	}
	c := w.Containers[0]
	if c.Resources.MemoryLimitBytes != 64<<20 || c.Resources.CPULimitMilli != 500 {
		t.Errorf("resources = %+v", c.Resources)
	}
	if len(c.Ports) != 1 || c.Ports[0].HostPort != 8080 || c.Ports[0].HostIP != "127.0.0.1" {
		t.Errorf("ports = %+v", c.Ports)
	}
	if len(c.Mounts) != 0 || len(w.Volumes) != 0 {
		t.Errorf("the service-account token volume must be left out: %+v %+v", c.Mounts, w.Volumes)
	}
}

func TestTranslateRefusesWhatDevicesCannotDo(t *testing.T) {
	p := testProvider(t)
	pod := basePod()
	pod.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("nosuch")}}}
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}})
	_, _, refusal, _ := p.translate(t.Context(), pod)
	for _, want := range []string{`probe port "nosuch"`, `volume "data"`} {
		if !strings.Contains(refusal, want) {
			t.Errorf("refusal %q does not mention %q", refusal, want)
		}
	}
}

func TestTranslateResolvesConfigMapAndSecretVolumes(t *testing.T) {
	p := testProvider(t,
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cfg"}, Data: map[string]string{"a.conf": "x=1", "b": "2"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "sec"}, Data: map[string][]byte{"token": []byte("s3cret")}},
	)
	pod := basePod()
	pod.Spec.Volumes = append(pod.Spec.Volumes,
		corev1.Volume{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Items: []corev1.KeyToPath{{Key: "a.conf", Path: "app/a.conf"}}}}},
		corev1.Volume{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec"}}},
		corev1.Volume{Name: "missing", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Optional: new(bool)}}},
	)
	*pod.Spec.Volumes[3].ConfigMap.Optional = true
	w, _, refusal, _ := p.translate(t.Context(), pod)
	if refusal != "" {
		t.Fatal(refusal)
	}
	files := map[string]map[string][]byte{}
	for _, v := range w.Volumes {
		files[v.Name] = v.Files
	}
	if string(files["cfg"]["app/a.conf"]) != "x=1" || len(files["cfg"]) != 1 {
		t.Errorf("configmap files = %v", files["cfg"])
	}
	if string(files["sec"]["token"]) != "s3cret" {
		t.Errorf("secret files = %v", files["sec"])
	}

	pod.Spec.Volumes[1].ConfigMap.Items[0].Path = "../escape"
	if _, _, refusal, _ := p.translate(t.Context(), pod); !strings.Contains(refusal, "inside the volume") {
		t.Errorf("path escape not refused: %q", refusal)
	}
}

func TestPodStatusFromDevice(t *testing.T) {
	p := testProvider(t)
	now := time.Now().UTC().Truncate(time.Second)
	ent := &podEntry{pod: basePod(), status: &bridge.PodStatus{
		UID: "uid-1", Phase: bridge.PhaseFailed, PodIP: "10.88.0.2", StartTime: &now,
		Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateTerminated, ExitCode: 3, Reason: "Error",
			StartedAt: &now, FinishedAt: &now, ContainerID: "abc"}},
	}, ignored: []string{"probes"}}
	got := p.podWithStatus(ent).Status
	if got.Phase != corev1.PodFailed || got.PodIP != "10.88.0.2" || got.StartTime == nil || got.HostIP != "127.0.0.1" {
		t.Errorf("status = %+v", got)
	}
	cs := got.ContainerStatuses[0]
	if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 3 || cs.ContainerID != "podman://abc" || cs.Ready {
		t.Errorf("container status = %+v", cs)
	}
	conds := map[corev1.PodConditionType]corev1.PodCondition{}
	for _, c := range got.Conditions {
		conds[c.Type] = c
	}
	if conds[corev1.PodReady].Status != corev1.ConditionFalse || conds[corev1.PodScheduled].Status != corev1.ConditionTrue {
		t.Errorf("conditions = %+v", got.Conditions)
	}
	if c := conds[ConditionIgnoredFields]; c.Status != corev1.ConditionTrue || !strings.Contains(c.Message, "probes") {
		t.Errorf("ignored-fields condition = %+v", c)
	}
}

// The status says which generation of the spec it answers, for every
// kind of status; PodScheduled keeps the scheduler's.
func TestStatusObservesTheGeneration(t *testing.T) {
	p := testProvider(t)
	now := time.Now().UTC().Truncate(time.Second)
	running := &bridge.PodStatus{UID: "uid-1", Phase: bridge.PhaseRunning, StartTime: &now,
		Containers: []bridge.ContainerStatus{{Name: "c", State: bridge.StateRunning, StartedAt: &now, Ready: true}}}
	for name, ent := range map[string]*podEntry{
		"from the device": {status: running},
		"refused":         {refusal: &corev1.PodStatus{Phase: corev1.PodPending, Reason: "UnsupportedPodSpec", Message: "no"}},
		"waiting":         {},
		"config pending":  {waiting: "configmap x not found"},
	} {
		ent.pod = basePod()
		ent.pod.Generation = 3
		ent.pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, ObservedGeneration: 1}}
		st := p.podWithStatus(ent).Status
		if st.ObservedGeneration != 3 {
			t.Errorf("%s: observedGeneration %d, want 3", name, st.ObservedGeneration)
		}
		for _, c := range st.Conditions {
			want := int64(3)
			if c.Type == corev1.PodScheduled {
				want = 1
			}
			if c.ObservedGeneration != want {
				t.Errorf("%s: condition %s observedGeneration %d, want %d", name, c.Type, c.ObservedGeneration, want)
			}
		}
	}
}

func TestRefusedPodStaysPendingWithReason(t *testing.T) {
	p := testProvider(t)
	ent := &podEntry{pod: basePod(), refusal: &corev1.PodStatus{Phase: corev1.PodPending, Reason: "UnsupportedPodSpec", Message: "no"}}
	st := p.podWithStatus(ent).Status
	if st.Phase != corev1.PodPending || st.Reason != "UnsupportedPodSpec" || st.ContainerStatuses[0].State.Waiting == nil {
		t.Errorf("status = %+v", st)
	}
}

// A ConfigMap that is missing or cannot be read makes a pod wait and be
// retried, never refused for good; only a ConfigMap that does not exist
// counts as absent for an optional volume.
func TestMissingOrUnreadableConfigIsPendingNotRefused(t *testing.T) {
	p := testProvider(t)
	pod := basePod()
	optional := true
	pod.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "later"}}}}}
	_, _, refusal, pending := p.translate(t.Context(), pod)
	if refusal != "" || pending == nil || !strings.Contains(pending.Error(), `"later"`) {
		t.Fatalf("missing configmap: refusal %q, pending %v; want pending naming it", refusal, pending)
	}

	pod.Spec.Volumes[0].ConfigMap.Optional = &optional
	w, _, refusal, pending := p.translate(t.Context(), pod)
	if refusal != "" || pending != nil || len(w.Volumes) != 1 || len(w.Volumes[0].Files) != 0 {
		t.Fatalf("missing optional configmap: %v %q %v", w, refusal, pending)
	}

	p.cfg.Client.(*fake.Clientset).PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("etcd is away")
	})
	_, _, refusal, pending = p.translate(t.Context(), pod)
	if refusal != "" || pending == nil {
		t.Fatalf("unreadable optional configmap: refusal %q, pending %v; want pending (not an empty volume)", refusal, pending)
	}
}

// Init containers (sidecars among them) and probes reach the device, with
// the API server's defaults and named ports resolved.
func TestTranslateInitContainersAndProbes(t *testing.T) {
	p := testProvider(t)
	pod := basePod()
	always := corev1.ContainerRestartPolicyAlways
	pod.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "i"}, {Name: "proxy", Image: "i", RestartPolicy: &always}}
	pod.Spec.Containers[0].Ports = append(pod.Spec.Containers[0].Ports, corev1.ContainerPort{Name: "http", ContainerPort: 8081})
	pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")}}}
	pod.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}, PeriodSeconds: 3}
	w, _, refusal, pending := p.translate(t.Context(), pod)
	if refusal != "" || pending != nil {
		t.Fatalf("refusal %q, pending %v", refusal, pending)
	}
	if len(w.InitContainers) != 2 || w.InitContainers[0].Name != "setup" || w.InitContainers[1].RestartPolicy != "Always" {
		t.Fatalf("init containers = %+v", w.InitContainers)
	}
	c := w.Containers[0]
	if c.Readiness == nil || c.Readiness.HTTPGet == nil || c.Readiness.HTTPGet.Port != 8081 || c.Readiness.PeriodSeconds != 10 || c.Readiness.FailureThreshold != 3 {
		t.Errorf("readiness = %+v", c.Readiness)
	}
	if c.Liveness == nil || len(c.Liveness.Exec) != 1 || c.Liveness.PeriodSeconds != 3 {
		t.Errorf("liveness = %+v", c.Liveness)
	}
}

// envFrom prefixes and keys that are not C identifiers ("1-", "$") give
// variables as in a kubelet since 1.34. Explicit env wins; a missing
// optional source gives nothing.
func TestEnvFromWithRelaxedNames(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cfg"}, Data: map[string]string{"data-1": "value-1", "x": "cm"}}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "sec"}, Data: map[string][]byte{"data-2": []byte("value-2"), "a=b": []byte("no")}}
	p := testProvider(t, cm, sec)
	pod := basePod()
	yes := true
	c := &pod.Spec.Containers[0]
	c.EnvFrom = []corev1.EnvFromSource{
		{Prefix: "1-", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
		{Prefix: "ABC_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
		{Prefix: "$_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}}},
		{Prefix: "9", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Optional: &yes}},
	}
	// An explicit variable that also comes from envFrom wins.
	c.Env = append(c.Env, corev1.EnvVar{Name: "1-x", Value: "explicit"})
	w, _, refusal, pending := p.translate(t.Context(), pod)
	if refusal != "" || pending != nil {
		t.Fatalf("refusal %q, pending %v", refusal, pending)
	}
	got := map[string]string{}
	for _, e := range w.Containers[0].Env {
		if _, dup := got[e.Name]; dup {
			t.Errorf("variable %s twice", e.Name)
		}
		got[e.Name] = e.Value
	}
	for name, want := range map[string]string{"1-data-1": "value-1", "1-x": "explicit", "ABC_data-1": "value-1", "$_data-2": "value-2", "A": "1"} {
		if got[name] != want {
			t.Errorf("%s=%q, want %q (env %v)", name, got[name], want, got)
		}
	}
	if _, ok := got["$_a=b"]; ok {
		t.Errorf("a name with '=' was set: %v", got)
	}
}

// Command and args expand $(VAR) from the container's environment, as
// kubelet does ($$ escapes, unknown names stay as written); the
// conformance spec "Variable Expansion should allow substituting values
// in a container's command" runs sh -c 'TEST_VAR=wrong echo "$(TEST_VAR)"'.
func TestTranslateExpandsCommandAndArgs(t *testing.T) {
	p := testProvider(t)
	pod := basePod()
	c := &pod.Spec.Containers[0]
	c.Env = []corev1.EnvVar{{Name: "TEST_VAR", Value: "test-value"}}
	c.Command = []string{"sh", "-c", `TEST_VAR=wrong echo "$(TEST_VAR)"`}
	c.Args = []string{"$(TEST_VAR)", "$$(TEST_VAR)", "$(UNSET)"}
	w, _, refusal, _ := p.translate(t.Context(), pod)
	if refusal != "" {
		t.Fatal(refusal)
	}
	got := w.Containers[0]
	if want := []string{"sh", "-c", `TEST_VAR=wrong echo "test-value"`}; !slices.Equal(got.Command, want) {
		t.Errorf("command = %q, want %q", got.Command, want)
	}
	if want := []string{"test-value", "$(TEST_VAR)", "$(UNSET)"}; !slices.Equal(got.Args, want) {
		t.Errorf("args = %q, want %q", got.Args, want)
	}
	if c.Command[2] != `TEST_VAR=wrong echo "$(TEST_VAR)"` {
		t.Error("the pod's own command was changed")
	}
}

// activeDeadlineSeconds goes to the device, which enforces it; a device
// too old to enforce it is refused the pod, with a reason.
func TestActiveDeadlineGoesToTheDevice(t *testing.T) {
	p := testProvider(t)
	pod := basePod()
	ads := int64(5)
	pod.Spec.ActiveDeadlineSeconds = &ads
	w, _, refusal, _ := p.translate(t.Context(), pod)
	if refusal != "" || w.ActiveDeadlineSeconds == nil || *w.ActiveDeadlineSeconds != 5 {
		t.Fatalf("refusal %q, workload deadline %v", refusal, w.ActiveDeadlineSeconds)
	}
	p.devices = map[string]*device{"pi-1": {name: "pi-1", hb: &bridge.Heartbeat{Time: time.Now(), Inventory: bridge.Inventory{ProtocolVersion: 7}}}}
	if _, _, refusal, _ = p.translate(t.Context(), pod); !strings.Contains(refusal, "too old for activeDeadlineSeconds") {
		t.Errorf("refusal for a v7 device: %q", refusal)
	}
}

// Ephemeral containers go to the device beside the pod's containers; one
// that cannot run is not started (noted), and never refuses its running
// pod; a device too old for them is told nothing of them (noted).
func TestEphemeralContainersGoToTheDevice(t *testing.T) {
	p := testProvider(t)
	pod := basePod()
	pod.Spec.EphemeralContainers = []corev1.EphemeralContainer{
		{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "busybox", Command: []string{"sh"}, TTY: true, Stdin: true}},
		{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "bad", Image: "busybox",
			VolumeDevices: []corev1.VolumeDevice{{Name: "v", DevicePath: "/dev/x"}}}},
	}
	w, ignored, refusal, _ := p.translate(t.Context(), pod)
	if refusal != "" {
		t.Fatalf("refused: %q", refusal)
	}
	if len(w.EphemeralContainers) != 1 || w.EphemeralContainers[0].Name != "debugger" || !w.EphemeralContainers[0].TTY {
		t.Errorf("ephemeral containers %+v", w.EphemeralContainers)
	}
	if !strings.Contains(strings.Join(ignored, "; "), `ephemeral container "bad" is not started`) {
		t.Errorf("ignored %q", ignored)
	}
	if bridge.RestartHash(w) != bridge.RestartHash(&bridge.Workload{Containers: w.Containers}) {
		t.Error("ephemeral containers change the restart hash")
	}

	p.devices = map[string]*device{"pi-1": {name: "pi-1", hb: &bridge.Heartbeat{Time: time.Now(), Inventory: bridge.Inventory{ProtocolVersion: 7}}}}
	w, ignored, refusal, _ = p.translate(t.Context(), pod)
	if refusal != "" || len(w.EphemeralContainers) != 0 || !strings.Contains(strings.Join(ignored, "; "), "too old") {
		t.Errorf("v7 device: refusal %q, ephemeral %+v, ignored %q", refusal, w.EphemeralContainers, ignored)
	}
}

// An image volume goes to the device with the pod's credentials for its
// image; a device too old for it is refused the pod, with a reason.
func TestImageVolumeGoesToTheDevice(t *testing.T) {
	p := testProvider(t)
	pod := basePod()
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "model", VolumeSource: corev1.VolumeSource{
		Image: &corev1.ImageVolumeSource{Reference: "registry.example/model:1", PullPolicy: corev1.PullAlways}}})
	pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "model", MountPath: "/model"})
	w, _, refusal, pending := p.translate(t.Context(), pod)
	if refusal != "" || pending != nil {
		t.Fatalf("refusal %q, pending %v", refusal, pending)
	}
	var got *bridge.ImageVolume
	for _, v := range w.Volumes {
		if v.Name == "model" {
			got = v.Image
		}
	}
	if got == nil || got.Reference != "registry.example/model:1" || got.PullPolicy != "Always" {
		t.Errorf("image volume %+v", got)
	}
	p.devices = map[string]*device{"pi-1": {name: "pi-1", hb: &bridge.Heartbeat{Time: time.Now(), Inventory: bridge.Inventory{ProtocolVersion: 7}}}}
	if _, _, refusal, _ = p.translate(t.Context(), pod); !strings.Contains(refusal, "too old for image volumes") {
		t.Errorf("refusal for a v7 device: %q", refusal)
	}
}
