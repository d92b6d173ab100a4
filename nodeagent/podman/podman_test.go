//go:build remote

package podman

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/containers"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
	"github.com/vk-fleet/vk-fleet/test/framework/podmantest"
)

func TestVersion(t *testing.T) {
	e := setup(t)
	v, err := e.rt.Version(t.Context())
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	if v == "" || !strings.Contains(v, ".") {
		t.Errorf("Version = %q, want a version like 4.3.1", v)
	}
	t.Logf("podman %s", v)
}

func TestUnavailableUntilTheServiceStarts(t *testing.T) {
	podmantest.Require(t)
	dir, err := os.MkdirTemp("", "vkf-late-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	rt, err := New(t.Context(), "unix://"+dir+"/podman.sock", "dev-late", WithStateDir(t.TempDir()))
	if err != nil {
		t.Fatalf("New before the service is up: %v", err)
	}
	if _, err := rt.ListPods(t.Context()); !errors.Is(err, nodeagent.ErrRuntimeUnavailable) {
		t.Fatalf("ListPods before the service is up: %v, want ErrRuntimeUnavailable", err)
	}
	svc, err := podmantest.StartService(t.Context(), dir)
	if err != nil {
		t.Fatalf("starting podman service: %v", err)
	}
	t.Cleanup(func() {
		svc.Stop()
		podmantest.Reset(context.Background(), svc.Conf)
	})
	if _, err := rt.ListPods(t.Context()); err != nil {
		t.Fatalf("ListPods once the service is up: %v", err)
	}
	if _, err := New(t.Context(), "/run/podman/podman.sock", "dev"); err == nil {
		t.Error("New accepted a path without a scheme")
	}
}

func TestCreateRunningPod(t *testing.T) {
	e := setup(t)
	w := workload("sleeper", sh("main", e.image, "sleep 3600"))
	create(t, e.rt, w, "hash-1")

	cs := waitState(t, e.rt, w.UID, "main", nodeagent.ContainerRunning)
	p := podState(t, e.rt, w.UID)
	if p.Namespace != "default" || p.Name != "sleeper" || p.SpecHash != "hash-1" {
		t.Errorf("pod state %+v: want default/sleeper with spec hash hash-1", *p)
	}
	if len(p.Containers) != 1 {
		t.Errorf("pod lists %d containers, want 1 (no infra): %+v", len(p.Containers), p.Containers)
	}
	if p.PodIP == "" {
		t.Errorf("pod has no IP")
	}
	if err := e.rt.CreatePod(t.Context(), w, "hash-1"); !errors.Is(err, ErrPodExists) {
		t.Errorf("creating the pod again: %v, want ErrPodExists", err)
	}
	if cs.ID == "" || cs.ImageID == "" || !strings.Contains(cs.Image, "vkf-busybox") || cs.StartedAt.IsZero() {
		t.Errorf("container state %+v: want ID, image, image ID and start time", cs)
	}

	// podman sees the labels on the pod and the container.
	ctrs, err := e.rt.listContainers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range ctrs {
		if c.ID != cs.ID {
			continue
		}
		found = true
		want := map[string]string{
			nodeagent.LabelDevice: e.rt.Device(), nodeagent.LabelPodUID: w.UID, nodeagent.LabelNamespace: "default",
			nodeagent.LabelPodName: "sleeper", nodeagent.LabelContainer: "main", nodeagent.LabelSpecHash: "hash-1",
		}
		for k, v := range want {
			if c.Labels[k] != v {
				t.Errorf("container label %s = %q, want %q", k, c.Labels[k], v)
			}
		}
	}
	if !found {
		t.Errorf("container %s not in the device's container list", cs.ID)
	}

	// A runtime of another device on the same podman sees nothing of it,
	// and cannot remove it.
	other := e.newRuntime(t, uniqueName("other"))
	if p := podState(t, other, w.UID); p != nil {
		t.Errorf("other device lists the pod: %+v", *p)
	}
	if err := other.RemovePod(t.Context(), w.UID, 0); err != nil {
		t.Errorf("other device RemovePod: %v", err)
	}
	if err := other.StartContainer(t.Context(), w.UID, "main"); !errors.Is(err, ErrNotFound) {
		t.Errorf("other device StartContainer: %v, want ErrNotFound", err)
	}
	if cs := containerState(t, e.rt, w.UID, "main"); cs == nil || cs.State != nodeagent.ContainerRunning {
		t.Errorf("after the other device's RemovePod the container is %+v, want running", cs)
	}
}

func TestExitCodeAndRestart(t *testing.T) {
	e := setup(t)
	c := sh("fail", e.image, "echo run >> /data/runs; exit 3")
	c.Mounts = []bridge.Mount{{Volume: "data", Path: "/data"}}
	w := workload("failer", c)
	w.Volumes = []bridge.Volume{{Name: "data", EmptyDir: true}}
	create(t, e.rt, w, "h")

	cs := waitState(t, e.rt, w.UID, "fail", nodeagent.ContainerExited)
	if cs.ExitCode != 3 {
		t.Errorf("exit code %d, want 3", cs.ExitCode)
	}
	if cs.FinishedAt.IsZero() || cs.StartedAt.IsZero() || cs.OOMKilled || cs.Error != "" {
		t.Errorf("exited container state %+v: want start and finish times, no OOM kill, no error", cs)
	}

	if err := e.rt.StartContainer(t.Context(), w.UID, "fail"); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	runs := volumeFile(e.rt, w.UID, "data", "runs")
	eventually(t, 60*time.Second, func() string {
		b, _ := os.ReadFile(runs)
		if n := strings.Count(string(b), "run\n"); n != 2 {
			return fmt.Sprintf("container ran %d times, want 2", n)
		}
		return ""
	})
	cs = waitState(t, e.rt, w.UID, "fail", nodeagent.ContainerExited)
	if cs.ExitCode != 3 {
		t.Errorf("exit code after restart %d, want 3", cs.ExitCode)
	}

	if err := e.rt.StartContainer(t.Context(), w.UID, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("StartContainer of a missing container: %v, want ErrNotFound", err)
	}
}

func TestPublishedPort(t *testing.T) {
	e := setup(t)
	port := freePort(t)
	server := sh("web", e.image, "mkdir -p /www && echo hello-vkf > /www/index.html && exec httpd -f -p 8080 -h /www")
	server.Ports = []bridge.Port{{Name: "http", ContainerPort: 8080, HostPort: port, HostIP: "127.0.0.1", Protocol: "TCP"}}
	// A second container reaches the first on localhost: they share the
	// pod's network namespace.
	client := sh("client", e.image, "until wget -q -O /shared/got.tmp http://127.0.0.1:8080/; do sleep 0.2; done; mv /shared/got.tmp /shared/got; exec sleep 3600")
	client.Mounts = []bridge.Mount{{Volume: "shared", Path: "/shared"}}
	w := workload("web", server, client)
	w.Volumes = []bridge.Volume{{Name: "shared", EmptyDir: true}}
	create(t, e.rt, w, "h")

	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	httpClient := &http.Client{Timeout: 2 * time.Second}
	eventually(t, 60*time.Second, func() string {
		resp, err := httpClient.Get(url)
		if err != nil {
			return fmt.Sprintf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(body) != "hello-vkf\n" {
			return fmt.Sprintf("GET %s: %s %q", url, resp.Status, body)
		}
		return ""
	})
	if got := waitFile(t, volumeFile(e.rt, w.UID, "shared", "got")); got != "hello-vkf\n" {
		t.Errorf("second container fetched %q from localhost:8080", got)
	}
}

func TestEnvArgsAndVolumes(t *testing.T) {
	e := setup(t)
	// Command and args as Kubernetes passes them: args follow the command.
	writer := bridge.Container{
		Name:       "writer",
		Image:      e.image,
		Command:    []string{"sh", "-c"},
		Args:       []string{`echo "$GREETING $1 $(pwd) $(hostname)" > /shared/out.tmp; mv /shared/out.tmp /shared/out; cat /config/app.conf > /shared/config.tmp; mv /shared/config.tmp /shared/config; touch /config/x 2> /dev/null || echo ro > /shared/config-ro; touch /x 2> /dev/null || echo ro > /shared/rootfs-ro; exec sleep 3600`, "sh", "from-args"},
		WorkingDir: "/tmp",
		Env:        []bridge.EnvVar{{Name: "GREETING", Value: "hello"}},
		Security:   &bridge.Security{ReadOnlyRootFilesystem: true},
		Mounts: []bridge.Mount{
			{Volume: "shared", Path: "/shared"},
			{Volume: "config", Path: "/config"},
		},
	}
	// Args alone: the image has no entrypoint, so the args are the command.
	// It runs as nobody and can still write the emptyDir.
	nobody := int64(65534)
	reader := bridge.Container{
		Name:     "reader",
		Image:    e.image,
		Args:     []string{"sh", "-c", "until [ -s /shared/out ]; do sleep 0.1; done; { cat /shared/out; id -u; } > /shared/reader.tmp; mv /shared/reader.tmp /shared/reader; exec sleep 3600"},
		Mounts:   []bridge.Mount{{Volume: "shared", Path: "/shared"}},
		Security: &bridge.Security{RunAsUser: &nobody, CapDrop: []string{"ALL"}},
		Resources: bridge.Resources{
			MemoryLimitBytes: 64 << 20,
			CPULimitMilli:    500,
		},
	}
	w := workload("volumes", writer, reader)
	w.Volumes = []bridge.Volume{
		{Name: "shared", EmptyDir: true},
		{Name: "config", Files: map[string][]byte{"app.conf": []byte("answer=42\n")}},
	}
	create(t, e.rt, w, "h")

	want := "hello from-args /tmp volumes\n"
	if got := waitFile(t, volumeFile(e.rt, w.UID, "shared", "out")); got != want {
		t.Errorf("writer wrote %q, want %q", got, want)
	}
	if got := waitFile(t, volumeFile(e.rt, w.UID, "shared", "config")); got != "answer=42\n" {
		t.Errorf("writer read config %q, want %q", got, "answer=42\n")
	}
	if got := waitFile(t, volumeFile(e.rt, w.UID, "shared", "config-ro")); got != "ro\n" {
		t.Errorf("config volume is not read-only: %q", got)
	}
	if got := waitFile(t, volumeFile(e.rt, w.UID, "shared", "rootfs-ro")); got != "ro\n" {
		t.Errorf("root file system is not read-only: %q", got)
	}
	if got := waitFile(t, volumeFile(e.rt, w.UID, "shared", "reader")); got != want+"65534\n" {
		t.Errorf("reader wrote %q, want %q", got, want+"65534\n")
	}

	// podman applied the limits, the security settings and the grace period.
	cs := waitState(t, e.rt, w.UID, "reader", nodeagent.ContainerRunning)
	data, err := containers.Inspect(e.rt.ctx(t.Context()), cs.ID, nil)
	if err != nil {
		t.Fatalf("inspecting reader: %v", err)
	}
	hc := data.HostConfig
	if hc.Memory != 64<<20 || hc.CpuQuota != 50000 || hc.CpuPeriod != 100000 {
		t.Errorf("reader limits: memory %d, cpu quota %d / period %d; want %d, 50000 / 100000", hc.Memory, hc.CpuQuota, hc.CpuPeriod, 64<<20)
	}
	if !slices.Contains(hc.CapDrop, "CAP_NET_RAW") || len(data.EffectiveCaps) != 0 {
		t.Errorf("reader capabilities: dropped %v, effective %v; want all dropped", hc.CapDrop, data.EffectiveCaps)
	}
	if data.Config.StopTimeout != 1 || data.Config.User != "65534" {
		t.Errorf("reader stop timeout %d, user %q; want 1, 65534", data.Config.StopTimeout, data.Config.User)
	}
}

func TestHostNetwork(t *testing.T) {
	e := setup(t)
	port := freePort(t)
	c := sh("web", e.image, fmt.Sprintf("mkdir -p /www && echo host-net > /www/index.html && exec httpd -f -p 127.0.0.1:%d -h /www", port))
	w := workload("hostnet", c)
	w.HostNetwork = true
	create(t, e.rt, w, "h")

	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	httpClient := &http.Client{Timeout: 2 * time.Second}
	eventually(t, 60*time.Second, func() string {
		resp, err := httpClient.Get(url)
		if err != nil {
			return fmt.Sprintf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if string(body) != "host-net\n" {
			return fmt.Sprintf("GET %s: %s %q", url, resp.Status, body)
		}
		return ""
	})
	if p := podState(t, e.rt, w.UID); p == nil || p.PodIP != "" {
		t.Errorf("host network pod state %+v, want no pod IP", p)
	}
}

func TestImageErrors(t *testing.T) {
	e := setup(t)
	missing := "localhost/vkf-missing:v1" // no registry answers for localhost

	tests := []struct {
		name      string
		container func() bridge.Container
		volumes   []bridge.Volume
		reason    string
	}{
		{"never pull, missing", func() bridge.Container {
			c := sh("c", missing, "true")
			c.ImagePullPolicy = bridge.PullNever
			return c
		}, nil, nodeagent.ReasonErrImageNeverPull},
		{"if not present, pull fails", func() bridge.Container {
			return sh("c", missing, "true")
		}, nil, nodeagent.ReasonErrImagePull},
		{"unknown volume", func() bridge.Container {
			c := sh("c", e.image, "true")
			c.Mounts = []bridge.Mount{{Volume: "nope", Path: "/x"}}
			return c
		}, []bridge.Volume{{Name: "data", EmptyDir: true}}, nodeagent.ReasonCreateContainerError},
		{"command not found", func() bridge.Container {
			return bridge.Container{Name: "c", Image: e.image, Command: []string{"/no/such/binary"}}
		}, []bridge.Volume{{Name: "data", EmptyDir: true}}, nodeagent.ReasonRunContainerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok := sh("ok", e.image, "sleep 3600")
			w := workload("broken", ok, tt.container())
			w.Volumes = tt.volumes
			grace := int64(30) // the cleanup must not wait for it
			w.TerminationGracePeriodSeconds = &grace
			start := time.Now()
			err := e.rt.CreatePod(t.Context(), w, "h")
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("failed CreatePod took %v", d)
			}
			var ce *nodeagent.ContainerError
			if !errors.As(err, &ce) || ce.Reason != tt.reason || ce.Container != "c" {
				t.Fatalf("CreatePod: %v, want a ContainerError %s of container c", err, tt.reason)
			}
			t.Logf("CreatePod: %v", err)
			assertGone(t, e.rt, w.UID)
		})
	}

	// Always: the pull fails, but the local image serves. A short name
	// finds the image built on the device (localhost/...).
	always := sh("always", e.image, "sleep 3600")
	always.ImagePullPolicy = bridge.PullAlways
	short := sh("short", strings.TrimPrefix(e.image, "localhost/"), "sleep 3600")
	w := workload("local-images", always, short)
	create(t, e.rt, w, "h")
	waitState(t, e.rt, w.UID, "always", nodeagent.ContainerRunning)
	waitState(t, e.rt, w.UID, "short", nodeagent.ContainerRunning)
}

// assertGone fails t if anything of pod uid is left in podman or on disk.
func assertGone(t *testing.T, rt *Runtime, uid string) {
	t.Helper()
	if p := podState(t, rt, uid); p != nil {
		t.Errorf("pod %s left behind: %+v", uid, *p)
	}
	ctrs, err := rt.listContainers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ctrs {
		if c.Labels[nodeagent.LabelPodUID] == uid {
			t.Errorf("container %s of pod %s left behind", c.Names, uid)
		}
	}
	if _, err := os.Stat(rt.podVolumesDir(uid)); !os.IsNotExist(err) {
		t.Errorf("volume dir of pod %s left behind: %v", uid, err)
	}
}

func TestEvents(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	events, err := e.rt.Events(ctx)
	if err != nil {
		t.Fatalf("Events: %v", err)
	}

	// A pod of another device on the same podman must not show up.
	other := e.newRuntime(t, uniqueName("other"))
	ow := workload("other", sh("c", e.image, "exit 0"))
	create(t, other, ow, "h")

	// The container exits when the test creates /shared/go.
	c := sh("c", e.image, "until [ -e /shared/go ]; do sleep 0.1; done; exit 0")
	c.Mounts = []bridge.Mount{{Volume: "shared", Path: "/shared"}}
	w := workload("events", c)
	w.Volumes = []bridge.Volume{{Name: "shared", EmptyDir: true}}
	create(t, e.rt, w, "h")
	waitState(t, e.rt, w.UID, "c", nodeagent.ContainerRunning)
	if err := os.WriteFile(volumeFile(e.rt, w.UID, "shared", "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	// Every notice is for this device's pod; one of them finds the
	// container exited.
	timeout := time.After(60 * time.Second)
	for exited := false; !exited; {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("event channel closed")
			}
			if ev.PodUID != w.UID {
				t.Fatalf("event for pod %s, want only %s", ev.PodUID, w.UID)
			}
			cs := containerState(t, e.rt, w.UID, "c")
			exited = cs != nil && cs.State == nodeagent.ContainerExited
		case <-timeout:
			t.Fatal("no event told of the container's exit")
		}
	}

	// The channel closes when ctx ends.
	cancel()
	timeout = time.After(30 * time.Second)
	for {
		select {
		case _, ok := <-events:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("event channel still open after cancel")
		}
	}
}

func TestRemovePod(t *testing.T) {
	e := setup(t)
	hostDir := t.TempDir()
	// a ignores SIGTERM (PID 1 without a handler); b traps it and leaves a note.
	a := sh("a", e.image, "sleep 3600")
	a.Mounts = []bridge.Mount{{Volume: "config", Path: "/config"}}
	b := sh("b", e.image, "trap 'echo term > /host/term; exit 0' TERM; while true; do sleep 0.1; done")
	b.Mounts = []bridge.Mount{{Volume: "host", Path: "/host"}}
	w := workload("removed", a, b)
	grace := int64(30) // podman's own stop timeout; RemovePod's grace wins
	w.TerminationGracePeriodSeconds = &grace
	w.Volumes = []bridge.Volume{
		{Name: "config", Files: map[string][]byte{"f": []byte("x")}},
		{Name: "host", HostPath: hostDir},
	}
	create(t, e.rt, w, "h")
	waitState(t, e.rt, w.UID, "a", nodeagent.ContainerRunning)
	waitState(t, e.rt, w.UID, "b", nodeagent.ContainerRunning)

	start := time.Now()
	if err := e.rt.RemovePod(t.Context(), w.UID, 2*time.Second); err != nil {
		t.Fatalf("RemovePod: %v", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("RemovePod with 2s grace took %v: the container's own 30s timeout applied", d)
	}
	if b, err := os.ReadFile(hostDir + "/term"); err != nil || string(b) != "term\n" {
		t.Errorf("container b got no SIGTERM before removal: %q, %v", b, err)
	}
	assertGone(t, e.rt, w.UID)
	if _, err := os.Stat(hostDir); err != nil {
		t.Errorf("host path volume removed with the pod: %v", err)
	}
	if err := e.rt.RemovePod(t.Context(), w.UID, 2*time.Second); err != nil {
		t.Fatalf("RemovePod of a removed pod: %v", err)
	}
}

func TestEventsEndWithService(t *testing.T) {
	e := setup(t)
	events, err := e.rt.Events(t.Context())
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	if err := e.svc.Stop(); err != nil {
		t.Fatalf("stopping podman service: %v", err)
	}
	timeout := time.After(30 * time.Second)
	for {
		select {
		case _, ok := <-events:
			if !ok {
				if _, err := e.rt.ListPods(t.Context()); !errors.Is(err, nodeagent.ErrRuntimeUnavailable) {
					t.Errorf("ListPods without a service: %v, want ErrRuntimeUnavailable", err)
				}
				return
			}
		case <-timeout:
			t.Fatal("event channel still open after the service stopped")
		}
	}
}
