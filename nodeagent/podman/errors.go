//go:build remote

package podman

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

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
// Podman 4.3 answers an inspect racing a removal with a 500 whose message
// says "no such container".
func isNotFound(err error) bool {
	var coder interface{ Code() int }
	if errors.As(err, &coder) && coder.Code() == http.StatusNotFound {
		return true
	}
	return err != nil && (strings.Contains(err.Error(), "no such container") || strings.Contains(err.Error(), "no such pod"))
}
