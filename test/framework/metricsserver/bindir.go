package metricsserver

import (
	"github.com/vk-fleet/vk-fleet/test/framework/bincache"
)

// Version is the metrics-server release hack/metrics-server-build.sh
// builds by default. It names the cache directory;
// TestBuildScriptVersion keeps it in step with the script.
const Version = "v0.8.0"

// Environment variables read by BinDir.
const (
	// EnvBinDir names a directory holding the metrics-server binary;
	// BinDir then neither looks at the cache nor builds.
	EnvBinDir = "VKF_METRICS_SERVER_BIN"
	// EnvNoBuild, set to "1", makes BinDir fail instead of building. It is
	// the same variable the control plane's BinDir obeys.
	EnvNoBuild = bincache.EnvNoBuild
)

const (
	binary      = "metrics-server"
	buildScript = "hack/metrics-server-build.sh"
)

var binaries = bincache.Set{
	Name:        "metrics-server",
	EnvDir:      EnvBinDir,
	CacheSubdir: "metrics-server-" + Version + "/bin",
	Script:      buildScript,
	Programs:    []string{binary},
	Missing:     ErrBinaryMissing,
}

// BinDir returns a directory holding the metrics-server binary.
//
// If VKF_METRICS_SERVER_BIN is set, it is that directory. Otherwise it is
// the cache directory of hack/metrics-server-build.sh
// (<cache>/metrics-server-<Version>/bin, next to the control plane's);
// when the binary is missing there, BinDir runs the script (found by
// walking up from the working directory to the module root) under a file
// lock and returns the directory it prints. The build takes a few
// minutes. With VKF_NO_BUILD=1 it returns an error wrapping
// ErrBinaryMissing instead of building.
func BinDir() (string, error) { return binaries.Dir() }

// checkBinary reports an error wrapping ErrBinaryMissing unless dir holds
// an executable metrics-server.
func checkBinary(dir string) error { return binaries.Check(dir) }
