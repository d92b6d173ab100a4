package main

import (
	"errors"
	"fmt"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vk-fleet/vk-fleet/internal/version"
	"github.com/vk-fleet/vk-fleet/nodeagent/enrollcmd"
)

// errOperatorCommand is returned for an operator command run with the
// device's fleetctl.
var errOperatorCommand = errors.New("is an operator command of the full fleetctl")

// newFleetctlCommand returns the fleetctl that device-agent is on a
// device: `enroll` and `version`, and for each operator command a pointer
// to the full fleetctl.
func newFleetctlCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   fleetctlName,
		Short: "Enroll this vk-fleet device",
		Long: "fleetctl on a vk-fleet device enrolls it: `fleetctl enroll --install` registers the device and starts\n" +
			"its agent. It is device-agent under another name. The operator commands (" + strings.Join(enrollcmd.OperatorCommands, ", ") + ")\n" +
			"talk to the cluster: they are in the full fleetctl, on a workstation.",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.AddGroup(&cobra.Group{ID: "device", Title: "Commands:"},
		&cobra.Group{ID: "operator", Title: "Operator commands (in the full fleetctl, on a workstation):"})
	cmd.SetHelpCommandGroupID("device")
	cmd.SetCompletionCommandGroupID("device")
	enroll := enrollcmd.NewCommand()
	enroll.GroupID = "device"
	cmd.AddCommand(enroll, newFleetctlVersionCommand())
	for _, name := range enrollcmd.OperatorCommands {
		cmd.AddCommand(newOperatorCommand(name))
	}
	return cmd
}

func newFleetctlVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version",
		GroupID: "device",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "fleetctl %s (%s/%s), the device's: device-agent, enroll only\n", version.Version, runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}

// newOperatorCommand answers an operator command, whatever its arguments,
// with where to run it instead.
func newOperatorCommand(name string) *cobra.Command {
	return &cobra.Command{
		Use:                name,
		Short:              "Not on a device: run `fleetctl " + name + "` with the full fleetctl",
		GroupID:            "operator",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			words := []string{cmd.CommandPath()}
			for _, a := range args {
				if strings.HasPrefix(a, "-") {
					break
				}
				words = append(words, a)
			}
			return fmt.Errorf("`%s` %w: it talks to the cluster, so run it on a workstation with the operator's fleetctl "+
				"(fleetctl-linux-<arch> of the vk-fleet release); the fleetctl on this device is device-agent and only enrolls the device",
				strings.Join(words, " "), errOperatorCommand)
		},
	}
}

// newFleetctlSubcommand is `device-agent fleetctl …`: the device's
// fleetctl where no fleetctl link is installed.
func newFleetctlSubcommand() *cobra.Command {
	return &cobra.Command{
		Use:                "fleetctl [command]",
		Short:              "Run the device's fleetctl (enroll), as /usr/bin/fleetctl does",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			f := newFleetctlCommand()
			f.SetArgs(args)
			f.SetOut(cmd.OutOrStdout())
			f.SetErr(cmd.ErrOrStderr())
			return f.ExecuteContext(cmd.Context())
		},
	}
}
