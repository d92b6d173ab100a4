//go:build remote

package podman

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/images"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/test/framework/podmantest"
	"github.com/vk-fleet/vk-fleet/test/framework/registry"
)

func TestRedact(t *testing.T) {
	base := errors.New("registry said: bad password hunter2 for alice")
	auths := []bridge.RegistryAuth{{Username: "alice", Password: "hunter2"}, {Username: "bob"}}
	err := redact(base, auths)
	if strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "bad password *** for alice") {
		t.Errorf("redacted: %q", err)
	}
	if !errors.Is(err, base) {
		t.Error("the redacted error no longer matches what it wraps")
	}
	if clean := errors.New("unauthorized"); redact(clean, auths) != clean {
		t.Error("an error without a password is not returned as it is")
	}
}

// The device's own credentials (PullCredentialsFunc) come after the pod's,
// as a kubelet falls back to the node's.
func TestPullAuthsOrder(t *testing.T) {
	r := &Runtime{creds: func(context.Context, *bridge.Workload, string) (string, string, error) {
		return "device", "device-pw", nil
	}}
	pod := []bridge.RegistryAuth{{Username: "a", Password: "1"}, {Username: "b", Password: "2"}}
	c := &bridge.Container{Name: "c", Image: "reg.io/x", PullAuth: pod}
	got, err := r.pullAuths(t.Context(), &bridge.Workload{}, c, "reg.io/x:latest")
	if err != nil {
		t.Fatal(err)
	}
	want := []bridge.RegistryAuth{pod[0], pod[1], {Username: "device", Password: "device-pw"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("pullAuths = %v, want %v", got, want)
	}
	if len(c.PullAuth) != 2 {
		t.Errorf("pullAuths changed the workload's list: %v", c.PullAuth)
	}
}

// A pull from a registry with basic auth: anonymous and wrong credentials
// fail with the registry's answer and never quote the password; the right
// ones, even after a wrong one, pull the image.
func TestPullWithCredentials(t *testing.T) {
	podmantest.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	reg, err := registry.Start("puller", "right-pw-4d1f")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)

	// A service of its own: it must read a registries.conf naming reg.
	dir, err := os.MkdirTemp("", "vkf-pull-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if _, err := podmantest.RegistriesConf(dir, reg.Host); err != nil {
		t.Fatal(err)
	}
	svc, err := podmantest.StartService(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		svc.Stop()
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := podmantest.Reset(rctx, svc.Conf); err != nil {
			t.Logf("resetting the test storage: %v", err)
		}
	})
	if err := podmantest.BuildBusyboxImage(ctx, svc.Conf, podmantest.Image); err != nil {
		t.Fatal(err)
	}
	refs, err := reg.PushFromPodman(ctx, svc.Conf, podmantest.Image, "private/busybox:v1")
	if err != nil {
		t.Fatal(err)
	}
	ref := refs[0]
	rt, err := New(ctx, svc.URI, "dev-pull")
	if err != nil {
		t.Fatal(err)
	}
	w := &bridge.Workload{UID: "u", Namespace: "ns", Name: "p"}
	wrong := bridge.RegistryAuth{Username: "puller", Password: "wrong-pw-77aa"}
	right := bridge.RegistryAuth{Username: "puller", Password: "right-pw-4d1f"}

	for _, auths := range [][]bridge.RegistryAuth{nil, {wrong}} {
		err := rt.pull(ctx, w, &bridge.Container{Name: "c", Image: ref, PullAuth: auths}, ref)
		if err == nil || !strings.Contains(err.Error(), "unauthorized") {
			t.Fatalf("pull with %v: err = %v, want the registry's unauthorized", auths, err)
		}
		if strings.Contains(err.Error(), wrong.Password) {
			t.Errorf("the error quotes the password: %v", err)
		}
	}
	if err := rt.pull(ctx, w, &bridge.Container{Name: "c", Image: ref, PullAuth: []bridge.RegistryAuth{wrong, right}}, ref); err != nil {
		t.Fatalf("pull with the right credentials second: %v", err)
	}
	if ok, err := images.Exists(rt.ctx(ctx), ref, nil); err != nil || !ok {
		t.Errorf("image %s after the pull: exists %v, err %v", ref, ok, err)
	}
}
