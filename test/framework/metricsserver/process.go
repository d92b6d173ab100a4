package metricsserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vk-fleet/vk-fleet/test/framework/childproc"
)

const (
	// stopGrace is how long metrics-server gets to exit after SIGTERM
	// before its process group is killed.
	stopGrace = 10 * time.Second
	// killWait bounds the wait for exit after SIGKILL.
	killWait = 5 * time.Second
	// logTailLines is how much of the log an error quotes.
	logTailLines = 20
)

// process is metrics-server running in its own process group, with
// stdout and stderr in a log file.
type process struct {
	cmd     *exec.Cmd
	logPath string

	done    chan struct{} // closed when the process has been reaped
	waitErr error         // valid after done is closed

	stopOnce sync.Once
	stopErr  error
}

// startProcess starts bin with args, writing its output to logPath
// (truncated first).
func startProcess(bin string, args []string, logPath string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening metrics-server log: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor

	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// A group of its own, so stop reaches anything it spawned; killed by
	// the kernel if the test binary dies without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &process{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	if err := childproc.Start(cmd, func(err error) {
		p.waitErr = err
		close(p.done)
	}); err != nil {
		return nil, fmt.Errorf("starting metrics-server: %w", err)
	}
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exitErr returns an *exitError if the process has exited, nil otherwise.
func (p *process) exitErr() error {
	select {
	case <-p.done:
		return &exitError{err: p.waitErr, logPath: p.logPath, tail: childproc.TailFile(p.logPath, logTailLines)}
	default:
		return nil
	}
}

// exitError describes a metrics-server that exited while starting. Its
// message quotes the end of the log.
type exitError struct {
	err     error
	logPath string
	tail    string
}

func (e *exitError) Error() string {
	return fmt.Sprintf("metrics-server exited during start (%v); last lines of %s:\n%s", e.err, e.logPath, e.tail)
}

// addrInUse reports whether the process died because its port was taken
// between picking it and binding it.
func (e *exitError) addrInUse() bool {
	return strings.Contains(e.tail, "address already in use")
}

// stop terminates the process group: SIGTERM, then SIGKILL after
// stopGrace. It waits for the process to exit and is idempotent.
func (p *process) stop() error {
	p.stopOnce.Do(func() { p.stopErr = p.terminate() })
	return p.stopErr
}

func (p *process) terminate() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	pgid := p.pid() // Setpgid makes the child its own group leader.
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("sending sigterm to metrics-server: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopGrace)
	defer cancel()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("sending sigkill to metrics-server: %w", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), killWait)
	defer cancel()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("metrics-server (pid %d) still running %v after sigkill", pgid, killWait)
	}
}
