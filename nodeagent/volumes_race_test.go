package nodeagent

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// racyVolumes records the volume files it is asked to write; the first
// time, a newer workload arrives while it writes, as the agent's receiver
// stores and marks one.
type racyVolumes struct {
	Runtime
	a       *Agent
	newer   bridge.Workload
	applied []string
}

func (r *racyVolumes) UpdateVolumes(_ context.Context, w *bridge.Workload) error {
	r.applied = append(r.applied, string(w.Volumes[0].Files["k"]))
	if len(r.applied) == 1 {
		if _, err := r.a.store.PutWorkload(r.newer, time.Now(), time.Time{}); err != nil {
			return err
		}
		r.a.mu.Lock()
		r.a.volumesStale[r.newer.UID]++
		r.a.mu.Unlock()
	}
	return nil
}

// A ConfigMap update that reaches the device while a pass writes the
// previous one's files is written too: the pass does not clear its mark.
func TestAVolumeUpdateDuringAPassIsNotLost(t *testing.T) {
	store, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := func(v string) bridge.Workload {
		return bridge.Workload{UID: "u1", Namespace: "ns", Name: "p", Containers: []bridge.Container{{Name: "c", Image: "i"}},
			Volumes: []bridge.Volume{{Name: "cfg", Files: map[string][]byte{"k": []byte(v)}}}}
	}
	v1 := w("value-1")
	if _, err := store.PutWorkload(v1, time.Now(), time.Time{}); err != nil {
		t.Fatal(err)
	}
	a := &Agent{store: store, volumesStale: map[string]int{"u1": 1}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	rt := &racyVolumes{a: a, newer: w("value-2")}
	a.rt = rt

	a.updateVolumes(t.Context(), &v1) // value-2 arrives meanwhile
	a.updateVolumes(t.Context(), &v1) // the next pass, with its (old) copy
	if got := rt.applied[len(rt.applied)-1]; got != "value-2" {
		t.Errorf("volume files written: %q; the update that arrived during a pass was lost", rt.applied)
	}
	a.mu.Lock()
	left := a.volumesStale["u1"]
	a.mu.Unlock()
	if left != 0 {
		t.Errorf("still marked stale (%d) after the newest files were written", left)
	}
}
