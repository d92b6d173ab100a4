package provider

import (
	"context"
	"io"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// GetContainerLogs streams a container's log from its device over NATS,
// for the kubelet API's containerLogs route (kubectl logs).
func (p *Provider) GetContainerLogs(ctx context.Context, namespace, podName, container string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	device, uid, container, err := p.podTarget(namespace, podName, container)
	if err != nil {
		return nil, err
	}
	req := &bridge.SessionRequest{Kind: bridge.SessionLogs, PodUID: uid, Container: container, Follow: opts.Follow,
		Timestamps: opts.Timestamps, Previous: opts.Previous, LimitBytes: int64(opts.LimitBytes)}
	if opts.Tail > 0 {
		t := int64(opts.Tail)
		req.TailLines = &t
	}
	switch {
	case !opts.SinceTime.IsZero():
		t := opts.SinceTime
		req.SinceTime = &t
	case opts.SinceSeconds > 0:
		t := time.Now().Add(-time.Duration(opts.SinceSeconds) * time.Second)
		req.SinceTime = &t
	}
	s, err := p.openSession(ctx, device, req)
	if err != nil {
		return nil, err
	}
	return &streamReader{s: s}, nil
}
