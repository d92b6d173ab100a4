package main

import (
	"strings"
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
)

func TestPrintLocalStatus(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	st := &nodeagent.LocalStatus{Device: "pi-1", Connected: false, LastContact: now.Add(-5 * time.Minute), WrittenAt: now, AgentRunning: true,
		Pods: []nodeagent.LocalPod{{Namespace: "default", Name: "web", Phase: "Running",
			Containers: []bridge.ContainerStatus{{Name: "app", State: bridge.StateRunning, Ready: true, RestartCount: 2}}}}}
	var b strings.Builder
	if err := printLocalStatus(&b, st, now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pi-1", "OFFLINE", "(5m0s ago)", "default", "web", "Running", "1/1", "app=running"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, b.String())
		}
	}
}
