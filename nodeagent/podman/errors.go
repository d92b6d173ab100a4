//go:build remote

package podman

import (
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/containers/podman/v5/pkg/bindings"

	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// Sentinel errors of the Runtime.
var (
	// ErrNotFound reports that a pod or container of this device does not exist.
	ErrNotFound = errors.New("not found")
	// ErrPodExists reports that CreatePod found a pod of the same UID; remove
	// it first.
	ErrPodExists = errors.New("pod already exists")
)

// classify marks errors of an unreachable service with
// nodeagent.ErrRuntimeUnavailable and leaves every other error as it is.
func classify(err error) error {
	if err == nil || errors.Is(err, nodeagent.ErrRuntimeUnavailable) {
		return err
	}
	var connErr bindings.ConnectError
	var opErr *net.OpError
	if errors.As(err, &connErr) || errors.As(err, &opErr) {
		return fmt.Errorf("%w: %w", nodeagent.ErrRuntimeUnavailable, err)
	}
	return err
}

// isNotFound reports whether err is podman's answer for a missing object.
func isNotFound(err error) bool {
	var coder interface{ Code() int }
	return errors.As(err, &coder) && coder.Code() == http.StatusNotFound
}
