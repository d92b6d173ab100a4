package main

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/vk-fleet/vk-fleet/nodeagent/enrollcmd"
)

func runCommand(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

// TestFleetctl: `device-agent fleetctl` (what /usr/bin/fleetctl, a link to
// device-agent, runs) enrolls and points the operator commands to the
// full fleetctl.
func TestFleetctl(t *testing.T) {
	if out, err := runCommand(t, "fleetctl", "version"); err != nil || !strings.HasPrefix(out, "fleetctl ") {
		t.Errorf("fleetctl version: %q, %v", out, err)
	}
	out, err := runCommand(t, "fleetctl", "enroll", "--help")
	if err != nil || !strings.Contains(out, "--install") || !strings.Contains(out, "--zitadel-admin-token-file") {
		t.Errorf("fleetctl enroll --help: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"token", "create", "--ttl", "1h"}, {"devices"}, {"revoke", "pi-1"}, {"ca", "--kubeconfig", "x"}} {
		_, err := runCommand(t, append([]string{"fleetctl"}, args...)...)
		if !errors.Is(err, errOperatorCommand) || !strings.Contains(err.Error(), "`fleetctl "+args[0]) {
			t.Errorf("fleetctl %s: %v, want errOperatorCommand naming the command", strings.Join(args, " "), err)
		}
	}
	var names []string
	for _, c := range newFleetctlCommand().Commands() {
		names = append(names, c.Name())
	}
	for _, want := range append([]string{"enroll", "version"}, enrollcmd.OperatorCommands...) {
		if !slices.Contains(names, want) {
			t.Errorf("the device's fleetctl lacks %q (has %v)", want, names)
		}
	}
}
