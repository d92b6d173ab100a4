package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// TestLiveConfigAndVolumes: a ConfigMap edit reaches the mounted file on
// the device within a minute without restarting the container, while env
// from it and a subPath mount of it keep the old value (as with kubelet);
// projected and downwardAPI volumes carry the pod's labels; a Memory
// emptyDir is a tmpfs.
func TestLiveConfigAndVolumes(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "volumes")
	ctx := t.Context()
	cms := cluster.Client.CoreV1().ConfigMaps(ns)
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Data: map[string]string{"greeting": "v1", "mode": "edge"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := sleeper(ns, "live", devA)
	pod.Labels = map[string]string{"app": "live", "tier": "edge"}
	c := &pod.Spec.Containers[0]
	c.Env = []corev1.EnvVar{
		{Name: "GREETING", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "app"}, Key: "greeting"}}},
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
	}
	c.VolumeMounts = []corev1.VolumeMount{
		{Name: "conf", MountPath: "/conf"},
		{Name: "conf", MountPath: "/etc/greeting", SubPath: "greeting"},
		{Name: "scratch", MountPath: "/per-pod", SubPathExpr: "$(POD_NAME)"},
		{Name: "info", MountPath: "/info"},
		{Name: "all", MountPath: "/all"},
		{Name: "cache", MountPath: "/cache"},
	}
	mode := int32(0o400)
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "app"}}}},
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
			{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}, Mode: &mode},
		}}}},
		{Name: "all", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "app"},
				Items: []corev1.KeyToPath{{Key: "mode", Path: "config/mode"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "app", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}},
			}}},
		}}}},
		{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: resource.NewQuantity(16<<20, resource.BinarySI)}}},
	}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	running := waitRunning(t, ns, "live")
	before := running.Status.ContainerStatuses[0]

	sh := func(script string) string {
		t.Helper()
		out, errOut, code := kubectl(t, ctx, "", "exec", "-n", ns, "live", "--", "sh", "-c", script)
		if code != 0 {
			t.Fatalf("kubectl exec %q: exit %d, stderr %q", script, code, errOut)
		}
		return out
	}
	if got := sh(`cat /conf/greeting; echo; cat /etc/greeting; echo; echo "$GREETING"`); got != "v1\nv1\nv1\n" {
		t.Errorf("before the edit: file, subPath file, env = %q", got)
	}
	if got := sh(`cat /info/labels; echo; cat /info/name; echo; stat -L -c %a /info/name; cat /all/config/mode; echo; cat /all/app`); got != "app=\"live\"\ntier=\"edge\"\nlive\n400\nedge\nlive" {
		t.Errorf("downwardAPI and projected files = %q", got)
	}
	if got := sh(`grep ' /cache ' /proc/mounts`); !strings.HasPrefix(got, "tmpfs /cache tmpfs") || !strings.Contains(got, "size=16384k") {
		t.Errorf("/cache is not a 16 MiB tmpfs: %q", got)
	}
	sh(`echo x > /per-pod/f`)
	if got := sh(`ls /per-pod`); got != "f\n" {
		t.Errorf("/per-pod = %q", got)
	}

	// The edit: files follow within a minute, atomically (..data), the
	// container keeps running as it was, env and the subPath keep v1.
	if _, err := cms.Update(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Data: map[string]string{"greeting": "v2", "mode": "cloud"}}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	edited := time.Now()
	eventually(t, time.Minute, "the edited ConfigMap in /conf/greeting", func(ctx context.Context) (bool, string) {
		out, errOut, _ := kubectl(t, ctx, "", "exec", "-n", ns, "live", "--", "cat", "/conf/greeting", "/all/config/mode")
		return out == "v2cloud", fmt.Sprintf("%q %q", out, errOut)
	})
	t.Logf("the edit reached the device's files in %s", time.Since(edited).Round(time.Millisecond))
	if got := sh(`cat /etc/greeting; echo; echo "$GREETING"; readlink /conf/greeting`); got != "v1\nv1\n..data/greeting\n" {
		t.Errorf("after the edit: subPath file, env, link = %q; want v1, v1 (as kubelet) and the ..data link", got)
	}
	// Labels edited: the downwardAPI files follow too.
	// vk-fleet writes the pod's status meanwhile: retry a conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "live", metav1.GetOptions{})
		if err != nil {
			return err
		}
		p.Labels["tier"] = "core"
		_, err = cluster.Client.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the edited label in /info/labels", func(ctx context.Context) (bool, string) {
		out, errOut, _ := kubectl(t, ctx, "", "exec", "-n", ns, "live", "--", "cat", "/info/labels")
		return out == "app=\"live\"\ntier=\"core\"", fmt.Sprintf("%q %q", out, errOut)
	})

	after, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "live", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cs := after.Status.ContainerStatuses[0]
	if cs.ContainerID != before.ContainerID || cs.RestartCount != 0 || cs.State.Running == nil ||
		!cs.State.Running.StartedAt.Equal(&before.State.Running.StartedAt) {
		t.Errorf("the container restarted: before %s started %v, after %s started %v restarts %d",
			before.ContainerID, before.State.Running.StartedAt, cs.ContainerID, cs.State, cs.RestartCount)
	}
}

