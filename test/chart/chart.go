package chart

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"helm.sh/helm/v3/pkg/action"
	helmchart "helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli"
	"helm.sh/helm/v3/pkg/release"
)

// Path is the chart's directory, relative to the module root.
const Path = "manifests/charts/vk-fleet"

// KubeVersion is the Kubernetes version charts are rendered for offline.
const KubeVersion = "v1.37.2"

// Dir returns the chart's directory, found above the working directory.
func Dir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the chart: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, Path), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding the chart: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Load loads the chart from Dir.
func Load() (*helmchart.Chart, error) {
	dir, err := Dir()
	if err != nil {
		return nil, err
	}
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("loading the chart: %w", err)
	}
	return ch, nil
}

// Render renders the chart with vals as `helm template` does, without a
// cluster: the release's Manifest holds every object, Info.Notes the notes.
// Values are checked against values.schema.json.
func Render(vals map[string]any, name, namespace string) (*release.Release, error) {
	ch, err := Load()
	if err != nil {
		return nil, err
	}
	kv, err := chartutil.ParseKubeVersion(KubeVersion)
	if err != nil {
		return nil, fmt.Errorf("parsing kubernetes version: %w", err)
	}
	in := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	in.ClientOnly, in.DryRun, in.Replace = true, true, true
	in.ReleaseName, in.Namespace, in.KubeVersion = name, namespace, kv
	in.DisableHooks = true
	rel, err := in.Run(ch, vals)
	if err != nil {
		return nil, fmt.Errorf("rendering the chart: %w", err)
	}
	return rel, nil
}

// ActionConfig returns a Helm action configuration for releases in
// namespace of the cluster that kubeconfig names, storing releases in
// Secrets as the helm command does.
func ActionConfig(kubeconfig, namespace string) (*action.Configuration, error) {
	settings := cli.New()
	settings.KubeConfig = kubeconfig
	settings.SetNamespace(namespace)
	cfg := new(action.Configuration)
	if err := cfg.Init(settings.RESTClientGetter(), namespace, "secret", log.New(os.Stderr, "helm: ", 0).Printf); err != nil {
		return nil, fmt.Errorf("configuring helm: %w", err)
	}
	return cfg, nil
}
