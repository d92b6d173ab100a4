//go:build remote

package podman

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// This file reaches the processes of containers directly, through /proc:
// it works only where the podman service runs on this host and in this
// PID namespace, as on a device where the agent runs beside podman.

// errNotLocal reports that a container's process is not visible here.
var errNotLocal = errors.New("the container's process is not visible in this host's /proc: the agent must run on the podman host, in its PID namespace")

// procPath returns /proc/<pid>/<name> after checking that the process
// exists here.
func procPath(pid int, name string) (string, error) {
	dir := fmt.Sprintf("/proc/%d", pid)
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("process %d: %w", pid, errNotLocal)
	}
	return dir + "/" + name, nil
}

// sameNamespace reports whether the namespace files a and b (ns/net,
// ns/mnt, …) are one namespace.
func sameNamespace(a, b string) (bool, error) {
	sa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	sb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(sa, sb), nil
}

// checkNetns checks that process pid is in the network namespace at
// sandbox, the path podman reports for the container (bind-mounted under
// /run/netns), when there is one: a process of another PID namespace that
// has the same PID is not.
func checkNetns(pid int, sandbox string) error {
	nsPath, err := procPath(pid, "ns/net")
	if err != nil {
		return err
	}
	if sandbox == "" || sandbox == nsPath {
		return nil
	}
	if _, err := os.Stat(sandbox); err != nil {
		return fmt.Errorf("network namespace %s: %w", sandbox, errNotLocal)
	}
	same, err := sameNamespace(nsPath, sandbox)
	if err != nil {
		return fmt.Errorf("comparing network namespaces: %w", err)
	}
	if !same {
		return fmt.Errorf("process %d is not in network namespace %s: %w", pid, sandbox, errNotLocal)
	}
	return nil
}

// dialInNetns connects to addr over TCP from inside the network namespace
// of process pid. The connection keeps that namespace when the dial has
// returned.
func dialInNetns(ctx context.Context, pid int, addr string) (net.Conn, error) {
	nsPath, err := procPath(pid, "ns/net")
	if err != nil {
		return nil, err
	}
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// Setns changes the namespace of this thread only; the goroutine
		// keeps to the thread until the thread is back in its own. If it
		// cannot get back, the thread stays locked and ends with the
		// goroutine, taking the foreign namespace along.
		runtime.LockOSThread()
		conn, restored, err := dialFromNetns(ctx, nsPath, addr)
		if restored {
			runtime.UnlockOSThread()
		}
		done <- result{conn, err}
	}()
	res := <-done
	return res.conn, res.err
}

// dialFromNetns enters the network namespace at nsPath on the current,
// locked thread, dials addr and returns to the thread's own namespace.
// restored reports that the thread is back in its own namespace.
func dialFromNetns(ctx context.Context, nsPath, addr string) (conn net.Conn, restored bool, err error) {
	own, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, fmt.Errorf("opening this thread's network namespace: %w", err)
	}
	defer own.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		return nil, true, fmt.Errorf("opening network namespace: %w", err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("entering network namespace: %w", err)
	}
	var d net.Dialer
	conn, err = d.DialContext(ctx, "tcp", addr)
	if rerr := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); rerr != nil {
		// The thread dies with its goroutine; the connection is fine.
		return conn, false, err
	}
	return conn, true, err
}

// killExecProcess kills process pid, the command of an exec session in
// the container whose main process is ctrPid, with SIGKILL. It holds the
// process by a pidfd and checks, holding it, that it lives in the
// container's mount namespace and that stillRuns (podman still lists it
// as the session's process), so that a reused PID is never killed.
func killExecProcess(pid, ctrPid int, stillRuns func() bool) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil // gone already
		}
		return fmt.Errorf("opening process %d: %w", pid, err)
	}
	defer unix.Close(fd)
	procMnt, err := procPath(pid, "ns/mnt")
	if err != nil {
		return err
	}
	ctrMnt, err := procPath(ctrPid, "ns/mnt")
	if err != nil {
		return err
	}
	same, err := sameNamespace(procMnt, ctrMnt)
	if err != nil {
		return fmt.Errorf("comparing mount namespaces: %w", err)
	}
	if !same {
		return fmt.Errorf("process %d is not in the container's mount namespace: %w", pid, errNotLocal)
	}
	if !stillRuns() {
		return nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("killing process %d: %w", pid, err)
	}
	return nil
}
