package provider

import (
	"context"
	"fmt"
	"log/slog"

	vklog "github.com/virtual-kubelet/virtual-kubelet/log"
)

// vkLogger routes virtual-kubelet's logger into slog.
type vkLogger struct{ l *slog.Logger }

var _ vklog.Logger = vkLogger{}

// UseSlogForVirtualKubelet makes virtual-kubelet log through l.
func UseSlogForVirtualKubelet(l *slog.Logger) {
	vklog.L = vkLogger{l: l.With("component", "virtual-kubelet")}
}

func (v vkLogger) Debug(a ...any)            { v.l.Debug(fmt.Sprint(a...)) }
func (v vkLogger) Debugf(f string, a ...any) { v.l.Debug(fmt.Sprintf(f, a...)) }
func (v vkLogger) Info(a ...any)             { v.l.Debug(fmt.Sprint(a...)) }
func (v vkLogger) Infof(f string, a ...any)  { v.l.Debug(fmt.Sprintf(f, a...)) }
func (v vkLogger) Warn(a ...any)             { v.l.Warn(fmt.Sprint(a...)) }
func (v vkLogger) Warnf(f string, a ...any)  { v.l.Warn(fmt.Sprintf(f, a...)) }
func (v vkLogger) Error(a ...any)            { v.l.Error(fmt.Sprint(a...)) }
func (v vkLogger) Errorf(f string, a ...any) { v.l.Error(fmt.Sprintf(f, a...)) }

// Fatal and Fatalf log at error level and panic: a library never exits the
// process, and a panic still runs the caller's deferred clean-up.
func (v vkLogger) Fatal(a ...any) {
	msg := fmt.Sprint(a...)
	v.l.Error(msg)
	panic("virtual-kubelet: " + msg)
}
func (v vkLogger) Fatalf(f string, a ...any) {
	msg := fmt.Sprintf(f, a...)
	v.l.Error(msg)
	panic("virtual-kubelet: " + msg)
}
func (v vkLogger) WithField(k string, val any) vklog.Logger {
	return v.WithFields(vklog.Fields{k: val})
}
func (v vkLogger) WithFields(fs vklog.Fields) vklog.Logger {
	args := make([]any, 0, 2*len(fs))
	for k, val := range fs {
		if err, ok := val.(error); ok {
			// Not %+v: virtual-kubelet's errors carry stack traces.
			val = err.Error()
		}
		args = append(args, k, val)
	}
	return vkLogger{l: v.l.With(args...)}
}
func (v vkLogger) WithError(err error) vklog.Logger {
	if err == nil {
		return v
	}
	return vkLogger{l: v.l.With("err", err.Error())}
}

// withVKLogger puts l into ctx for virtual-kubelet's log.G.
func withVKLogger(ctx context.Context, l *slog.Logger) context.Context {
	return vklog.WithLogger(ctx, vkLogger{l: l})
}
