package nodeagent_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/nodeagent"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent/simruntime"
)

func putIndex(t *testing.T, f *fleet, device string, uids ...string) {
	t.Helper()
	data, err := bridge.Encode(&bridge.DesiredIndex{Device: device, PodUIDs: uids, WrittenAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.workloads.Put(t.Context(), bridge.IndexKey(device), data); err != nil {
		t.Fatal(err)
	}
}

func podUIDs(t *testing.T, rt *simruntime.Runtime) map[string]bool {
	t.Helper()
	pods, err := rt.ListPods(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, p := range pods {
		out[p.UID] = true
	}
	return out
}

// recreateBuckets empties the fleet's buckets the way a lost JetStream
// store does: the buckets come back, without a key.
func recreateBuckets(t *testing.T, f *fleet) {
	t.Helper()
	js, _ := jetstream.New(f.nc)
	for _, b := range []string{bridge.WorkloadsBucket, bridge.StatusBucket} {
		if err := js.DeleteKeyValue(t.Context(), b); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if f.workloads, err = js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: bridge.WorkloadsBucket, History: 1}); err != nil {
		t.Fatal(err)
	}
	if f.status, err = js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: bridge.StatusBucket, History: 1}); err != nil {
		t.Fatal(err)
	}
}

// A lost workloads bucket (a new NATS, an emptied store) must not cost a
// container: the agent removes only what the provider's index, written
// from Kubernetes, leaves out.
func TestEmptiedBucketRemovesNothingUntilTheIndexSaysSo(t *testing.T) {
	f := startFleet(t, t.TempDir())
	rt := &simruntime.Runtime{}
	state := t.TempDir()
	stop := startAgent(t, f.srv.ClientURL(), "dev-a", state, rt)
	putWorkload(t, f, "dev-a", workload("keep", bridge.RestartAlways))
	putWorkload(t, f, "dev-a", workload("drop", bridge.RestartAlways))
	waitStatus(t, f, "dev-a", "keep", running)
	waitStatus(t, f, "dev-a", "drop", running)
	stop()

	recreateBuckets(t, f)
	startAgent(t, f.srv.ClientURL(), "dev-a", state, rt)
	// The agent re-publishes what it runs: proof it has read the empty bucket.
	before := time.Now()
	waitStatus(t, f, "dev-a", "keep", func(s *bridge.PodStatus) bool { return running(s) && s.ObservedAt.After(before) })
	waitStatus(t, f, "dev-a", "drop", func(s *bridge.PodStatus) bool { return running(s) && s.ObservedAt.After(before) })
	if got := podUIDs(t, rt); !got["keep"] || !got["drop"] {
		t.Fatalf("pods after the bucket was emptied = %v, want keep and drop still running", got)
	}

	// The provider re-publishes "keep" and then its index: "drop" goes,
	// "keep" is adopted as it runs.
	putWorkload(t, f, "dev-a", workload("keep", bridge.RestartAlways))
	putIndex(t, f, "dev-a", "keep")
	waitStatus(t, f, "dev-a", "drop", func(s *bridge.PodStatus) bool { return s == nil })
	if got := podUIDs(t, rt); !got["keep"] || got["drop"] {
		t.Fatalf("pods after the index = %v, want only keep", got)
	}
	if rt.Created() != 2 {
		t.Fatalf("pods created = %d, want 2: a running pod was recreated", rt.Created())
	}
}

// A device whose local store is lost (a wiped state directory) keeps its
// containers while it cannot reach NATS, and adopts them as they run once
// the workloads arrive.
func TestLostLocalStoreKeepsContainers(t *testing.T) {
	f := startFleet(t, t.TempDir())
	rt := &simruntime.Runtime{}
	state := t.TempDir()
	stop := startAgent(t, f.srv.ClientURL(), "dev-a", state, rt)
	putWorkload(t, f, "dev-a", workload("u1", bridge.RestartAlways))
	putIndex(t, f, "dev-a", "u1")
	waitStatus(t, f, "dev-a", "u1", running)
	stop()
	if err := os.RemoveAll(filepath.Join(state, "workloads")); err != nil {
		t.Fatal(err)
	}

	// No NATS: an agent with an empty store and a runtime full of pods.
	listed := rt.Listed()
	startAgent(t, "nats://127.0.0.1:1", "dev-a", state, rt)
	// Three reconcile passes (each lists the runtime) without a removal.
	poll(t, 10*time.Second, "three reconcile passes", func() bool {
		if !rt.Has("u1") {
			t.Fatal("an agent with a lost store removed a running pod")
		}
		return rt.Listed() >= listed+3
	})
	if !rt.Has("u1") {
		t.Fatal("an agent with a lost store removed a running pod")
	}

	startAgent(t, f.srv.ClientURL(), "dev-a", t.TempDir(), rt) // second agent, fresh store, reaches NATS
	before := time.Now()
	waitStatus(t, f, "dev-a", "u1", func(s *bridge.PodStatus) bool { return running(s) && s.ObservedAt.After(before) })
	if rt.Created() != 1 {
		t.Fatalf("pods created = %d, want 1: the pod was recreated", rt.Created())
	}
}

