//go:build remote

package podman

import (
	"context"
	"errors"
	"fmt"

	"github.com/containers/podman/v5/pkg/bindings/system"
	spec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
)

var _ nodeagent.ImageStore = (*Runtime)(nil)

// CPU shares bounds, as kubelet's (pkg/kubelet/cm).
const (
	minShares    = 2
	maxShares    = 262144
	sharesPerCPU = 1024
)

// milliCPUToShares is kubelet's MilliCPUToShares: no request gets the
// minimum, 2 shares.
func milliCPUToShares(milli int64) uint64 {
	if milli <= 0 {
		return minShares
	}
	return uint64(min(max(milli*sharesPerCPU/1000, minShares), maxShares))
}

// linuxResources maps a container's resources to cgroup settings as
// kubelet's calculateLinuxResources does: CPU shares from the request (or
// the limit when there is no request), a CFS quota from the CPU limit, the
// memory limit.
func linuxResources(r bridge.Resources) *spec.LinuxResources {
	request := r.CPURequestMilli
	if request == 0 {
		request = r.CPULimitMilli
	}
	lr := &spec.LinuxResources{CPU: &spec.LinuxCPU{Shares: ptr(milliCPUToShares(request))}}
	if r.MemoryLimitBytes > 0 {
		lr.Memory = &spec.LinuxMemory{Limit: ptr(r.MemoryLimitBytes)}
	}
	if r.CPULimitMilli > 0 {
		quota := r.CPULimitMilli * cpuPeriod / 1000
		quota = max(quota, 1000) // the kernel's minimum quota is 1 ms
		lr.CPU.Quota, lr.CPU.Period = ptr(quota), ptr(uint64(cpuPeriod))
	}
	return lr
}

// ImageStore returns podman's graph root: the device's imagefs.
func (r *Runtime) ImageStore(ctx context.Context) (string, error) {
	if err := r.connect(); err != nil {
		return "", err
	}
	info, err := system.Info(r.ctx(ctx), nil)
	if err != nil {
		return "", fmt.Errorf("getting podman info: %w", classify(err))
	}
	if info.Store == nil || info.Store.GraphRoot == "" {
		return "", errors.New("getting podman info: no graph root")
	}
	return info.Store.GraphRoot, nil
}
