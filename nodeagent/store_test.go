package nodeagent

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// Workloads carry Secret volume contents and registry credentials: the
// store's files are readable by the agent's user only.
func TestStoreFilesArePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "workloads")
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	w := bridge.Workload{UID: "u1", Namespace: "ns", Name: "p", Containers: []bridge.Container{{
		Name: "c", Image: "reg.io/app:1", PullAuth: []bridge.RegistryAuth{{Username: "u", Password: "pw"}},
	}}}
	if _, err := s.PutWorkload(w, time.Now(), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Update("u1", func(r *Record) { r.Restarts = map[string]int32{"c": 1} }); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "u1.json"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
	r, ok := s.Get("u1")
	if !ok || len(r.Workload.Containers[0].PullAuth) != 1 {
		t.Errorf("stored record lost its credentials: %+v", r)
	}
}