// TestVolumeRefusals: what a device cannot give is refused with the reason
// on the Pod, never dropped.
func TestVolumeRefusals(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "volrefuse")
	pod := sleeper(ns, "token", devB)
	pod.Spec.Volumes = []corev1.Volume{{Name: "vault", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "vault", Path: "token"}}}}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "vault", MountPath: "/vault"}}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the refusal on the Pod", func(ctx context.Context) (bool, string) {
		p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "token", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(p.Status.Message, `volume "vault": serviceAccountToken projections are not supported`), p.Status.Message
	})
}

// TestOptionalSourcesDeletedAndCreated: as the conformance specs "optional
// updates should be reflected in volume": an optional ConfigMap or Secret
// deleted while mounted (plain and projected) takes its files away; one
// created later brings them; the container keeps running.
func TestOptionalSourcesDeletedAndCreated(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "optvol")
	ctx := t.Context()
	cms, secrets := cluster.Client.CoreV1().ConfigMaps(ns), cluster.Client.CoreV1().Secrets(ns)
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "delete-cm"},
		Data: map[string]string{"data-1": "value-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "delete-sec"},
		Data: map[string][]byte{"data-1": []byte("value-1")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	opt := true
	pod := sleeper(ns, "optional", devA)
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{
		{Name: "cm", MountPath: "/cm", ReadOnly: true},
		{Name: "sec", MountPath: "/sec", ReadOnly: true},
		{Name: "projected", MountPath: "/projected", ReadOnly: true},
		{Name: "create", MountPath: "/create", ReadOnly: true},
	}
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "delete-cm"}, Optional: &opt}}},
		{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "delete-sec", Optional: &opt}}},
		{Name: "projected", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "delete-cm"}, Optional: &opt,
				Items: []corev1.KeyToPath{{Key: "data-1", Path: "cm-data-1"}}}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "delete-sec"}, Optional: &opt,
				Items: []corev1.KeyToPath{{Key: "data-1", Path: "sec-data-1"}}}},
		}}}},
		{Name: "create", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "create-cm"}, Optional: &opt}}},
	}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := waitRunning(t, ns, "optional").Status.ContainerStatuses[0]
	const script = `ls /cm /sec /projected /create`
	// Polled: a pod can be Running before its Node has the address that
	// kubectl exec goes to.
	eventually(t, time.Minute, "the optional sources' files, the missing one's empty volume", func(ctx context.Context) (bool, string) {
		out, errOut, _ := kubectl(t, ctx, "", "exec", "-n", ns, "optional", "--", "sh", "-c", script)
		return out == "/cm:\ndata-1\n\n/create:\n\n/projected:\ncm-data-1\nsec-data-1\n\n/sec:\ndata-1\n", fmt.Sprintf("%q %q", out, errOut)
	})

	if err := cms.Delete(ctx, "delete-cm", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := secrets.Delete(ctx, "delete-sec", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "create-cm"},
		Data: map[string]string{"data-3": "value-3"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the deleted sources' files gone, the created one's there", func(ctx context.Context) (bool, string) {
		out, errOut, _ := kubectl(t, ctx, "", "exec", "-n", ns, "optional", "--", "sh", "-c", script)
		return out == "/cm:\n\n/create:\ndata-3\n\n/projected:\n\n/sec:\n", fmt.Sprintf("%q %q", out, errOut)
	})

	after, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "optional", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cs := after.Status.ContainerStatuses[0]; cs.ContainerID != before.ContainerID || cs.RestartCount != 0 {
		t.Errorf("the container restarted: %s → %s, restarts %d", before.ContainerID, cs.ContainerID, cs.RestartCount)
	}
}

// A subPathExpr whose expansion is an absolute path fails the container as
// a kubelet fails it: waiting with CreateContainerConfigError, the pod
// Pending (not refused as unsupported).
func TestInvalidSubPathExprFailsTheContainer(t *testing.T) {
	needCluster(t)
	t.Parallel()
	ns := createNamespace(t, "subpathexpr")
	pod := sleeper(ns, "abs", devA)
	c := &pod.Spec.Containers[0]
	c.Env = []corev1.EnvVar{{Name: "SUB", Value: "/tmp"}}
	c.VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/x", SubPathExpr: "$(SUB)"}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "container waiting with CreateContainerConfigError", func(ctx context.Context) (bool, string) {
		p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "abs", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		seen := fmt.Sprintf("phase %s reason %q", p.Status.Phase, p.Status.Reason)
		if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Waiting == nil {
			return false, seen
		}
		w := p.Status.ContainerStatuses[0].State.Waiting
		seen += fmt.Sprintf(", waiting %s: %s", w.Reason, w.Message)
		return p.Status.Phase == corev1.PodPending && w.Reason == "CreateContainerConfigError", seen
	})
}
