package provider

import (
	"context"
	"fmt"
	"io"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// RunInContainer runs cmd in a container on its device (kubectl exec),
// with the client's streams; a non-zero exit code comes back as an error
// the kubelet API hands to the client as the command's exit code.
func (p *Provider) RunInContainer(ctx context.Context, namespace, podName, container string, cmd []string, attach api.AttachIO) error {
	if len(cmd) == 0 {
		return errdefs.InvalidInput("exec needs a command")
	}
	return p.stream(ctx, bridge.SessionExec, namespace, podName, container, cmd, attach)
}

// AttachToContainer joins a container's main process (kubectl attach).
func (p *Provider) AttachToContainer(ctx context.Context, namespace, podName, container string, attach api.AttachIO) error {
	return p.stream(ctx, bridge.SessionAttach, namespace, podName, container, nil, attach)
}

func (p *Provider) stream(ctx context.Context, kind, namespace, podName, container string, cmd []string, attach api.AttachIO) error {
	device, uid, container, err := p.podTarget(namespace, podName, container)
	if err != nil {
		return err
	}
	if err := p.needProtocol(device, 5, kind); err != nil {
		return err
	}
	req := &bridge.SessionRequest{Kind: kind, PodUID: uid, Container: container, Command: cmd,
		Stdin: attach.Stdin() != nil, Stdout: attach.Stdout() != nil, Stderr: attach.Stderr() != nil, TTY: attach.TTY()}
	s, err := p.openSession(ctx, device, req)
	if err != nil {
		return err
	}
	defer s.Close()
	if in := attach.Stdin(); in != nil {
		go s.copyInput(in)
	}
	if rs := attach.Resize(); rs != nil {
		go func() {
			for {
				select {
				case <-s.done:
					return
				case sz, ok := <-rs:
					if !ok {
						return
					}
					s.control(bridge.SessionControl{Resize: &bridge.TermSize{Width: sz.Width, Height: sz.Height}})
				}
			}
		}()
	}
	for {
		f, err := s.next()
		if err != nil {
			return err
		}
		if len(f.Data) > 0 {
			w := attach.Stdout()
			if f.Stream == bridge.StreamStderr {
				w = attach.Stderr()
			}
			if w != nil {
				if _, err := w.Write(f.Data); err != nil {
					return fmt.Errorf("writing to the client: %w", err)
				}
			}
		}
		if f.EOF {
			if f.Exit != nil && *f.Exit != 0 {
				return exitError(*f.Exit)
			}
			return nil
		}
	}
}

// exitError is a command's non-zero exit code, as k8s.io/utils/exec's
// ExitError, which the kubelet API turns into the exit code kubectl shows.
type exitError int

func (e exitError) Error() string   { return fmt.Sprintf("command terminated with exit code %d", int(e)) }
func (e exitError) String() string  { return e.Error() }
func (e exitError) Exited() bool    { return true }
func (e exitError) ExitStatus() int { return int(e) }

// PortForward connects stream to port inside the pod's network namespace
// on its device (kubectl port-forward), one session per connection.
func (p *Provider) PortForward(ctx context.Context, namespace, podName string, port int32, stream io.ReadWriteCloser) error {
	device, uid, _, err := p.podTarget(namespace, podName, "")
	if err != nil {
		return err
	}
	if err := p.needProtocol(device, 5, "port-forward"); err != nil {
		return err
	}
	s, err := p.openSession(ctx, device, &bridge.SessionRequest{Kind: bridge.SessionPortForward, PodUID: uid, Port: port})
	if err != nil {
		return err
	}
	defer s.Close()
	defer stream.Close()
	go s.copyInput(stream)
	for {
		f, err := s.next()
		if err != nil {
			return err
		}
		if len(f.Data) > 0 {
			if _, err := stream.Write(f.Data); err != nil {
				return fmt.Errorf("writing to the client: %w", err)
			}
		}
		if f.EOF {
			return nil
		}
	}
}
