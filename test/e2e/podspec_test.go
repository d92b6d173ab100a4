package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/provider"
)

func devicePod(ns, name string, mutate func(*corev1.PodSpec)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": devB},
			Tolerations:                   []corev1.Toleration{deviceToleration},
			TerminationGracePeriodSeconds: int64p(1),
			Containers: []corev1.Container{{
				Name: "main", Image: cluster.Image, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{"sleep", "3600"},
			}},
		},
	}
	mutate(&p.Spec)
	return p
}

// A pod a device cannot run says why, instead of hanging silently; a pod
// with fields the device ignores runs and says which were ignored; an image
// that does not exist reports the pull error.
func TestPodSpecFieldsAreHonouredOrExplained(t *testing.T) {
	needCluster(t)
	ns := createNamespace(t, "podspec")
	pods := cluster.Client.CoreV1().Pods(ns)

	noHostUsers := false
	refused := devicePod(ns, "needs-userns", func(s *corev1.PodSpec) {
		s.HostUsers = &noHostUsers // user namespaces: not on devices yet
	})
	probed := devicePod(ns, "probed", func(s *corev1.PodSpec) {
		s.Subdomain = "web"
	})
	deadline := int64(3)
	limited := devicePod(ns, "deadline", func(s *corev1.PodSpec) {
		s.ActiveDeadlineSeconds = &deadline // honoured by the device (protocol 8)
	})
	missing := devicePod(ns, "missing-image", func(s *corev1.PodSpec) {
		s.Containers[0].Image = "localhost/does-not-exist:v1"
		s.Containers[0].ImagePullPolicy = corev1.PullNever
	})
	// The device is shared with other tests, which count its pods: a
	// failure here must not leave pods behind for them.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = pods.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
	})
	for _, p := range []*corev1.Pod{refused, probed, limited, missing} {
		if _, err := pods.Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, time.Minute, "the hostUsers: false pod to say it is unsupported, with an Event", func(ctx context.Context) (bool, string) {
		p, err := pods.Get(ctx, "needs-userns", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		events, err := cluster.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=needs-userns,reason=UnsupportedPodSpec"})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodPending && p.Status.Reason == "UnsupportedPodSpec" && len(events.Items) > 0 &&
			strings.Contains(p.Status.Message, "hostUsers"), fmt.Sprintf("%s %q %q, %d events", p.Status.Phase, p.Status.Reason, p.Status.Message, len(events.Items))
	})
	eventually(t, time.Minute, "the pod with a subdomain Running with it listed as ignored", func(ctx context.Context) (bool, string) {
		p, err := pods.Get(ctx, "probed", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ignored := false
		for _, c := range p.Status.Conditions {
			if c.Type == provider.ConditionIgnoredFields && strings.Contains(c.Message, "subdomain") {
				ignored = true
			}
		}
		return p.Status.Phase == corev1.PodRunning && ignored, fmt.Sprintf("%s %v", p.Status.Phase, p.Status.Conditions)
	})
	eventually(t, time.Minute, "the pod past its activeDeadlineSeconds Failed, reason DeadlineExceeded", func(ctx context.Context) (bool, string) {
		p, err := pods.Get(ctx, "deadline", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		stopped := len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Terminated != nil
		return p.Status.Phase == corev1.PodFailed && p.Status.Reason == "DeadlineExceeded" && stopped,
			fmt.Sprintf("%s %q %q", p.Status.Phase, p.Status.Reason, p.Status.Message)
	})
	eventually(t, time.Minute, "the missing image reported", func(ctx context.Context) (bool, string) {
		p, err := pods.Get(ctx, "missing-image", metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Waiting == nil {
			return false, fmt.Sprint(err)
		}
		w := p.Status.ContainerStatuses[0].State.Waiting
		return w.Reason == "ErrImageNeverPull", w.Reason + ": " + w.Message
	})
	// Env from a ConfigMap and a Secret, and a ConfigMap volume, reach the
	// container: it writes what it sees into a hostPath directory.
	out := t.TempDir()
	if _, err := cluster.Client.CoreV1().ConfigMaps(ns).Create(t.Context(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "settings"}, Data: map[string]string{"mode": "edge", "app.conf": "level=3"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Client.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "creds"}, StringData: map[string]string{"password": "hunter2"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	configured := devicePod(ns, "configured", func(s *corev1.PodSpec) {
		c := &s.Containers[0]
		c.Command = []string{"sh", "-c", `echo "$POD_IP $HOST_IP $(head -1 /etc/hosts)" > /out/ips; echo "$MODE $PASSWORD $NODE $(cat /etc/app/app.conf)" > /out/result; sleep 3600`}
		c.Env = []corev1.EnvVar{
			{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}, Key: "mode"}}},
			{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "password"}}},
			{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			// Filled in by the device (protocol 8).
			{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "HOST_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
		}
		c.VolumeMounts = []corev1.VolumeMount{{Name: "out", MountPath: "/out"}, {Name: "app", MountPath: "/etc/app"}}
		hostPathType := corev1.HostPathDirectory
		s.Volumes = []corev1.Volume{
			{Name: "out", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: out, Type: &hostPathType}}},
			{Name: "app", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}}},
		}
	})
	if _, err := pods.Create(t.Context(), configured, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the container to see its env and files", func(context.Context) (bool, string) {
		b, err := os.ReadFile(filepath.Join(out, "result"))
		return err == nil && strings.TrimSpace(string(b)) == "edge hunter2 "+devB+" level=3", fmt.Sprintf("%q %v", b, err)
	})
	// The pod's and the host's IP as its status gives them, and kubelet's
	// /etc/hosts.
	eventually(t, time.Minute, "the container to see the pod's IPs", func(ctx context.Context) (bool, string) {
		b, err := os.ReadFile(filepath.Join(out, "ips"))
		p, perr := pods.Get(ctx, "configured", metav1.GetOptions{})
		if err != nil || perr != nil {
			return false, fmt.Sprint(err, perr)
		}
		want := p.Status.PodIP + " " + p.Status.HostIP + " # Kubernetes-managed hosts file."
		return p.Status.PodIP != "" && p.Status.PodIP != p.Status.HostIP && strings.TrimSpace(string(b)) == want, fmt.Sprintf("%q, want %q", b, want)
	})
	for _, name := range []string{"needs-userns", "probed", "deadline", "missing-image", "configured"} {
		if err := pods.Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, time.Minute, "the pods gone", func(ctx context.Context) (bool, string) {
		l, err := pods.List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 0, fmt.Sprint(err)
	})
}
