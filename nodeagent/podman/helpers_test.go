//go:build remote

package podman

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
	"github.com/vk-fleet/vk-fleet/test/framework/podmantest"
)

// env is one test's podman service, test image and runtime.
type env struct {
	svc   *podmantest.Service
	image string
	rt    *Runtime
}

// setup starts a podman service for t and returns a Runtime for a device
// of t's own.
func setup(t *testing.T) *env {
	t.Helper()
	svc, image := podmantest.Setup(t)
	e := &env{svc: svc, image: image}
	e.rt = e.newRuntime(t, uniqueName("dev"))
	return e
}

// newRuntime connects a Runtime for device to the test's service.
func (e *env) newRuntime(t *testing.T, device string) *Runtime {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	rt, err := New(t.Context(), e.svc.URI, device, WithStateDir(t.TempDir()), WithLogger(logger))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return rt
}

// create creates w on rt and removes it when t ends.
func create(t *testing.T, rt *Runtime, w *bridge.Workload, specHash string) {
	t.Helper()
	t.Cleanup(func() {
		if err := rt.RemovePod(context.Background(), w.UID, 0); err != nil {
			t.Errorf("cleanup: RemovePod: %v", err)
		}
	})
	if err := rt.CreatePod(t.Context(), w, specHash); err != nil {
		t.Fatalf("CreatePod: %v", err)
	}
}

// workload returns a workload with a fresh UID and the given containers.
func workload(name string, containers ...bridge.Container) *bridge.Workload {
	grace := int64(1)
	return &bridge.Workload{
		UID:                           newUID(),
		Namespace:                     "default",
		Name:                          name,
		RestartPolicy:                 bridge.RestartNever,
		Containers:                    containers,
		TerminationGracePeriodSeconds: &grace,
	}
}

// newUID returns a random UUID-shaped pod UID.
func newUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// uniqueName returns prefix with a random suffix.
func uniqueName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%s-%x", prefix, b)
}

// eventually polls cond every 100 ms until it returns "" (done) or timeout
// passes; then it fails t with cond's last complaint.
func eventually(t *testing.T, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, msg)
		}
		select {
		case <-tick.C:
		case <-t.Context().Done():
			t.Fatalf("test ended: %s", msg)
		}
	}
}

// podState returns the state of pod uid on rt, or nil.
func podState(t *testing.T, rt *Runtime, uid string) *nodeagent.PodState {
	t.Helper()
	list, err := rt.ListPods(t.Context())
	if err != nil {
		t.Fatalf("ListPods: %v", err)
	}
	for i := range list {
		if list[i].UID == uid {
			return &list[i]
		}
	}
	return nil
}

// containerState returns the state of container name in pod uid, or nil.
func containerState(t *testing.T, rt *Runtime, uid, name string) *nodeagent.ContainerState {
	t.Helper()
	p := podState(t, rt, uid)
	if p == nil {
		return nil
	}
	for i := range p.Containers {
		if p.Containers[i].Name == name {
			return &p.Containers[i]
		}
	}
	return nil
}

// waitState waits until container name of pod uid is in state and returns it.
func waitState(t *testing.T, rt *Runtime, uid, name, state string) nodeagent.ContainerState {
	t.Helper()
	var cs *nodeagent.ContainerState
	eventually(t, 60*time.Second, func() string {
		cs = containerState(t, rt, uid, name)
		if cs == nil {
			return fmt.Sprintf("container %s of pod %s not listed", name, uid)
		}
		if cs.State != state {
			return fmt.Sprintf("container %s is %s (%+v), want %s", name, cs.State, *cs, state)
		}
		return ""
	})
	return *cs
}

// volumeFile returns the path of file in volume vol of pod uid on the host.
func volumeFile(rt *Runtime, uid, vol, file string) string {
	return filepath.Join(rt.podVolumesDir(uid), vol, file)
}

// waitFile waits until path exists with non-empty content and returns it.
// Containers write such files whole (write elsewhere, then rename).
func waitFile(t *testing.T, path string) string {
	t.Helper()
	var content []byte
	eventually(t, 60*time.Second, func() string {
		var err error
		content, err = os.ReadFile(path)
		if err != nil || len(content) == 0 {
			return fmt.Sprintf("reading %s: %v (%d bytes)", path, err, len(content))
		}
		return ""
	})
	return string(content)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

// sh returns a container running script with sh -c.
func sh(name, image, script string) bridge.Container {
	return bridge.Container{Name: name, Image: image, Command: []string{"sh", "-c", script}}
}
