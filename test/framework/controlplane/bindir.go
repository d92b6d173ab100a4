package controlplane

import (
	"github.com/vk-fleet/vk-fleet/test/framework/bincache"
)

// Versions of the binaries that hack/controlplane-build.sh builds by
// default. They name the cache directory; TestBuildScriptVersions keeps
// them in step with the script.
const (
	KubernetesVersion = "v1.37.2"
	EtcdVersion       = "v3.6.16"
)

// Environment variables read by BinDir.
const (
	// EnvBinDir names a directory holding the binaries; BinDir then
	// neither looks at the cache nor builds.
	EnvBinDir = "VKF_CONTROLPLANE_BIN"
	// EnvNoBuild, set to "1", makes BinDir fail instead of building.
	EnvNoBuild = bincache.EnvNoBuild
)

const buildScript = "hack/controlplane-build.sh"

// binaries are the programs Config.BinDir must contain.
var binaries = bincache.Set{
	Name:        "controlplane",
	EnvDir:      EnvBinDir,
	CacheSubdir: "controlplane-" + KubernetesVersion + "-etcd-" + EtcdVersion + "/bin",
	Script:      buildScript,
	Programs:    []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"},
	Missing:     ErrBinariesMissing,
}

// BinDir returns a directory holding etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and kubectl.
//
// If VKF_CONTROLPLANE_BIN is set, it is that directory. Otherwise it is
// the cache directory of hack/controlplane-build.sh; when binaries are
// missing there, BinDir runs the script (found by walking up from the
// working directory to the module root) under a file lock and returns the
// directory it prints. The build takes 5-10 minutes. With VKF_NO_BUILD=1
// it returns an error wrapping ErrBinariesMissing instead of building.
func BinDir() (string, error) { return binaries.Dir() }

// checkBinaries reports an error wrapping ErrBinariesMissing unless dir
// holds every executable the control plane runs.
func checkBinaries(dir string) error { return binaries.Check(dir) }
