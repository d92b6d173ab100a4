package nodeagent_test

import (
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
	"github.com/vk-fleet/vk-fleet/nodeagent/simruntime"
)

// `device-agent status` works at the device while its link is down: the
// agent keeps its connection state and pods in its state directory.
func TestLocalStatusWhileNATSIsDown(t *testing.T) {
	f := startFleet(t, t.TempDir())
	stateDir := t.TempDir()
	stop := startAgent(t, f.srv.ClientURL(), "dev-s", stateDir, &simruntime.Runtime{})
	putWorkload(t, f, "dev-s", workload("u1", bridge.RestartAlways, "sleep", "3600"))
	waitStatus(t, f, "dev-s", "u1", running)

	poll := func(what string, ok func(*nodeagent.LocalStatus) bool) *nodeagent.LocalStatus {
		t.Helper()
		deadline := time.After(20 * time.Second)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			st, err := nodeagent.ReadLocalStatus(stateDir)
			if err == nil && ok(st) {
				return st
			}
			select {
			case <-deadline:
				t.Fatalf("local status never showed %s: %+v (%v)", what, st, err)
			case <-tick.C:
			}
		}
	}
	st := poll("the running pod, connected", func(s *nodeagent.LocalStatus) bool {
		return s.Connected && s.AgentRunning && len(s.Pods) == 1 && s.Pods[0].Phase == bridge.PhaseRunning
	})
	if st.Device != "dev-s" || st.LastContact.IsZero() || st.Pods[0].Name != "pod-u1" {
		t.Errorf("local status %+v", st)
	}

	// NATS goes away: the agent says so, and still lists its pod.
	f.srv.Shutdown()
	st = poll("disconnected", func(s *nodeagent.LocalStatus) bool { return !s.Connected })
	if len(st.Pods) != 1 || st.Pods[0].Phase != bridge.PhaseRunning || !st.AgentRunning {
		t.Errorf("offline local status %+v", st)
	}
	// The agent stopped: the file stays, and says no agent runs.
	stop()
	if st, err := nodeagent.ReadLocalStatus(stateDir); err != nil || st.AgentRunning {
		t.Errorf("after the agent stopped: %+v, %v", st, err)
	}
}
