package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// pullSecret returns a kubernetes.io/dockerconfigjson Secret for the
// cluster's private registry with user and password (in the "auth" field,
// as `kubectl create secret docker-registry` writes it).
func pullSecret(ns, name, user, password string, extra map[string]string) *corev1.Secret {
	auths := map[string]map[string]string{
		cluster.Registry.Host: {"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password))},
	}
	for loc, pw := range extra {
		auths[loc] = map[string]string{"username": user, "password": pw}
	}
	data, _ := json.Marshal(map[string]any{"auths": auths})
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: data},
	}
}

// privatePod is a sleeper whose image is only in the private registry.
func privatePod(ns, name, image string, secrets ...string) *corev1.Pod {
	pod := sleeper(ns, name, devA)
	pod.Spec.Containers[0].Image = image
	pod.Spec.Containers[0].ImagePullPolicy = corev1.PullIfNotPresent
	for _, s := range secrets {
		pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
	}
	return pod
}

// waitPullFailure waits until the pod's container waits with ErrImagePull
// or ImagePullBackOff and the registry's refusal in its message, and
// returns the message.
func waitPullFailure(t *testing.T, ns, name string) string {
	t.Helper()
	var msg string
	eventually(t, 2*time.Minute, ns+"/"+name+" ErrImagePull with the registry's message", func(ctx context.Context) (bool, string) {
		p, err := cluster.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil {
				msg = w.Message
				if (w.Reason == nodeagent.ReasonErrImagePull || w.Reason == "ImagePullBackOff") && strings.Contains(w.Message, "unauthorized") {
					return true, ""
				}
				return false, w.Reason + ": " + w.Message
			}
		}
		return false, fmt.Sprintf("phase %s, containers %+v", p.Status.Phase, p.Status.ContainerStatuses)
	})
	return msg
}

