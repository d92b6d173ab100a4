package main

import (
	"slices"
	"testing"

	"github.com/vk-fleet/vk-fleet/nodeagent/enrollcmd"
)

// TestOperatorCommands: the fleetctl on a device (device-agent) answers
// every operator command of this fleetctl with a pointer to it, so the two
// lists must agree.
func TestOperatorCommands(t *testing.T) {
	device := []string{"enroll", "version", "help", "completion"}
	var got []string
	for _, c := range newRootCommand().Commands() {
		if !slices.Contains(device, c.Name()) {
			got = append(got, c.Name())
		}
	}
	want := slices.Sorted(slices.Values(enrollcmd.OperatorCommands))
	if slices.Sort(got); !slices.Equal(got, want) {
		t.Fatalf("operator commands %v, enrollcmd.OperatorCommands %v", got, want)
	}
}
