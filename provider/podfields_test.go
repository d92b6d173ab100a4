package provider

import (
	"os"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// jsonFields lists the JSON names of t's fields under prefix.
func jsonFields(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		out = append(out, prefix+name)
	}
	return out
}

// Every field of PodSpec, Container, SecurityContext and
// PodSecurityContext is classified: a field Kubernetes adds fails this test
// until someone decides what a device does with it.
func TestEveryPodFieldIsClassified(t *testing.T) {
	known := map[string]bool{}
	for _, f := range PodFields {
		if known[f.Path] {
			t.Errorf("%s is listed twice", f.Path)
		}
		known[f.Path] = true
		switch f.Level {
		case Honoured, Limited, Refused, ControlPlane:
		default:
			t.Errorf("%s: unknown level %q", f.Path, f.Level)
		}
		if (f.Level == Limited || f.Level == Refused) && f.Note == "" {
			t.Errorf("%s is %s without a note saying how", f.Path, f.Level)
		}
	}
	var all []string
	all = append(all, jsonFields(reflect.TypeFor[corev1.PodSpec](), "spec.")...)
	all = append(all, jsonFields(reflect.TypeFor[corev1.Container](), "spec.containers[].")...)
	all = append(all, jsonFields(reflect.TypeFor[corev1.SecurityContext](), "spec.containers[].securityContext.")...)
	all = append(all, jsonFields(reflect.TypeFor[corev1.PodSecurityContext](), "spec.securityContext.")...)
	seen := map[string]bool{}
	for _, path := range all {
		seen[path] = true
		if !known[path] {
			t.Errorf("%s is not classified in provider.PodFields: decide what a device does with it", path)
		}
	}
	for path := range known {
		if !seen[path] {
			t.Errorf("%s is classified but is no field of the Kubernetes API", path)
		}
	}
}

// A pod using a refused field is refused, with the field in the reason.
func TestRefusedPodFieldsAreRefused(t *testing.T) {
	p := testProvider(t)
	rc := "gvisor"
	f := false
	for name, mutate := range map[string]func(*corev1.PodSpec){
		"runtimeClassName": func(s *corev1.PodSpec) { s.RuntimeClassName = &rc },
		"hostUsers":        func(s *corev1.PodSpec) { s.HostUsers = &f },
		"resourceClaims":   func(s *corev1.PodSpec) { s.ResourceClaims = []corev1.PodResourceClaim{{Name: "gpu"}} },
		"os.name":          func(s *corev1.PodSpec) { s.OS = &corev1.PodOS{Name: corev1.Windows} },
	} {
		pod := basePod()
		mutate(&pod.Spec)
		_, _, refusal, _ := p.translate(t.Context(), pod)
		if !strings.Contains(refusal, name) {
			t.Errorf("%s: refusal %q", name, refusal)
		}
	}
}

// docs/pod-support.md is what PodFields says.
func TestPodSupportDoc(t *testing.T) {
	const path = "../docs/pod-support.md"
	want := PodSupportMarkdown()
	if os.Getenv("VKF_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != want {
		t.Fatalf("%s is stale or missing (%v): run VKF_UPDATE_DOCS=1 go test ./provider -run TestPodSupportDoc", path, err)
	}
}
