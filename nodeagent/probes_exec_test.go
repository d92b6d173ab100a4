package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// slowExecer is a runtime that takes startDelay to start a command, which
// then runs for runFor (until ctx ends when runFor is 0) and exits with
// code; err, when set, is returned before anything starts.
type slowExecer struct {
	startDelay, runFor time.Duration
	code               int
	err                error
}

func (s slowExecer) Exec(ctx context.Context, _, _ string, _ []string, sio StreamIO) (int, error) {
	if s.err != nil {
		return -1, s.err
	}
	select {
	case <-time.After(s.startDelay): // the runtime's own work, simulated
	case <-ctx.Done():
		return -1, fmt.Errorf("%w: %w", ErrNotStarted, ctx.Err())
	}
	sio.Started()
	if s.runFor == 0 {
		<-ctx.Done()
		return -1, ctx.Err()
	}
	select {
	case <-time.After(s.runFor):
		return s.code, nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// An exec probe's timeout counts the command, as kubelet's does, not the
// runtime's work before it: a healthy container on a device whose podman
// is slow is not failed (and, for liveness, restarted).
func TestExecProbeTimesTheCommandOnly(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ctx := t.Context()
	if err := execProbe(ctx, slowExecer{startDelay: 3 * timeout, runFor: time.Millisecond}, "u", "c", []string{"true"}, timeout); err != nil {
		t.Errorf("a command started late by the runtime: %v, want success", err)
	}
	err := execProbe(ctx, slowExecer{}, "u", "c", []string{"sleep"}, timeout)
	if err == nil || errors.Is(err, ErrNotStarted) || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("a command running past the timeout: %v, want a timeout failure", err)
	}
	err = execProbe(ctx, slowExecer{runFor: time.Millisecond, code: 3}, "u", "c", []string{"false"}, timeout)
	if err == nil || errors.Is(err, ErrNotStarted) {
		t.Errorf("a command exiting 3: %v, want a failure", err)
	}
	err = execProbe(ctx, slowExecer{err: fmt.Errorf("%w: podman is gone", ErrNotStarted)}, "u", "c", []string{"true"}, timeout)
	if !errors.Is(err, ErrNotStarted) {
		t.Errorf("a runtime error before the command: %v, want ErrNotStarted (neither success nor failure)", err)
	}
}
