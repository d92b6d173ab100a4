//go:build !linux

package nodeagent

import "errors"

// statfs is only implemented on Linux.
func statfs(string) (fsStats, error) {
	return fsStats{}, errors.New("statfs is not supported on this system")
}
