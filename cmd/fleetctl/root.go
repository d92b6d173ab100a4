package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vk-fleet/vk-fleet/internal/version"
	"github.com/vk-fleet/vk-fleet/nodeagent/enrollcmd"
	"github.com/vk-fleet/vk-fleet/registry"
)

func newRootCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:           "fleetctl",
		Short:         "Enroll, list and revoke vk-fleet devices",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	token := &cobra.Command{Use: "token", Short: "Manage enrollment tokens"}
	token.AddCommand(newTokenCreateCommand())
	cmd.AddCommand(token, enrollcmd.NewCommand(), newRevokeCommand(), newDevicesCommand(), newCACommand(), newVersionCommand())
	return cmd
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "fleetctl %s (%s/%s)\n", version.Version, runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}

// kubeOptions are the flags of commands that talk to the cluster.
type kubeOptions struct {
	Kubeconfig     string
	TokenNamespace string
}

func (k *kubeOptions) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&k.Kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&k.TokenNamespace, "token-namespace", registry.DefaultTokenNamespace, "namespace of enrollment tokens")
}

func (k *kubeOptions) client() (kubernetes.Interface, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.Kubeconfig != "" {
		rules.ExplicitPath = filepath.Clean(k.Kubeconfig)
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating kubernetes client: %w", err)
	}
	return cs, nil
}

func (k *kubeOptions) registry() (*registry.Registry, kubernetes.Interface, error) {
	cs, err := k.client()
	if err != nil {
		return nil, nil, err
	}
	return registry.New(cs).WithTokenNamespace(k.TokenNamespace), cs, nil
}
