package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/vk-fleet/vk-fleet/registry"
)

// tokenCreateOptions of `fleetctl token create`.
type tokenCreateOptions struct {
	kubeOptions
	TTL         time.Duration
	Uses        int
	Labels      []string
	Description string

	labels map[string]string
}

func (o *tokenCreateOptions) Bind(fs *pflag.FlagSet) {
	o.kubeOptions.Bind(fs)
	fs.DurationVar(&o.TTL, "ttl", time.Hour, "how long the token stays valid")
	fs.IntVar(&o.Uses, "uses", 1, "how many devices the token may enroll")
	fs.StringArrayVar(&o.Labels, "label", nil, "Node label for devices enrolled with this token (key=value; repeatable)")
	fs.StringVar(&o.Description, "description", "", "free text stored with the token")
}

func (o *tokenCreateOptions) Complete() error {
	var err error
	o.labels, err = registry.ParseLabels(strings.Join(o.Labels, ","))
	return err
}

func (o *tokenCreateOptions) Validate() error {
	if o.TTL <= 0 || o.TTL > 30*24*time.Hour {
		return errors.New("--ttl must be between 1s and 720h: enrollment tokens are short-lived")
	}
	if o.Uses < 1 {
		return errors.New("--uses must be at least 1")
	}
	return nil
}

func (o *tokenCreateOptions) Run(ctx context.Context, out io.Writer) error {
	reg, _, err := o.registry()
	if err != nil {
		return err
	}
	t, err := reg.CreateToken(ctx, registry.TokenOptions{TTL: o.TTL, Uses: o.Uses, Labels: o.labels, Description: o.Description})
	if err != nil {
		return err
	}
	fmt.Fprintln(out, t.String())
	return nil
}

func newTokenCreateCommand() *cobra.Command {
	o := &tokenCreateOptions{}
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a short-lived enrollment token (printed on stdout)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context(), cmd.OutOrStdout())
		},
	}
	o.Bind(cmd.Flags())
	return cmd
}

// revokeOptions of `fleetctl revoke`.
type revokeOptions struct{ kubeOptions }

func (o *revokeOptions) Run(ctx context.Context, out io.Writer, names []string) error {
	reg, _, err := o.registry()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := reg.Revoke(ctx, n); err != nil {
			return err
		}
		fmt.Fprintf(out, "device %s revoked\n", n)
	}
	return nil
}

func newRevokeCommand() *cobra.Command {
	o := &revokeOptions{}
	cmd := &cobra.Command{
		Use:   "revoke DEVICE...",
		Short: "Revoke devices: disconnect them now and refuse them from now on",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.Run(cmd.Context(), cmd.OutOrStdout(), args)
		},
	}
	o.Bind(cmd.Flags())
	return cmd
}

// devicesOptions of `fleetctl devices`.
type devicesOptions struct{ kubeOptions }

func (o *devicesOptions) Run(ctx context.Context, out io.Writer) error {
	reg, _, err := o.registry()
	if err != nil {
		return err
	}
	devs, err := reg.List(ctx)
	if err != nil {
		return err
	}
	printDevices(out, devs, time.Now())
	return nil
}

// printDevices prints devices as a table.
func printDevices(out io.Writer, devs []registry.Device, now time.Time) {
	w := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "NAME\tREADY\tLAST SEEN\tAGENT\tIDENTITY\tLABELS")
	for _, d := range devs {
		seen := "never"
		if !d.LastSeen.IsZero() {
			seen = duration.HumanDuration(now.Sub(d.LastSeen)) + " ago"
		}
		agent := d.AgentVersion
		if agent == "" {
			agent = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, d.Ready, seen, agent, d.Identity, userLabels(d.Labels))
	}
	w.Flush()
}

// userLabels leaves out the labels every device has.
func userLabels(l map[string]string) string {
	var parts []string
	for k, v := range l {
		if k == registry.LabelManaged || k == "type" || strings.Contains(k, "kubernetes.io/") {
			continue
		}
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "<none>"
	}
	return strings.Join(parts, ",")
}

func newDevicesCommand() *cobra.Command {
	o := &devicesOptions{}
	cmd := &cobra.Command{
		Use:   "devices",
		Short: "List enrolled devices",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.Run(cmd.Context(), cmd.OutOrStdout())
		},
	}
	o.Bind(cmd.Flags())
	return cmd
}

// caOptions of `fleetctl ca`.
type caOptions struct{ kubeOptions }

func (o *caOptions) Run(ctx context.Context, out io.Writer) error {
	_, cs, err := o.registry()
	if err != nil {
		return err
	}
	cm, err := cs.CoreV1().ConfigMaps(o.TokenNamespace).Get(ctx, registry.CAConfigMap, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading the NATS CA (is vk-fleet running with its embedded NATS?): %w", err)
	}
	_, err = io.WriteString(out, cm.Data["ca.crt"])
	return err
}

func newCACommand() *cobra.Command {
	o := &caOptions{}
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Print the CA certificate of vk-fleet's NATS, for `fleetctl enroll --ca`",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.Run(cmd.Context(), cmd.OutOrStdout())
		},
	}
	o.Bind(cmd.Flags())
	return cmd
}
