package provider

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// dockerConfigSecret returns a kubernetes.io/dockerconfigjson Secret with
// one entry per registry: user "u-<registry>", password "p-<registry>".
func dockerConfigSecret(ns, name string, registries ...string) *corev1.Secret {
	var entries []string
	for _, r := range registries {
		entries = append(entries, fmt.Sprintf("%q:{\"username\":%q,\"password\":%q}", r, "u-"+r, "p-"+r))
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{` + strings.Join(entries, ",") + `}}`)},
	}
}

func auth(registry string) bridge.RegistryAuth {
	return bridge.RegistryAuth{Username: "u-" + registry, Password: "p-" + registry}
}

// The matching rules of kubelet's credentialprovider keyring.
func TestKeyringLookup(t *testing.T) {
	var k keyring
	if err := k.addSecret(dockerConfigSecret("ns", "s",
		"https://index.docker.io/v1/", "quay.io", "quay.io/coreos", "*.example.com",
		"registry.local:5000", "http://127.0.0.1:5001", "ghcr.io/team", "gcr.io/v2/proj")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		image string
		want  []bridge.RegistryAuth
	}{
		// Docker Hub: short names, docker.io and index.docker.io use the
		// credentials of https://index.docker.io/v1/.
		{"busybox", []bridge.RegistryAuth{auth("https://index.docker.io/v1/")}},
		{"busybox:1.36", []bridge.RegistryAuth{auth("https://index.docker.io/v1/")}},
		{"user/app@sha256:" + strings.Repeat("a", 64), []bridge.RegistryAuth{auth("https://index.docker.io/v1/")}},
		{"docker.io/library/busybox", []bridge.RegistryAuth{auth("https://index.docker.io/v1/")}},
		{"index.docker.io/user/app:v1", []bridge.RegistryAuth{auth("https://index.docker.io/v1/")}},
		// The more specific path first, then the host.
		{"quay.io/coreos/etcd:v3", []bridge.RegistryAuth{auth("quay.io/coreos"), auth("quay.io")}},
		{"quay.io/other/app", []bridge.RegistryAuth{auth("quay.io")}},
		// A glob matches one host part.
		{"a.example.com/app", []bridge.RegistryAuth{auth("*.example.com")}},
		{"example.com/app", nil},
		{"a.b.example.com/app", nil},
		// Ports must be equal.
		{"registry.local:5000/app:1", []bridge.RegistryAuth{auth("registry.local:5000")}},
		{"registry.local/app:1", nil},
		{"registry.local:5001/app:1", nil},
		// A scheme in the config is ignored.
		{"127.0.0.1:5001/private/busybox:v1", []bridge.RegistryAuth{auth("http://127.0.0.1:5001")}},
		// A path is a plain prefix of the repository, as with kubelet.
		{"ghcr.io/team/app", []bridge.RegistryAuth{auth("ghcr.io/team")}},
		{"ghcr.io/teamx/app", []bridge.RegistryAuth{auth("ghcr.io/team")}},
		{"ghcr.io/other/app", nil},
		// /v2/ (and /v1/) in a location means the host's root.
		{"gcr.io/proj/app", []bridge.RegistryAuth{auth("gcr.io/v2/proj")}},
		{"gcr.io/other/app", nil},
		// Unknown registries pull anonymously.
		{"registry.k8s.io/pause:3.10", nil},
	} {
		if got := k.lookup(tc.image); !slices.Equal(got, tc.want) {
			t.Errorf("lookup(%q) = %v, want %v", tc.image, got, tc.want)
		}
	}
}

func TestKeyringSecretFormats(t *testing.T) {
	enc := base64.StdEncoding.EncodeToString
	for _, tc := range []struct {
		name   string
		secret *corev1.Secret
		want   []bridge.RegistryAuth
		err    string
	}{{
		name: "dockerconfigjson auth field wins",
		secret: &corev1.Secret{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(
			`{"auths":{"reg.io":{"username":"x","password":"y","auth":"` + enc([]byte("alice:pa:ss")) + `"}}}`)}},
		want: []bridge.RegistryAuth{{Username: "alice", Password: "pa:ss"}},
	}, {
		name: "legacy dockercfg",
		secret: &corev1.Secret{Type: corev1.SecretTypeDockercfg, Data: map[string][]byte{corev1.DockerConfigKey: []byte(
			`{"https://reg.io":{"username":"bob","password":"hunter2","email":"b@reg.io"}}`)}},
		want: []bridge.RegistryAuth{{Username: "bob", Password: "hunter2"}},
	}, {
		name: "other secret types add nothing",
		secret: &corev1.Secret{Type: corev1.SecretTypeOpaque, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(
			`{"auths":{"reg.io":{"username":"x","password":"y"}}}`)}},
	}, {
		name: "bad auth",
		secret: &corev1.Secret{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(
			`{"auths":{"reg.io":{"auth":"` + enc([]byte("no-colon-s3cret")) + `"}}}`)}},
		err: `registry "reg.io": auth is not username:password`,
	}, {
		name: "bad json",
		secret: &corev1.Secret{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(
			`{"auths":{"reg.io":{"password":s3cret}}}`)}},
		err: ".dockerconfigjson is not a docker config: invalid JSON at offset",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var k keyring
			err := k.addSecret(tc.secret)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("the error quotes the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := k.lookup("reg.io/app"); !slices.Equal(got, tc.want) {
				t.Errorf("lookup = %v, want %v", got, tc.want)
			}
		})
	}
}

// Credentials of several secrets for one registry are all offered, in the
// order of the pod's imagePullSecrets, as a kubelet tries them.
func TestKeyringSeveralSecrets(t *testing.T) {
	a := dockerConfigSecret("ns", "a", "reg.io")
	b := dockerConfigSecret("ns", "b", "reg.io")
	b.Data[corev1.DockerConfigJsonKey] = []byte(`{"auths":{"reg.io":{"username":"other","password":"p2"}}}`)
	var k keyring
	for _, s := range []*corev1.Secret{a, b, a} {
		if err := k.addSecret(s); err != nil {
			t.Fatal(err)
		}
	}
	want := []bridge.RegistryAuth{auth("reg.io"), {Username: "other", Password: "p2"}}
	if got := k.lookup("reg.io/x"); !slices.Equal(got, want) {
		t.Errorf("lookup = %v, want %v", got, want)
	}
}

func TestTranslatePullSecrets(t *testing.T) {
	pod := basePod()
	pod.Spec.Containers[0].Image = "reg.io/team/app:1"
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "side", Image: "busybox"})
	pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}

	// Without the secret the pod is handed over, pulling anonymously, as
	// with a kubelet; once it exists the workload carries its credentials.
	p := testProvider(t)
	w, ignored, refusal, pending := p.translate(t.Context(), pod)
	if w == nil || refusal != "" || pending != nil || len(ignored) != 0 {
		t.Fatalf("without the secret: w=%v ignored=%v refusal=%q pending=%v", w != nil, ignored, refusal, pending)
	}
	if w.Containers[0].PullAuth != nil {
		t.Errorf("credentials without a secret: %v", w.Containers[0].PullAuth)
	}
	anonymous := bridge.RestartHash(w)

	p = testProvider(t, dockerConfigSecret("ns", "regcred", "reg.io"))
	w, _, _, pending = p.translate(t.Context(), pod)
	if pending != nil {
		t.Fatal(pending)
	}
	if got, want := w.Containers[0].PullAuth, []bridge.RegistryAuth{auth("reg.io")}; !slices.Equal(got, want) {
		t.Errorf("PullAuth = %v, want %v", got, want)
	}
	if w.Containers[1].PullAuth != nil {
		t.Errorf("busybox gets reg.io's credentials: %v", w.Containers[1].PullAuth)
	}
	// New credentials never recreate a container.
	if h := bridge.RestartHash(w); h != anonymous {
		t.Errorf("RestartHash changed with credentials: %s → %s", anonymous, h)
	}

	// A secret that cannot be parsed: the pod waits, and the reason names
	// the secret, never its content.
	bad := dockerConfigSecret("ns", "regcred", "reg.io")
	bad.Data[corev1.DockerConfigJsonKey] = []byte(`{"auths":{"reg.io":{"password":s3cret}}}`)
	p = testProvider(t, bad)
	w, _, _, pending = p.translate(t.Context(), pod)
	if w != nil || pending == nil || !strings.Contains(pending.Error(), `image pull secret "regcred"`) {
		t.Fatalf("bad secret: w=%v pending=%v", w != nil, pending)
	}
	if strings.Contains(pending.Error(), "s3cret") {
		t.Errorf("pending quotes the secret: %v", pending)
	}
}

// A change of a pull secret re-syncs the pods that name it.
func TestPodsUsingPullSecret(t *testing.T) {
	p := testProvider(t)
	pod := basePod()
	pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
	p.pods.byKey[podKey(pod.Namespace, pod.Name)] = &podEntry{pod: pod}
	if got := p.podsMounting("secret", "ns", "regcred"); len(got) != 1 {
		t.Errorf("pods using secret regcred: %d, want 1", len(got))
	}
	if got := p.podsMounting("secret", "other", "regcred"); len(got) != 0 {
		t.Errorf("pods of namespace other using regcred: %d, want 0", len(got))
	}
	if got := p.podsMounting("configmap", "ns", "regcred"); len(got) != 0 {
		t.Errorf("pods using configmap regcred: %d, want 0", len(got))
	}
}
