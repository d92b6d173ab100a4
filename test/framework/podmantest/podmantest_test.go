package podmantest

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestContainersConf(t *testing.T) {
	path, err := ContainersConf(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`runtime = "runc"`, `"nofile=1024:1024"`, `"nproc=1024:1024"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("containers.conf lacks %s:\n%s", want, b)
		}
	}
}

func TestSetup(t *testing.T) {
	svc, image := Setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The service answers the libpod API.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://d/v4.0.0/libpod/_ping", nil)
	resp, err := svc.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("pinging service: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "OK" {
		t.Fatalf("ping answered %s %q", resp.Status, body)
	}

	// Building again, concurrently, finds the image and does nothing.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = BuildBusyboxImage(ctx, svc.Conf, image) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("building image again: %v", err)
		}
	}

	// The image runs busybox applets through PATH.
	out, err := runPodman(ctx, svc.Conf, "run", "--rm", image, "sh", "-c", "echo hello; id -u")
	if err != nil {
		t.Fatalf("running test image: %v", err)
	}
	if got := string(out); got != "hello\n0\n" {
		t.Errorf("container printed %q, want %q", got, "hello\n0\n")
	}
}

func TestStopTwice(t *testing.T) {
	Require(t)
	dir, err := os.MkdirTemp("", "vkf-podman-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	svc, err := StartService(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Stop(); err != nil {
		t.Fatalf("first Stop: %v", err)
	}
	if err := svc.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(svc.Socket); !os.IsNotExist(err) {
		t.Errorf("socket %s still exists after Stop: %v", svc.Socket, err)
	}
	if err := Reset(context.Background(), svc.Conf); err != nil {
		t.Errorf("Reset: %v", err)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	removeSharedStorage()
	os.Exit(code)
}

// Reset leaves no container of its storage running and nothing mounted,
// so that the directory can go.
func TestResetLeavesNothingBehind(t *testing.T) {
	Require(t)
	ctx := t.Context()
	dir, err := os.MkdirTemp("", "vkf-reset-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	svc, err := StartService(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := BuildBusyboxImage(ctx, svc.Conf, Image); err != nil {
		t.Fatal(err)
	}
	if _, err := runPodman(ctx, svc.Conf, "pod", "create", "--name", "leftover"); err != nil {
		t.Fatal(err)
	}
	if _, err := runPodman(ctx, svc.Conf, "run", "-d", "--pod", "leftover", Image, "sleep", "3600"); err != nil {
		t.Fatal(err)
	}
	svc.Stop()
	if err := Reset(ctx, svc.Conf); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	out, _ := exec.Command("runc", "list", "-q").Output()
	ids := strings.Fields(string(out))
	for _, id := range ids {
		state, _ := exec.Command("runc", "state", id).Output()
		if strings.Contains(string(state), dir) {
			t.Errorf("container %s of the reset storage still exists", id)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	if strings.Contains(string(mounts), dir) {
		t.Errorf("the reset storage is still mounted")
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("removing the storage directory: %v", err)
	}
}