// Re-translating a pod (a provider restart, an edited ConfigMap behind an
// env var, a new optional field) changes the Workload's bytes but not its
// containers: nothing restarts. A new image does restart.
func TestOnlyAnImageChangeRecreatesAPod(t *testing.T) {
	f := startFleet(t, t.TempDir())
	rt := &simruntime.Runtime{}
	startAgent(t, f.srv.ClientURL(), "dev-a", t.TempDir(), rt)
	w := workload("u1", bridge.RestartAlways, "sleep", "3600")
	putWorkload(t, f, "dev-a", w)
	waitStatus(t, f, "dev-a", "u1", running)

	w2 := *w
	w2.Generation = 7
	w2.Containers = []bridge.Container{w.Containers[0]}
	w2.Containers[0].Env = []bridge.EnvVar{{Name: "FROM_CONFIGMAP", Value: "edited"}}
	w2.Volumes = []bridge.Volume{{Name: "cfg", Files: map[string][]byte{"a": []byte("b")}}}
	putWorkload(t, f, "dev-a", &w2)
	putIndex(t, f, "dev-a", "u1")
	before := time.Now()
	waitStatus(t, f, "dev-a", "u1", func(s *bridge.PodStatus) bool { return running(s) && s.ObservedAt.After(before) })
	if rt.Created() != 1 {
		t.Fatalf("pods created = %d after a re-translation, want 1", rt.Created())
	}

	w3 := w2
	w3.Containers = []bridge.Container{w2.Containers[0]}
	w3.Containers[0].Image = "busybox:v2"
	putWorkload(t, f, "dev-a", &w3)
	poll(t, 10*time.Second, "the pod recreated for the new image", func() bool { return rt.Created() == 2 })
}

// An agent stopped half-way through a removal (its store already forgot
// the workload, the pod still runs, the status key is still there) removes
// the pod and its status key when it comes back: the provider, which
// waits for that key to go before it lets the Pod object go, is not stuck.
func TestRemovalInterruptedByAnAgentRestartCompletes(t *testing.T) {
	f := startFleet(t, t.TempDir())
	rt := &simruntime.Runtime{}
	state := t.TempDir()
	stop := startAgent(t, f.srv.ClientURL(), "dev-a", state, rt)
	putWorkload(t, f, "dev-a", workload("u1", bridge.RestartAlways))
	putIndex(t, f, "dev-a", "u1") // the Pod object still exists while it terminates
	waitStatus(t, f, "dev-a", "u1", running)
	stop()

	if err := f.workloads.Delete(t.Context(), bridge.PodKey("dev-a", "u1")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(state, "workloads", "u1.json")); err != nil {
		t.Fatal(err)
	}
	startAgent(t, f.srv.ClientURL(), "dev-a", state, rt)
	waitStatus(t, f, "dev-a", "u1", func(s *bridge.PodStatus) bool { return s == nil })
	if got := podUIDs(t, rt); got["u1"] {
		t.Fatal("the withdrawn pod still runs")
	}
}

// One pod whose image takes long to pull holds up nothing else: another
// pod given to the device later runs, and the slow one reports
// ContainerCreating meanwhile.
func TestASlowPullDoesNotStallTheDevice(t *testing.T) {
	f := startFleet(t, t.TempDir())
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	rt := &simruntime.Runtime{Pull: func(w *bridge.Workload) <-chan struct{} {
		if w.UID == "slow" {
			return release
		}
		return nil
	}}
	startAgent(t, f.srv.ClientURL(), "dev-a", t.TempDir(), rt)
	putWorkload(t, f, "dev-a", workload("slow", bridge.RestartAlways))
	waitStatus(t, f, "dev-a", "slow", func(s *bridge.PodStatus) bool {
		return s != nil && s.Phase == bridge.PhasePending && len(s.Containers) == 1 && s.Containers[0].Reason == "ContainerCreating"
	})
	putWorkload(t, f, "dev-a", workload("quick", bridge.RestartAlways))
	waitStatus(t, f, "dev-a", "quick", running)
}

// Two agents of one device on one machine (a systemd unit and a manual
// run, say) would run every pod twice: the second one refuses to start.
func TestASecondAgentOnTheSameStateRefusesToStart(t *testing.T) {
	f := startFleet(t, t.TempDir())
	state := t.TempDir()
	stop := startAgent(t, f.srv.ClientURL(), "dev-a", state, &simruntime.Runtime{})
	_, err := nodeagent.New(nodeagent.Config{Device: "dev-a", StateDir: state}, &simruntime.Runtime{}, f.nc)
	if !errors.Is(err, nodeagent.ErrStateInUse) {
		t.Fatalf("second agent on the same state directory: %v, want ErrStateInUse", err)
	}
	stop()
	a, err := nodeagent.New(nodeagent.Config{Device: "dev-a", StateDir: state}, &simruntime.Runtime{}, f.nc)
	if err != nil {
		t.Fatalf("an agent after the first stopped: %v", err)
	}
	_ = a
}
