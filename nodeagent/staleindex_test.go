package nodeagent_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent/simruntime"
)

// restartFleet stops f's server and starts it again on the same port and
// store directory, after prepare (which may change the store) has run; it
// creates the buckets if the store lost them.
func restartFleet(t *testing.T, f *fleet, storeDir string, prepare func()) {
	t.Helper()
	url := f.srv.ClientURL()
	f.nc.Close()
	f.srv.Shutdown()
	prepare()
	f.open(t, hostPort(t, url), storeDir)
}

// indexWriters writes a device's index as a provider of this protocol
// does (the device follows its notices) and as one of protocol 6 did (the
// device watches its keys).
var indexWriters = map[string]func(t *testing.T, f *fleet, device string, uids ...string){
	"notices": func(t *testing.T, f *fleet, device string, uids ...string) {
		t.Helper()
		data, _ := bridge.Encode(&bridge.DesiredIndex{Device: device, PodUIDs: append([]string{}, uids...), WrittenAt: time.Now(), ProviderProtocol: bridge.ProtocolVersion})
		if _, err := f.workloads.Put(t.Context(), bridge.IndexKey(device), data); err != nil {
			t.Fatal(err)
		}
	},
	"watch": putIndex,
}

// runningAgain waits until the agent, reconnected, has reported uid
// running again (it re-reads everything and reports every pod), or has
// removed a pod.
func runningAgain(t *testing.T, f *fleet, rt *simruntime.Runtime, device, uid string) {
	t.Helper()
	poll(t, 30*time.Second, "the pod reported again, or removed", func() bool {
		if rt.Removed() > 0 {
			return true
		}
		e, err := f.status.Get(t.Context(), bridge.PodKey(device, uid))
		if err != nil {
			return false
		}
		s, _ := bridge.Decode[bridge.PodStatus](e.Value())
		return running(s)
	})
}

// A provider restarted with a lost NATS store (its first promise: nothing
// upstream restarts a container) comes back to an empty bucket. The index
// the device read before the loss predates a pod published just before it;
// that pod must keep running.
func TestALostStoreRemovesNothing(t *testing.T) {
	for mode, putIndex := range indexWriters {
		t.Run(mode, func(t *testing.T) { testALostStoreRemovesNothing(t, putIndex) })
	}
}

func testALostStoreRemovesNothing(t *testing.T, putIndex func(*testing.T, *fleet, string, ...string)) {
	storeDir := t.TempDir()
	f := startFleet(t, storeDir)
	const dev = "dev-lost"
	putIndex(t, f, dev)
	rt := &simruntime.Runtime{}
	startAgent(t, f.srv.ClientURL(), dev, t.TempDir(), rt)
	putWorkload(t, f, dev, workload("u1", bridge.RestartAlways, "sleep", "3600"))
	// Published, told, and the provider stops before it writes the index.
	waitStatus(t, f, dev, "u1", func(s *bridge.PodStatus) bool {
		_ = f.nc.Publish(bridge.DesiredSubject(dev), []byte(bridge.PodKey(dev, "u1")))
		return running(s)
	})

	restartFleet(t, f, storeDir, func() {
		if err := os.RemoveAll(storeDir); err != nil {
			t.Fatal(err)
		}
	})
	runningAgain(t, f, rt, dev, "u1")
	// The new provider publishes again, and writes the index.
	putWorkload(t, f, dev, workload("u1", bridge.RestartAlways, "sleep", "3600"))
	putIndex(t, f, dev, "u1")
	_ = f.nc.Publish(bridge.DesiredSubject(dev), []byte(bridge.IndexKey(dev)))
	waitStatus(t, f, dev, "u1", running)
	if rt.Removed() != 0 || rt.Created() != 1 {
		t.Fatalf("after a lost store: %d pods removed, %d created; want 0 and 1", rt.Removed(), rt.Created())
	}

	// An index written since, without the pod, removes it.
	if err := f.workloads.Purge(t.Context(), bridge.PodKey(dev, "u1")); err != nil {
		t.Fatal(err)
	}
	putIndex(t, f, dev)
	waitStatus(t, f, dev, "u1", func(s *bridge.PodStatus) bool {
		_ = f.nc.Publish(bridge.DesiredSubject(dev), []byte(bridge.IndexKey(dev)))
		return s == nil
	})
}

// NATS killed right after a workload's write may lose it, and come back
// with the index written before it. That index does not list the pod: it
// is no reason to remove it. An index written later, without it, is.
// The same holds when the agent restarts meanwhile: it keeps when each
// workload was published with the workload.
func TestAnIndexOlderThanAWorkloadRemovesNothing(t *testing.T) {
	for mode, putIndex := range indexWriters {
		for _, agentRestarts := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/agent restarts %t", mode, agentRestarts), func(t *testing.T) {
				testAnIndexOlderThanAWorkloadRemovesNothing(t, putIndex, agentRestarts)
			})
		}
	}
}

func testAnIndexOlderThanAWorkloadRemovesNothing(t *testing.T, putIndex func(*testing.T, *fleet, string, ...string), agentRestarts bool) {
	storeDir := t.TempDir()
	f := startFleet(t, storeDir)
	const dev = "dev-old"
	putIndex(t, f, dev)
	snapshot := filepath.Join(t.TempDir(), "store")
	restartFleet(t, f, storeDir, func() {
		if out, err := exec.Command("cp", "-a", storeDir, snapshot).CombinedOutput(); err != nil {
			t.Fatalf("copying the store: %v: %s", err, out)
		}
	})
	rt := &simruntime.Runtime{}
	state := t.TempDir()
	stop := startAgent(t, f.srv.ClientURL(), dev, state, rt)
	putWorkload(t, f, dev, workload("u1", bridge.RestartAlways, "sleep", "3600"))
	waitStatus(t, f, dev, "u1", func(s *bridge.PodStatus) bool {
		_ = f.nc.Publish(bridge.DesiredSubject(dev), []byte(bridge.PodKey(dev, "u1")))
		return running(s)
	})

	// Back to the store as it was before the workload's write.
	restartFleet(t, f, storeDir, func() {
		if agentRestarts {
			stop()
		}
		if err := os.RemoveAll(storeDir); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(snapshot, storeDir); err != nil {
			t.Fatal(err)
		}
	})
	if agentRestarts {
		startAgent(t, f.srv.ClientURL(), dev, state, rt)
	}
	runningAgain(t, f, rt, dev, "u1")
	if rt.Removed() != 0 {
		t.Fatalf("an index older than the workload removed its pod")
	}
	// The provider publishes again and writes indexes: one without the
	// pod (deleted from Kubernetes meanwhile) removes it.
	putWorkload(t, f, dev, workload("u2", bridge.RestartAlways, "sleep", "3600"))
	putIndex(t, f, dev, "u2")
	waitStatus(t, f, dev, "u2", func(s *bridge.PodStatus) bool {
		_ = f.nc.Publish(bridge.DesiredSubject(dev), []byte(bridge.IndexKey(dev)))
		return running(s)
	})
	waitStatus(t, f, dev, "u1", func(s *bridge.PodStatus) bool {
		_ = f.nc.Publish(bridge.DesiredSubject(dev), []byte(bridge.IndexKey(dev)))
		return s == nil
	})
	if rt.Created() != 2 {
		t.Errorf("created %d pods, want 2", rt.Created())
	}
}
