package provider

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func volumePod(vols []corev1.Volume, mounts []corev1.VolumeMount) *corev1.Pod {
	pod := basePod()
	pod.Labels = map[string]string{"app": "web", "tier": "edge"}
	pod.Annotations = map[string]string{"note": `say "hi"`}
	pod.Spec.Volumes = vols
	pod.Spec.Containers[0].VolumeMounts = mounts
	return pod
}

func TestTranslateFilesVolumesModesAndItems(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "conf"},
		Data: map[string]string{"a": "A", "b": "B"}}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "sec"},
		Data: map[string][]byte{"key": []byte("s3cret")}}
	p := testProvider(t, cm, sec)
	pod := volumePod([]corev1.Volume{
		{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}, DefaultMode: ptrTo(int32(0o600)),
			Items: []corev1.KeyToPath{{Key: "a", Path: "dir/a.txt", Mode: ptrTo(int32(0o400))}, {Key: "b", Path: "b"}},
		}}},
		{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec"}}},
		{Name: "gone", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "missing"}, Optional: ptrTo(true)}}},
		{Name: "optkey", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}, Optional: ptrTo(true),
			Items: []corev1.KeyToPath{{Key: "nope", Path: "nope"}, {Key: "a", Path: "a"}}}}},
	}, nil)
	w, ignored, refusal, pending := p.translate(t.Context(), pod)
	if refusal != "" || pending != nil || len(ignored) != 0 {
		t.Fatalf("refusal %q pending %v ignored %v", refusal, pending, ignored)
	}
	v := w.Volumes[0]
	if string(v.Files["dir/a.txt"]) != "A" || string(v.Files["b"]) != "B" || len(v.Files) != 2 {
		t.Errorf("configmap files = %v", v.Files)
	}
	if v.FileModes["dir/a.txt"] != 0o400 || v.FileModes["b"] != 0o600 {
		t.Errorf("configmap modes = %v", v.FileModes)
	}
	if s := w.Volumes[1]; string(s.Files["key"]) != "s3cret" || s.FileModes != nil {
		t.Errorf("secret volume = %+v", s)
	}
	if g := w.Volumes[2]; g.Files == nil || len(g.Files) != 0 {
		t.Errorf("a missing optional configmap must be an empty volume: %+v", g)
	}
	if o := w.Volumes[3]; len(o.Files) != 1 || string(o.Files["a"]) != "A" {
		t.Errorf("a missing key of an optional configmap is skipped: %+v", o.Files)
	}

	// A missing key of a required one waits, as kubelet's mount does.
	pod.Spec.Volumes[0].ConfigMap.Items[0].Key = "nope"
	if _, _, refusal, pending := p.translate(t.Context(), pod); refusal != "" || pending == nil {
		t.Errorf("missing required key: refusal %q pending %v", refusal, pending)
	}
}

func TestTranslateDownwardAPIAndProjected(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "conf"}, Data: map[string]string{"a": "A"}}
	p := testProvider(t, cm)
	items := []corev1.DownwardAPIVolumeFile{
		{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
		{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}},
		{Path: "app", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}},
		{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
		{Path: "ns", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
		{Path: "uid", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}},
		{Path: "mem", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "c", Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}},
		{Path: "cpu", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "c", Resource: "limits.cpu", Divisor: resource.MustParse("1m")}},
		{Path: "cpu-cores", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "c", Resource: "requests.cpu"}},
	}
	pod := volumePod([]corev1.Volume{
		{Name: "dapi", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: items}}},
		{Name: "proj", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptrTo(int32(0o440)),
			Sources: []corev1.VolumeProjection{
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "conf"}}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: items[:1]}},
			}}}},
	}, nil)
	w, ignored, refusal, pending := p.translate(t.Context(), pod)
	if refusal != "" || pending != nil || len(ignored) != 0 {
		t.Fatalf("refusal %q pending %v ignored %v", refusal, pending, ignored)
	}
	want := map[string]string{
		"labels": "app=\"web\"\ntier=\"edge\"", "annotations": `note="say \"hi\""`, "app": "web",
		"name": "web", "ns": "ns", "uid": "uid-1", "mem": "64", "cpu": "500", "cpu-cores": "1",
	}
	for k, v := range want {
		if got := string(w.Volumes[0].Files[k]); got != v {
			t.Errorf("downwardAPI %s = %q, want %q", k, got, v)
		}
	}
	pv := w.Volumes[1]
	if string(pv.Files["a"]) != "A" || string(pv.Files["labels"]) != want["labels"] || pv.FileModes["a"] != 0o440 {
		t.Errorf("projected = %+v", pv)
	}

	// A token the device cannot be given is refused, with the reason; the
	// API server's own token volume is left out.
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "vault-token", VolumeSource: corev1.VolumeSource{
		Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "vault", Path: "token"}}}}}})
	if _, _, refusal, _ := p.translate(t.Context(), pod); !strings.Contains(refusal, `volume "vault-token": serviceAccountToken projections are not supported`) {
		t.Errorf("refusal = %q", refusal)
	}
}

func TestTranslateResourceFieldEnv(t *testing.T) {
	p := testProvider(t)
	pod := basePod()
	pod.Spec.Containers[0].Env = append(pod.Spec.Containers[0].Env,
		corev1.EnvVar{Name: "MEM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory"}}},
		corev1.EnvVar{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}})
	w, _, refusal, _ := p.translate(t.Context(), pod)
	if refusal != "" {
		t.Fatal(refusal)
	}
	env := map[string]string{}
	for _, e := range w.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if env["MEM"] != "67108864" || env["CPU"] != "1" || env["A"] != "1" {
		t.Errorf("env = %v", env)
	}
}

