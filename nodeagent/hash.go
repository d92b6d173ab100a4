package nodeagent

import (
	"github.com/vk-fleet/vk-fleet/bridge"
)

// specHash identifies what forces the pod of a workload to be recreated:
// see bridge.RestartHash. A change of anything else in a workload is taken
// up without restarting a container.
func specHash(w *bridge.Workload) string { return bridge.RestartHash(w) }
