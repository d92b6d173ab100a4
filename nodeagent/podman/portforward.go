//go:build remote

package podman

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"

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
	pid, sandbox, err := r.podNetns(ctx, podUID)
	if err != nil {
		return nil, fmt.Errorf("connecting to port %d of pod %s: %w", port, podUID, err)
	}
	r.log.Debug("connecting in the network namespace of a pod", "uid", podUID, "port", port, "pid", pid, "netns", sandbox)
	conn, err := dialInNetns(ctx, pid, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return nil, fmt.Errorf("connecting to port %d of pod %s: %w", port, podUID, err)
	}
	return conn, nil
}

// netnsCache remembers, by pod UID, a process in each pod's network
// namespace, so that probes (every few seconds in every pod) and
// port-forwards reach the pod without asking podman: under load its
// answers take seconds, which a probe's timeout would count. An entry is
// used only while the process is still in the namespace podman named.
type netnsCache struct {
	mu   sync.Mutex
	pods map[string]netnsRef
}

type netnsRef struct {
	pid     int
	sandbox string
}

// podNetns returns a process in pod podUID's network namespace and the
// namespace's path ("" for a pod on the host's network), checked to be
// reachable from here. A failure to learn it from podman wraps
// nodeagent.ErrNotStarted.
func (r *Runtime) podNetns(ctx context.Context, podUID string) (int, string, error) {
	r.netns.mu.Lock()
	ref, ok := r.netns.pods[podUID]
	r.netns.mu.Unlock()
	if ok && checkNetns(ref.pid, ref.sandbox) == nil {
		return ref.pid, ref.sandbox, nil
	}
	pid, sandbox, err := r.netnsPID(ctx, podUID)
	if err != nil {
		return 0, "", fmt.Errorf("%w: %w", nodeagent.ErrNotStarted, err)
	}
	if err := checkNetns(pid, sandbox); err != nil {
		return 0, "", err
	}
	r.netns.mu.Lock()
	if sandbox == "" {
		// Nothing to check a remembered PID against: any process
		// would pass.
		delete(r.netns.pods, podUID)
	} else {
		if r.netns.pods == nil {
			r.netns.pods = make(map[string]netnsRef)
		}
		r.netns.pods[podUID] = netnsRef{pid: pid, sandbox: sandbox}
	}
	r.netns.mu.Unlock()
	return pid, sandbox, nil
}

// forgetNetns drops what netnsCache remembers of pod podUID.
func (r *Runtime) forgetNetns(podUID string) {
	r.netns.mu.Lock()
	delete(r.netns.pods, podUID)
	r.netns.mu.Unlock()
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
