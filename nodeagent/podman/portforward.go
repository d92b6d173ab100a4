//go:build remote

package podman

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/containers/podman/v5/pkg/bindings/containers"

	"github.com/vk-fleet/vk-fleet/nodeagent"
)

var _ nodeagent.PodDialer = (*Runtime)(nil)

// DialPod connects to 127.0.0.1:port inside the network namespace of pod
// podUID, as kubelet does for kubectl port-forward: the port need not be
// published. For a pod on the host's network that is the host's
// 127.0.0.1.
//
// DialPod enters the namespace through /proc/<pid>/ns/net of the pod's
// infra container, so the agent must run on the podman host, in its PID
// namespace, with CAP_SYS_ADMIN; with podman elsewhere it fails with an
// error saying so.
func (r *Runtime) DialPod(ctx context.Context, podUID string, port int32) (net.Conn, error) {
	if port <= 0 || port > 65535 {
		return nil, fmt.Errorf("connecting to pod %s: invalid port %d", podUID, port)
	}
	if err := r.connect(); err != nil {
		return nil, err
	}
	pid, sandbox, err := r.netnsPID(ctx, podUID)
	if err != nil {
		return nil, fmt.Errorf("connecting to port %d of pod %s: %w", port, podUID, err)
	}
	r.log.Debug("connecting in the network namespace of a pod", "uid", podUID, "port", port, "pid", pid, "netns", sandbox)
	if err := checkNetns(pid, sandbox); err != nil {
		return nil, fmt.Errorf("connecting to port %d of pod %s: %w", port, podUID, err)
	}
	conn, err := dialInNetns(ctx, pid, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return nil, fmt.Errorf("connecting to port %d of pod %s: %w", port, podUID, err)
	}
	return conn, nil
}

// netnsPID returns the PID of a running process in the network namespace
// of pod podUID, its infra container's, else any running container's, and
// the path of the namespace that podman reports (empty if none).
func (r *Runtime) netnsPID(ctx context.Context, podUID string) (pid int, sandbox string, err error) {
	p, err := r.findPod(ctx, podUID)
	if err != nil {
		return 0, "", err
	}
	if p == nil {
		return 0, "", fmt.Errorf("%w: pod %s", nodeagent.ErrNoContainer, podUID)
	}
	ids := []string{p.InfraId}
	for _, c := range p.Containers {
		if c.Id != p.InfraId && c.Status == "running" {
			ids = append(ids, c.Id)
		}
	}
	for _, id := range ids {
		if id == "" {
			continue
		}
		data, err := containers.Inspect(r.ctx(ctx), id, nil)
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return 0, "", fmt.Errorf("inspecting container %s: %w", id, classify(err))
		}
		if st := data.State; st != nil && st.Running && st.Pid > 0 {
			if ns := data.NetworkSettings; ns != nil {
				sandbox = ns.SandboxKey
			}
			return st.Pid, sandbox, nil
		}
	}
	return 0, "", fmt.Errorf("pod %s has no running container", podUID)
}
