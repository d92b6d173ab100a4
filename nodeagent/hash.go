package nodeagent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// specHash identifies what a workload asks the runtime to run. Two workloads
// with the same hash run the same containers; a change of hash means the pod
// is recreated. Fields that do not change what runs (Generation, the grace period)
// are left out.
func specHash(w *bridge.Workload) string {
	c := *w
	c.Generation = 0
	c.TerminationGracePeriodSeconds = nil
	data, _ := json.Marshal(c)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}
