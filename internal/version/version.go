// Package version holds the vk-fleet version, set at build time with
// -ldflags "-X github.com/vk-fleet/vk-fleet/internal/version.Version=v1.2.3".
package version

// Version of this build.
var Version = "v0.1.0-dev"