func TestTranslateSubPathAndEmptyDir(t *testing.T) {
	p := testProvider(t)
	pod := volumePod([]corev1.Volume{
		{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: ptrTo(resource.MustParse("16Mi"))}}},
		{Name: "disk", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptrTo(resource.MustParse("1Gi"))}}},
	}, []corev1.VolumeMount{
		{Name: "cache", MountPath: "/cache"},
		{Name: "disk", MountPath: "/logs", SubPathExpr: "logs/$(POD)/$(UNKNOWN)"},
		{Name: "disk", MountPath: "/etc/x", SubPath: "conf/x"},
	})
	pod.Spec.Containers[0].Env = append(pod.Spec.Containers[0].Env, corev1.EnvVar{Name: "POD", Value: "web-1"})
	w, ignored, refusal, _ := p.translate(t.Context(), pod)
	if refusal != "" {
		t.Fatal(refusal)
	}
	if v := w.Volumes[0]; !v.EmptyDir || v.Medium != "Memory" || v.SizeLimitBytes != 16<<20 {
		t.Errorf("memory emptyDir = %+v", v)
	}
	if len(ignored) != 1 || !strings.Contains(ignored[0], `volume "disk": emptyDir sizeLimit 1Gi is not enforced`) {
		t.Errorf("ignored = %q", ignored)
	}
	m := w.Containers[0].Mounts
	if m[1].SubPath != "logs/web-1/$(UNKNOWN)" || m[2].SubPath != "conf/x" || m[0].SubPath != "" {
		t.Errorf("mounts = %+v", m)
	}

	// The pod's memory limit (64Mi) bounds a larger tmpfs.
	pod.Spec.Volumes[0].EmptyDir.SizeLimit = ptrTo(resource.MustParse("1Gi"))
	if w, _, _, _ := p.translate(t.Context(), pod); w.Volumes[0].SizeLimitBytes != 64<<20 {
		t.Errorf("tmpfs size = %d, want the pod's memory limit", w.Volumes[0].SizeLimitBytes)
	}

	for _, bad := range []corev1.VolumeMount{
		{Name: "disk", MountPath: "/x", SubPath: "../etc"},
		{Name: "disk", MountPath: "/x", SubPath: "/etc"},
		{Name: "disk", MountPath: "/x", MountPropagation: ptrTo(corev1.MountPropagationBidirectional)},
		{Name: "disk", MountPath: "/x", RecursiveReadOnly: ptrTo(corev1.RecursiveReadOnlyEnabled)},
	} {
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{bad}
		if _, _, refusal, _ := p.translate(t.Context(), pod); !strings.Contains(refusal, `volume mount "disk"`) {
			t.Errorf("%+v: refusal %q", bad, refusal)
		}
	}
	pod.Spec.Containers[0].VolumeMounts = nil
	pod.Spec.Volumes[1].EmptyDir.Medium = corev1.StorageMediumHugePages
	if _, _, refusal, _ := p.translate(t.Context(), pod); !strings.Contains(refusal, `emptyDir medium "HugePages" is not supported`) {
		t.Errorf("refusal = %q", refusal)
	}
}

// A subPathExpr whose expansion leaves the volume (absolute, or with
// "..") does not refuse the pod: as a kubelet, it is that container's
// CreateContainerConfigError, which the device reports when it checks the
// subPath as it creates the container.
func TestInvalidSubPathExprIsLeftToTheContainer(t *testing.T) {
	p := testProvider(t)
	for value, want := range map[string]string{"/tmp": "/tmp", "..": "..", "../..": "../..", "a/../b": "a/../b"} {
		pod := volumePod([]corev1.Volume{{Name: "disk", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			[]corev1.VolumeMount{{Name: "disk", MountPath: "/x", SubPathExpr: "$(POD_NAME)"}})
		pod.Spec.Containers[0].Env = append(pod.Spec.Containers[0].Env, corev1.EnvVar{Name: "POD_NAME", Value: value})
		w, _, refusal, pending := p.translate(t.Context(), pod)
		if refusal != "" || pending != nil {
			t.Errorf("subPathExpr giving %q: refusal %q, pending %v; want the pod handed over", value, refusal, pending)
			continue
		}
		if m := w.Containers[0].Mounts; len(m) != 1 || m[0].SubPath != want {
			t.Errorf("subPathExpr giving %q: mounts %+v, want subPath %q for the device to refuse", value, m, want)
		}
	}
}

func TestExpandEnv(t *testing.T) {
	env := map[string]string{"A": "x", "B": "y"}
	for in, want := range map[string]string{
		"$(A)/$(B)": "x/y", "$$(A)": "$(A)", "$(C)": "$(C)", "a$": "a$", "$(A": "$(A", "$A": "$A",
	} {
		if got := expandEnv(in, env); got != want {
			t.Errorf("expandEnv(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestVolumesUse(t *testing.T) {
	pod := volumePod([]corev1.Volume{{Name: "p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}}}}}}}}, nil)
	if !volumesUse(pod, "secret", "s") || volumesUse(pod, "configmap", "s") {
		t.Error("a projected secret source is a use of the secret")
	}
}
