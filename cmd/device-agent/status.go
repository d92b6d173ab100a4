package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// newStatusCommand is `device-agent status`: what the agent on this device
// runs and whether it reaches vk-fleet, read from its state directory, so
// that it answers while the link (or the agent) is down.
func newStatusCommand() *cobra.Command {
	var stateDir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the agent's connection and the pods it runs, from its state directory (works offline)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := nodeagent.ReadLocalStatus(stateDir)
			if err != nil {
				return err
			}
			if asJSON {
				b, err := json.MarshalIndent(st, "", "  ")
				if err != nil {
					return fmt.Errorf("encoding status: %w", err)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", b)
				return err
			}
			return printLocalStatus(cmd.OutOrStdout(), st, time.Now())
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", defaultOptions().StateDir, "the agent's state directory")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printLocalStatus(w io.Writer, st *nodeagent.LocalStatus, now time.Time) error {
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.DateTime), now.Sub(t).Round(time.Second))
	}
	agent := "running"
	if !st.AgentRunning {
		agent = "NOT RUNNING (what follows is what it last saw)"
	}
	conn := "connected to vk-fleet"
	if !st.Connected {
		conn = "OFFLINE: cannot reach vk-fleet's NATS (pods keep running)"
	}
	fmt.Fprintf(w, "Device:        %s\nAgent:         %s\nConnection:    %s\nLast contact:  %s\nAs of:         %s\n",
		st.Device, agent, conn, ago(st.LastContact), ago(st.WrittenAt))
	if st.RuntimeError != "" {
		fmt.Fprintf(w, "Runtime:       podman unreachable: %s\n", st.RuntimeError)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tPHASE\tREADY\tRESTARTS\tCONTAINERS")
	for _, p := range st.Pods {
		ready, restarts := 0, int32(0)
		var states []string
		for _, c := range p.Containers {
			if c.Ready {
				ready++
			}
			restarts += c.RestartCount
			s := c.Name + "=" + c.State
			if c.Reason != "" {
				s += "(" + c.Reason + ")"
			}
			states = append(states, s)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%d\t%s\n", p.Namespace, p.Name, p.Phase, ready, len(p.Containers), restarts, strings.Join(states, " "))
	}
	if len(st.Pods) == 0 {
		fmt.Fprintln(tw, "(no pods)")
	}
	return tw.Flush()
}
