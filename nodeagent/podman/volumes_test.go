//go:build remote

package podman

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
)

func TestWriteAtomicLayoutAndUpdate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	files := func(a, b string) map[string]fileEntry {
		p, err := payload(map[string][]byte{"a": []byte(a), "sub/b": []byte(b)}, map[string]int32{"a": 0o400})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if changed, err := writeAtomic(dir, files("1", "1"), nil); err != nil || !changed {
		t.Fatalf("first write: changed %v, err %v", changed, err)
	}
	for _, name := range []string{"a", "sub"} {
		if target, err := os.Readlink(filepath.Join(dir, name)); err != nil || target != filepath.Join("..data", name) {
			t.Errorf("%s links to %q (%v), want ..data/%s", name, target, err, name)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "a")); err != nil || fi.Mode().Perm() != 0o400 {
		t.Errorf("mode of a: %v %v", fi.Mode(), err)
	}
	if changed, err := writeAtomic(dir, files("1", "1"), nil); err != nil || changed {
		t.Errorf("same content again: changed %v, err %v", changed, err)
	}

	// Readers never see a mix of versions while updates run.
	var stop atomic.Bool
	var mixed atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			// Open both through one resolution of ..data, as a reader that
			// opens "..data/a" and "..data/sub/b" would.
			data, err := os.Readlink(filepath.Join(dir, "..data"))
			if err != nil {
				continue
			}
			a, err1 := os.ReadFile(filepath.Join(dir, data, "a"))
			b, err2 := os.ReadFile(filepath.Join(dir, data, "sub", "b"))
			if err1 == nil && err2 == nil && !bytes.Equal(a, b) {
				mixed.Add(1)
			}
		}
	}()
	for i := range 200 {
		v := strings.Repeat("x", i%7+1)
		if _, err := writeAtomic(dir, files(v, v), nil); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := mixed.Load(); n > 0 {
		t.Errorf("%d reads saw files of two versions", n)
	}
	entries, _ := os.ReadDir(dir)
	var versions int
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") && e.Name() != "..data" {
			versions++
		}
	}
	if versions != 1 {
		t.Errorf("%d version directories left, want 1", versions)
	}

	// A removed key disappears; a directory written by an older agent is
	// replaced by the layout.
	p, _ := payload(map[string][]byte{"c": []byte("c")}, nil)
	if _, err := writeAtomic(dir, p, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "a")); !os.IsNotExist(err) {
		t.Errorf("a still exists: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "c")); string(got) != "c" {
		t.Errorf("c = %q", got)
	}
	if _, err := payload(map[string][]byte{"../x": nil}, nil); err == nil {
		t.Error("a name leaving the volume must be refused")
	}
}

func TestLiveVolumesSubPathAndTmpfs(t *testing.T) {
	e := setup(t)
	c := sh("main", e.image, "exec sleep 3600")
	c.Mounts = []bridge.Mount{
		{Volume: "conf", Path: "/conf"},
		{Volume: "conf", Path: "/etc/app.conf", SubPath: "app.conf"},
		{Volume: "cache", Path: "/cache"},
		{Volume: "scratch", Path: "/logs", SubPath: "logs/main"},
	}
	w := workload("livevol", c)
	w.Volumes = []bridge.Volume{
		{Name: "conf", Files: map[string][]byte{"app.conf": []byte("v1"), "other": []byte("o1")}, FileModes: map[string]int32{"other": 0o600}},
		{Name: "cache", EmptyDir: true, Medium: bridge.MediumMemory, SizeLimitBytes: 8 << 20},
		{Name: "scratch", EmptyDir: true},
	}
	create(t, e.rt, w, "h")
	before := waitState(t, e.rt, w.UID, "main", nodeagent.ContainerRunning)

	run := func(script string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		code, err := e.rt.Exec(t.Context(), w.UID, "main", []string{"sh", "-c", script}, nodeagent.StreamIO{Stdout: &out, Stderr: &errOut})
		if err != nil || code != 0 {
			t.Fatalf("exec %q: code %d, err %v, stderr %q", script, code, err, errOut.String())
		}
		return out.String()
	}
	if got := run("cat /conf/app.conf; echo; cat /etc/app.conf; echo; stat -L -c %a /conf/other"); got != "v1\nv1\n600\n" {
		t.Errorf("before the update: %q", got)
	}
	if got := run("grep ' /cache ' /proc/mounts"); !strings.HasPrefix(got, "tmpfs /cache tmpfs") || !strings.Contains(got, "size=8192k") {
		t.Errorf("/cache is not an 8 MiB tmpfs: %q", got)
	}
	run("echo hi > /logs/x")
	if got, err := os.ReadFile(filepath.Join(e.rt.podVolumesDir(w.UID), "scratch", "logs", "main", "x")); err != nil || string(got) != "hi\n" {
		t.Errorf("subPath of an emptyDir: %q %v", got, err)
	}

	w.Volumes[0].Files = map[string][]byte{"app.conf": []byte("v2")}
	if err := e.rt.UpdateVolumes(t.Context(), w); err != nil {
		t.Fatalf("UpdateVolumes: %v", err)
	}
	if got := run("cat /conf/app.conf; echo; cat /etc/app.conf; echo; ls /conf"); got != "v2\nv1\napp.conf\n" {
		t.Errorf("after the update (the subPath keeps v1, as kubelet's): %q", got)
	}
	// Its source deleted (an optional ConfigMap), the volume is emptied in
	// place; the subPath copy stays.
	w.Volumes[0].Files = map[string][]byte{}
	if err := e.rt.UpdateVolumes(t.Context(), roundTrip(t, w)); err != nil {
		t.Fatalf("UpdateVolumes: %v", err)
	}
	if got := run("ls /conf; cat /etc/app.conf"); got != "v1" {
		t.Errorf("after the source went away (only the subPath copy stays): %q", got)
	}
	after := waitState(t, e.rt, w.UID, "main", nodeagent.ContainerRunning)
	if after.ID != before.ID || !after.StartedAt.Equal(before.StartedAt) {
		t.Errorf("the container restarted: %+v → %+v", before, after)
	}

	// A subPath leading out of the volume through a symlink is refused.
	scratch := filepath.Join(e.rt.podVolumesDir(w.UID), "scratch")
	if err := os.Symlink("/etc", filepath.Join(scratch, "escape")); err != nil {
		t.Fatal(err)
	}
	src := volumeSource{path: scratch}
	if _, err := src.mountSource("main", 0, "escape"); err == nil || !strings.Contains(err.Error(), "outside the volume") {
		t.Errorf("escaping subPath: %v", err)
	}

	// Removing the pod unmounts the tmpfs.
	if err := e.rt.RemovePod(t.Context(), w.UID, 0); err != nil {
		t.Fatal(err)
	}
	if m, err := mountsUnder(e.rt.podVolumesDir(w.UID)); err != nil || len(m) != 0 {
		t.Errorf("mounts left: %v %v", m, err)
	}
}

