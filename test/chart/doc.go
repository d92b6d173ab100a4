// Package chart renders, lints and installs the vk-fleet Helm chart
// (manifests/charts/vk-fleet) with the Helm Go SDK: its golden and RBAC
// tests run here, and test/e2e installs it into a real control plane.
//
//	rel, _ := chart.Render(map[string]any{"replicas": 1}, "vk-fleet", "vk-fleet")
//	fmt.Print(rel.Manifest, rel.Info.Notes)
package chart
