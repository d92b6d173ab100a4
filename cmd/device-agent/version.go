package main

import (
	"encoding/json"
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/vk-fleet/vk-fleet/internal/version"
	"github.com/vk-fleet/vk-fleet/nodeagent/agentinstall"
	"github.com/vk-fleet/vk-fleet/nodeagent/podman"
)

// buildInfo describes this binary; `fleetctl enroll --install` reads it to
// refuse an agent that cannot run pods.
func buildInfo() agentinstall.Info {
	return agentinstall.Info{Version: version.Version, Podman: podman.Available, OS: runtime.GOOS, Arch: runtime.GOARCH}
}

func newVersionCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version and whether this build can run pods with podman",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := buildInfo()
			if asJSON {
				b, err := json.Marshal(info)
				if err != nil {
					return fmt.Errorf("encoding version: %w", err)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", b)
				return err
			}
			support := "yes"
			if !info.Podman {
				support = "no: built without the podman build tags, this agent cannot run pods"
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "device-agent %s (%s/%s)\npodman support: %s\n", info.Version, info.OS, info.Arch, support)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (read by fleetctl enroll --install)")
	return cmd
}