// A Files volume whose source has no files any more (an optional ConfigMap
// or Secret deleted, every key removed) is emptied in place, as kubelet's
// atomic writer empties it. On the wire its Files map is absent: an empty
// map and none encode alike.
func TestUpdateVolumesEmptiesAFilesVolume(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	rt, err := New(t.Context(), "unix:///nonexistent/podman.sock", "dev", WithStateDir(t.TempDir()), WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	w := workload("emptied")
	w.Volumes = []bridge.Volume{
		{Name: "opt", Files: map[string][]byte{"data-1": []byte("value-1"), "dir/x": []byte("x")}},
		{Name: "later", Files: map[string][]byte{}}, // an optional ConfigMap not created yet
	}
	srcs, err := rt.prepareVolumes(roundTrip(t, w))
	if err != nil {
		t.Fatalf("prepareVolumes: %v", err)
	}
	base := rt.podVolumesDir(w.UID)
	if s := srcs["later"]; !s.files || !s.readOnly {
		t.Errorf("a Files volume with no files is mounted as %+v, want a read-only Files volume", s)
	}
	if names := volumeNames(t, filepath.Join(base, "later")); len(names) != 0 {
		t.Errorf("the empty volume holds %v", names)
	}

	// An agent before Volume.IsFiles made "legacy" a writable directory:
	// what a container wrote there stays while it has no files.
	legacy := filepath.Join(base, "legacy")
	if err := os.MkdirAll(legacy, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(legacy, "written"), []byte("w"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.Volumes = append(w.Volumes, bridge.Volume{Name: "legacy"})

	w.Volumes[0].Files = map[string][]byte{}
	w.Volumes[1].Files = map[string][]byte{"data-3": []byte("value-3")}
	if err := rt.UpdateVolumes(t.Context(), roundTrip(t, w)); err != nil {
		t.Fatalf("UpdateVolumes: %v", err)
	}
	if names := volumeNames(t, filepath.Join(base, "opt")); len(names) != 0 {
		t.Errorf("after its source went away the volume still holds %v", names)
	}
	if got, err := os.ReadFile(filepath.Join(base, "later", "data-3")); err != nil || string(got) != "value-3" {
		t.Errorf("data-3 = %q, %v", got, err)
	}
	if names := volumeNames(t, legacy); len(names) != 1 || names[0] != "written" {
		t.Errorf("the legacy directory holds %v, want [written]", names)
	}
}

// roundTrip returns w as a device receives it: encoded and decoded.
func roundTrip(t *testing.T, w *bridge.Workload) *bridge.Workload {
	t.Helper()
	data, err := bridge.Encode(w)
	if err != nil {
		t.Fatal(err)
	}
	got, err := bridge.Decode[bridge.Workload](data)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// volumeNames lists what a reader of volume dir sees (not the "..data"
// machinery).
func volumeNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "..") {
			out = append(out, e.Name())
		}
	}
	return out
}
