package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// connectAs connects to NATS with device's own credentials, as a raw client.
func connectAs(t *testing.T, device string) *nats.Conn {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(filepath.Join(cluster.DeviceRoot(device), "etc/vk-fleet/device.nk"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(cluster.NATSURL, opt, nats.RootCAs(cluster.CAFile()), nats.CustomInboxPrefix("_INBOX_"+device))
	if err != nil {
		t.Fatalf("connecting as %s: %v", device, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// sleeper is a pod that runs on node until deleted.
func sleeper(ns, name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			Tolerations:                   []corev1.Toleration{deviceToleration},
			TerminationGracePeriodSeconds: int64p(1),
			Containers:                    []corev1.Container{{Name: "main", Image: cluster.Image, Command: []string{"sleep", "3600"}}},
		},
	}
}

func waitRunning(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually(t, 2*time.Minute, ns+"/"+name+" Running", func(ctx context.Context) (bool, string) {
		p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pod = p
		return p.Status.Phase == corev1.PodRunning, string(p.Status.Phase)
	})
	return pod
}

// A device's reports count for its own pods only: a status that devA
// writes under its own key, naming devB's pod, changes nothing.
func TestAForgedStatusChangesNoOtherDevicesPod(t *testing.T) {
	needCluster(t)
	ns := createNamespace(t, "forgery")
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), sleeper(ns, "victim", devB), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	victim := waitRunning(t, ns, "victim")

	nc := connectAs(t, devA)
	forged, _ := json.Marshal(bridge.PodStatus{UID: string(victim.UID), Namespace: ns, Name: "victim", Phase: bridge.PhaseFailed,
		Message: "forged by " + devA, ObservedAt: time.Now()})
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	// Allowed to write under its own key, so the write itself succeeds.
	if _, err := js.Publish("$KV."+bridge.StatusBucket+"."+bridge.PodKey(devA, string(victim.UID)), forged); err != nil {
		t.Fatalf("writing under its own key: %v", err)
	}
	// Writing under devB's key is refused outright.
	if _, err := js.Publish("$KV."+bridge.StatusBucket+"."+bridge.PodKey(devB, string(victim.UID)), forged, nats.AckWait(2*time.Second)); err == nil {
		t.Error("devA wrote a status under devB's key")
	}
	// The provider applies statuses within milliseconds; watch for a while.
	window := time.After(5 * time.Second)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for watching := true; watching; {
		p, err := cluster.Client.CoreV1().Pods(ns).Get(t.Context(), "victim", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.Phase != corev1.PodRunning || strings.Contains(p.Status.Message, "forged") {
			t.Fatalf("the forged status reached devB's pod: %s %q", p.Status.Phase, p.Status.Message)
		}
		select {
		case <-window:
			watching = false
		case <-tick.C:
		}
	}
	_ = cluster.Client.CoreV1().Pods(ns).Delete(t.Context(), "victim", metav1.DeleteOptions{})
}

// A pod force-deleted and re-created under the same name (what a
// StatefulSet does) leaves no container of the old pod behind.
func TestReusedPodNameRemovesTheOldContainers(t *testing.T) {
	needCluster(t)
	ns := createNamespace(t, "reused-name")
	pods := cluster.Client.CoreV1().Pods(ns)
	if _, err := pods.Create(t.Context(), sleeper(ns, "web-0", devA), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	old := waitRunning(t, ns, "web-0")
	zero := int64(0)
	if err := pods.Delete(t.Context(), "web-0", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Create(t.Context(), sleeper(ns, "web-0", devA), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	fresh := waitRunning(t, ns, "web-0")
	if fresh.UID == old.UID {
		t.Fatal("the pod was not re-created")
	}
	eventually(t, 2*time.Minute, "the old pod's containers removed from "+devA, func(ctx context.Context) (bool, string) {
		p := podmanPod(t, ctx, devA, old.UID)
		return p == nil, fmt.Sprintf("%+v", p)
	})
	if podmanPod(t, t.Context(), devA, fresh.UID) == nil {
		t.Fatal("the new pod's containers are gone too")
	}
	_ = pods.Delete(t.Context(), "web-0", metav1.DeleteOptions{})
}

// A pod whose ConfigMap does not exist yet waits, saying why, and starts
// once the ConfigMap is created — however long that takes.
func TestPodWaitsForItsConfigMap(t *testing.T) {
	needCluster(t)
	ns := createNamespace(t, "configmap-later")
	pod := sleeper(ns, "patient", devA)
	pod.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "later"}}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/cfg"}}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the pod saying it waits for its ConfigMap", func(ctx context.Context) (bool, string) {
		p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, "patient", metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Waiting == nil {
			return false, fmt.Sprint(err)
		}
		w := p.Status.ContainerStatuses[0].State.Waiting
		return p.Status.Phase == corev1.PodPending && w.Reason == "CreateContainerConfigError" && strings.Contains(w.Message, `"later"`),
			w.Reason + ": " + w.Message
	})
	if _, err := cluster.Client.CoreV1().ConfigMaps(ns).Create(t.Context(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "later"}, Data: map[string]string{"k": "v"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitRunning(t, ns, "patient")
	if got := readInContainer(t, *p, "/cfg/k"); got != "v" {
		t.Errorf("/cfg/k = %q, want v", got)
	}
	_ = cluster.Client.CoreV1().Pods(ns).Delete(t.Context(), "patient", metav1.DeleteOptions{})
}

// Workloads carry resolved Secret values; the NATS store keeps them
// encrypted, so a copy of vk-fleet's disk discloses none.
func TestSecretsAreEncryptedAtRest(t *testing.T) {
	needCluster(t)
	ns := createNamespace(t, "at-rest")
	marker := "at-rest-marker-" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
	if _, err := cluster.Client.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "creds"}, StringData: map[string]string{"password": marker},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := sleeper(ns, "holder", devA)
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{
		SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "password"}}}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds"}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "creds", MountPath: "/creds"}}
	if _, err := cluster.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitRunning(t, ns, "holder")
	if got := readInContainer(t, *p, "/creds/password"); got != marker {
		t.Fatalf("the secret did not reach the container: %q", got)
	}
	var files int
	err := filepath.WalkDir(cluster.NATSStoreDir(), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s holds the secret in clear text", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("no store files to look at")
	}
	_ = cluster.Client.CoreV1().Pods(ns).Delete(t.Context(), "holder", metav1.DeleteOptions{})
}
