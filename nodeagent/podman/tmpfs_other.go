//go:build remote && !linux

package podman

import "errors"

func mountTmpfs(string, int64) error {
	return errors.New("memory-backed emptyDir volumes need Linux")
}

func isMountPoint(string) bool { return false }

func unmountUnder(string) error { return nil }
