// Package childproc starts the processes of test environments so that they
// die with the test binary and never before.
package childproc

import (
	"os/exec"
	"runtime"
)

// Start starts cmd and calls exited with the result of its Wait once it
// ends. cmd's SysProcAttr.Pdeathsig (set by the caller) fires when the OS
// *thread* that started the child ends, and Go ends a thread whenever a
// goroutine locked to it returns — a thread that started a child may later
// be locked by someone else. So the child is started and waited on a
// thread locked for as long as it lives.
func Start(cmd *exec.Cmd, exited func(error)) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the child
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited(cmd.Wait())
	}()
	return <-started
}
