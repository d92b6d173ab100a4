package nodeagent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ErrStateInUse is returned by New when another agent holds the state
// directory: two agents of one device on one machine would run every pod
// twice and fight over its containers.
var ErrStateInUse = errors.New("another device-agent is using this state directory")

// lockStateDir takes an exclusive lock on dir for the life of the process
// (the kernel drops it when the process ends, however it ends).
func lockStateDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "agent.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening state lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrStateInUse, dir)
		}
		return nil, fmt.Errorf("locking state directory: %w", err)
	}
	return f, nil
}
