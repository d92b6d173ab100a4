package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vk-fleet/vk-fleet/test/framework/childproc"
)

const (
	// stopGrace is how long a process gets to exit after SIGTERM before
	// its process group is killed.
	stopGrace = 10 * time.Second
	// killWait bounds the wait for exit after SIGKILL.
	killWait = 5 * time.Second
	// logTailLines is how much of a process's log an error quotes.
	logTailLines = 20
)

// process is one child process of the control plane, running in its own
// process group, with stdout and stderr in a log file.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	log     *slog.Logger

	done    chan struct{} // closed when the process has been reaped
	waitErr error         // valid after done is closed

	stopOnce sync.Once
	stopErr  error
}

// startProcess starts bin with args, writing its output to logPath
// (truncated first).
func startProcess(log *slog.Logger, name, bin string, args []string, logPath string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening %s log: %w", name, err)
	}
	defer logFile.Close() // the child holds its own descriptor

	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// A group of its own, so Stop can signal the process and anything
		// it spawned, and a terminal's ^C does not reach it directly.
		Setpgid: true,
		// Safety net: if the test binary dies without calling Stop (a
		// panic, a -timeout), the kernel kills the child instead of
		// leaving it orphaned on its ports.
		Pdeathsig: syscall.SIGKILL,
	}
	p := &process{
		name:    name,
		logPath: logPath,
		cmd:     cmd,
		done:    make(chan struct{}),
	}
	if err := childproc.Start(cmd, func(err error) {
		p.waitErr = err
		close(p.done)
	}); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p.log = log.With("process", name, "pid", cmd.Process.Pid)
	p.log.Debug("process started", "log", logPath)
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited and been reaped.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes a process that exited while the control plane was
// starting. Its message quotes the end of the process's log.
type exitError struct {
	name    string
	err     error
	logPath string
	tail    string
}

func (e *exitError) Error() string {
	return fmt.Sprintf("%s exited during start (%v); last lines of %s:\n%s", e.name, e.err, e.logPath, e.tail)
}

// addrInUse reports whether the process died because a port was taken —
// a race with another program between picking a free port and binding it.
func (e *exitError) addrInUse() bool {
	return strings.Contains(e.tail, "address already in use")
}

// exitErr returns an *exitError if the process has exited, nil otherwise.
func (p *process) exitErr() error {
	if !p.exited() {
		return nil
	}
	return &exitError{name: p.name, err: p.waitErr, logPath: p.logPath, tail: childproc.TailFile(p.logPath, logTailLines)}
}

// stop terminates the process group: SIGTERM, then SIGKILL after
// stopGrace. It waits for the process to exit and is idempotent.
func (p *process) stop() error {
	p.stopOnce.Do(func() { p.stopErr = p.terminate() })
	return p.stopErr
}

func (p *process) terminate() error {
	if p.exited() {
		p.log.Debug("process had already exited", "err", p.waitErr)
		return nil
	}
	pgid := p.pid() // Setpgid makes the child its own group leader.
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("sending sigterm to %s: %w", p.name, err)
	}
	timer := time.NewTimer(stopGrace)
	defer timer.Stop()
	select {
	case <-p.done:
		p.log.Debug("process stopped")
		p.clearGroup()
		return nil
	case <-timer.C:
	}
	p.log.Warn("process ignored sigterm, killing it", "grace", stopGrace)
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("sending sigkill to %s: %w", p.name, err)
	}
	timer.Reset(killWait)
	select {
	case <-p.done:
		p.clearGroup()
		return nil
	case <-timer.C:
		return fmt.Errorf("%s (pid %d) still running %v after sigkill", p.name, pgid, killWait)
	}
}

// clearGroup kills what is left of the process group after its leader
// has exited (children that ignored SIGTERM) and waits, briefly, until the
// group is gone. While any member exists, even a zombie not yet reaped by
// init, its id cannot be reused, so signalling it is safe.
func (p *process) clearGroup() {
	pgid := p.pid()
	if err := syscall.Kill(-pgid, syscall.SIGKILL); errors.Is(err, syscall.ESRCH) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), killWait)
	defer cancel()
	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			p.log.Warn("process group outlived its leader", "pgid", pgid)
			return
		case <-ticker.C:
		}
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
	}
}
