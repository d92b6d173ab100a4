//go:build remote

package podman

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/images"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/internal/metrics"
)

// pull pulls ref for container c of w. Like a kubelet, it tries each of the
// credentials the workload carries for the image (from the pod's image pull
// secrets, most specific first), then those of the PullCredentialsFunc, and
// pulls anonymously when there are none; it returns at the first success,
// or every attempt's error. No error it returns quotes a password.
func (r *Runtime) pull(ctx context.Context, w *bridge.Workload, c *bridge.Container, ref string) error {
	defer func(start time.Time) {
		metrics.AgentImagePullDuration.Observe(time.Since(start).Seconds())
	}(time.Now())
	auths, err := r.pullAuths(ctx, w, c, ref)
	if err != nil {
		return err
	}
	if len(auths) == 0 {
		auths = []bridge.RegistryAuth{{}} // anonymous
	}
	var errs []error
	for _, a := range auths {
		opts := new(images.PullOptions).WithQuiet(true).WithProgressWriter(io.Discard)
		if a.Username != "" || a.Password != "" {
			opts = opts.WithUsername(a.Username).WithPassword(a.Password)
		}
		_, err := images.Pull(r.ctx(ctx), ref, opts)
		if err == nil {
			return nil
		}
		err = redact(err, auths)
		if len(auths) > 1 && a.Username != "" {
			err = fmt.Errorf("as %s: %w", a.Username, err)
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("pulling image %s: %w", ref, errors.Join(errs...))
}

// pullAuths lists the credentials to try for ref: c's, then the
// PullCredentialsFunc's (the device's own, as a kubelet falls back to the
// node's after a pod's).
func (r *Runtime) pullAuths(ctx context.Context, w *bridge.Workload, c *bridge.Container, ref string) ([]bridge.RegistryAuth, error) {
	auths := c.PullAuth
	if r.creds != nil {
		user, pass, err := r.creds(ctx, w, ref)
		if err != nil {
			return nil, fmt.Errorf("getting pull credentials for %s: %w", ref, err)
		}
		if user != "" {
			auths = append(auths[:len(auths):len(auths)], bridge.RegistryAuth{Username: user, Password: pass})
		}
	}
	return auths, nil
}

// redact returns err, or — should its message quote one of the passwords
// (a registry that echoes what it was sent) — an error with the same
// message, each password replaced.
func redact(err error, auths []bridge.RegistryAuth) error {
	msg := err.Error()
	clean := msg
	for _, a := range auths {
		if a.Password != "" {
			clean = strings.ReplaceAll(clean, a.Password, "***")
		}
	}
	if clean == msg {
		return err
	}
	return &redacted{msg: clean, err: err}
}

// redacted is an error whose message hides a secret but that still
// matches what it wraps (errors.Is, errors.As).
type redacted struct {
	msg string
	err error
}

func (e *redacted) Error() string { return e.msg }
func (e *redacted) Unwrap() error { return e.err }