func createObj[T any](t *testing.T, create func(context.Context, T, metav1.CreateOptions) (T, error), obj T) T {
	t.Helper()
	out, err := create(t.Context(), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Private images: a pull without the pod's image pull secret fails with
// the registry's message; with it, the pod runs — whether the pod names
// the secret, its ServiceAccount does, or the secret appears only after
// the pod. New credentials restart nothing, and no password appears in
// any log or Pod status.
func TestPrivateImagePullSecrets(t *testing.T) {
	needCluster(t)
	t.Parallel()
	if cluster.Registry == nil {
		t.Fatal("the e2e cluster runs without its private registry")
	}
	reg := cluster.Registry
	// One repository per case: an image one pod has pulled is on the device,
	// and IfNotPresent would run it for the next pod whatever its secrets
	// (as on a kubelet).
	refs, err := reg.PushFromPodman(t.Context(), cluster.Podman.Conf, cluster.Image,
		"private/anon:v1", "private/wrong:v1", "private/secret:v1", "private/sa:v1", "private/late:v1")
	if err != nil {
		t.Fatal(err)
	}
	anonImage, wrongImage, secretImage, saImage, lateImage := refs[0], refs[1], refs[2], refs[3], refs[4]
	const wrongPassword = "not-the-password-0x5eed"

	ns := createNamespace(t, "pullsecret")
	pods := cluster.Client.CoreV1().Pods(ns)
	secrets := cluster.Client.CoreV1().Secrets(ns)

	// No secret, and a wrong password: the registry's refusal.
	createObj(t, secrets.Create, pullSecret(ns, "wrong", reg.Username, wrongPassword, nil))
	createObj(t, pods.Create, privatePod(ns, "anon", anonImage))
	createObj(t, pods.Create, privatePod(ns, "wrong", wrongImage, "wrong"))
	// The right secret.
	createObj(t, secrets.Create, pullSecret(ns, "regcred", reg.Username, reg.Password, nil))
	createObj(t, pods.Create, privatePod(ns, "secret", secretImage, "regcred"))
	// A secret created after the pod: kubelet pulls without it (and fails)
	// until it exists.
	createObj(t, pods.Create, privatePod(ns, "late", lateImage, "late"))

	t.Logf("anon: %s", waitPullFailure(t, ns, "anon"))
	t.Logf("wrong: %s", waitPullFailure(t, ns, "wrong"))
	running := waitRunning(t, ns, "secret")
	t.Logf("late, before its secret: %s", waitPullFailure(t, ns, "late"))
	eventually(t, time.Minute, "event FailedToRetrieveImagePullSecret on ns/late", func(ctx context.Context) (bool, string) {
		evs, err := cluster.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=late,reason=FailedToRetrieveImagePullSecret"})
		if err != nil {
			return false, err.Error()
		}
		return len(evs.Items) > 0, fmt.Sprintf("%d events", len(evs.Items))
	})
	createObj(t, secrets.Create, pullSecret(ns, "late", reg.Username, reg.Password, nil))
	waitRunning(t, ns, "late")

	// The default ServiceAccount's imagePullSecrets: the API server copies
	// them into a pod that names none.
	saNS := createNamespace(t, "pullsecret-sa")
	createObj(t, cluster.Client.CoreV1().Secrets(saNS).Create, pullSecret(saNS, "sa-cred", reg.Username, reg.Password, nil))
	patch := `{"imagePullSecrets":[{"name":"sa-cred"}]}`
	if _, err := cluster.Client.CoreV1().ServiceAccounts(saNS).Patch(t.Context(), "default", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	saPod := createObj(t, cluster.Client.CoreV1().Pods(saNS).Create, privatePod(saNS, "sa", saImage))
	if len(saPod.Spec.ImagePullSecrets) != 1 || saPod.Spec.ImagePullSecrets[0].Name != "sa-cred" {
		t.Errorf("pod of the default ServiceAccount: imagePullSecrets %v, want sa-cred", saPod.Spec.ImagePullSecrets)
	}
	waitRunning(t, saNS, "sa")

	// New credentials reach the device's store (0600) and restart nothing:
	// regcred gains a more specific entry, tried first.
	store := filepath.Join(cluster.AgentStateDir(devA), "workloads", string(running.UID)+".json")
	rotated := pullSecret(ns, "regcred", reg.Username, reg.Password, map[string]string{reg.Host + "/private": wrongPassword})
	if _, err := secrets.Update(t.Context(), rotated, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the device storing the new credentials", func(context.Context) (bool, string) {
		var rec nodeagent.Record
		b, err := os.ReadFile(store)
		if err == nil {
			err = json.Unmarshal(b, &rec)
		}
		if err != nil {
			return false, err.Error()
		}
		got := rec.Workload.Containers[0].PullAuth
		return len(got) == 2 && got[0].Password == wrongPassword && got[1].Password == reg.Password, fmt.Sprint(got)
	})
	if fi, err := os.Stat(store); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("device store file %s: mode %v (err %v), want 0600", store, fi.Mode().Perm(), err)
	}
	after, err := pods.Get(t.Context(), "secret", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b, a := running.Status.ContainerStatuses[0], after.Status.ContainerStatuses[0]; a.ContainerID != b.ContainerID || a.RestartCount != 0 {
		t.Errorf("new credentials restarted the container: %s (restarts %d) → %s (restarts %d)", b.ContainerID, b.RestartCount, a.ContainerID, a.RestartCount)
	}

	// No password anywhere: not in the logs of vk-fleet or the agent, not in
	// any Pod's status.
	for _, log := range []string{cluster.Provider.Log, cluster.Agent(devA).Log} {
		b, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{reg.Password, wrongPassword, base64.StdEncoding.EncodeToString([]byte(reg.Username + ":" + reg.Password))} {
			if strings.Contains(string(b), secret) {
				t.Errorf("%s holds a password", log)
			}
		}
	}
	for _, n := range []string{ns, saNS} {
		l, err := cluster.Client.CoreV1().Pods(n).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range l.Items {
			st, _ := json.Marshal(p.Status)
			if strings.Contains(string(st), reg.Password) || strings.Contains(string(st), wrongPassword) {
				t.Errorf("the status of pod %s/%s holds a password: %s", n, p.Name, st)
			}
		}
	}
	if reg.Unauthorized() == 0 {
		t.Error("the registry refused no request")
	}
}
