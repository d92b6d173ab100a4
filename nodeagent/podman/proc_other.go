//go:build remote && !linux

package podman

import (
	"context"
	"errors"
	"net"
)

var errNotLinux = errors.New("reaching a container's processes needs Linux")

func dialInNetns(context.Context, int, string) (net.Conn, error) { return nil, errNotLinux }

func killExecProcess(int, int, func() bool) error { return errNotLinux }

func checkNetns(int, string) error { return errNotLinux }
