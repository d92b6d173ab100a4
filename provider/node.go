package provider

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/virtual-kubelet/virtual-kubelet/node"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/registry"
)

// ErrDeviceStale is what Ping returns when a device's heartbeats stopped.
var ErrDeviceStale = errors.New("device heartbeat stale")

// device is one device served by this process: the NodeProvider of its
// NodeController.
type device struct {
	name string
	p    *Provider

	mu       sync.Mutex
	lastSeen time.Time
	hb       *bridge.Heartbeat
	notify   func(*corev1.Node)
	cancel   context.CancelFunc // stops the NodeController; nil while not running
	stale    bool               // heartbeats stopped since the last Node update
	// pushing is set while a goroutine hands Nodes to the NodeController;
	// repush asks it for one more round with the latest heartbeat.
	pushing, repush bool
}

var _ node.NodeProvider = (*device)(nil)

// Ping reports whether the device's heartbeats are fresh: the lease is
// renewed only while they are.
func (d *device) Ping(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if since := time.Since(d.lastSeen); since > d.p.cfg.HeartbeatTimeout {
		d.stale = true
		return fmt.Errorf("%w: device %s last seen %s ago", ErrDeviceStale, d.name, since.Round(time.Second))
	}
	return nil
}

// NotifyNodeStatus keeps cb to push Node status changes while ctx, the
// context of one NodeController run, lasts. virtual-kubelet's cb blocks for
// good once its run has ended with an error (it sends on a channel nobody
// reads any more); a push gives up when the run's context ends.
func (d *device) NotifyNodeStatus(ctx context.Context, cb func(*corev1.Node)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.notify = func(n *corev1.Node) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			cb(n)
		}()
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
}

// pushNode pushes the Node built from the latest heartbeat. It never
// blocks: the NodeController may not be reading (it is restarting after an
// error), and the caller is the one heartbeat subscription of every device.
// Pushes are coalesced; the last heartbeat wins.
func (d *device) pushNode() {
	d.mu.Lock()
	if d.pushing {
		d.repush = true
		d.mu.Unlock()
		return
	}
	d.pushing = true
	d.mu.Unlock()
	go func() {
		for {
			d.mu.Lock()
			cb, hb := d.notify, d.hb
			d.repush = false
			d.mu.Unlock()
			if cb != nil && hb != nil {
				cb(d.p.buildNode(d.name, hb)) // returns when its NodeController run ends
			}
			d.mu.Lock()
			if !d.repush {
				d.pushing = false
				d.mu.Unlock()
				return
			}
			d.mu.Unlock()
		}
	}()
}

// buildNode returns the Node of a device as its last heartbeat describes it.
func (p *Provider) buildNode(name string, hb *bridge.Heartbeat) *corev1.Node {
	inv := hb.Inventory
	arch, os := inv.Architecture, inv.OS
	if arch == "" {
		arch = "unknown"
	}
	if os == "" {
		os = "linux"
	}
	maxPods := inv.MaxPods
	if maxPods <= 0 {
		maxPods = 110
	}
	capacity, allocatable := p.nodeResources(&inv, maxPods)
	now := metav1.Now()
	ready := corev1.NodeCondition{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue,
		Reason: "KubeletReady", Message: "device agent is posting heartbeats",
		LastHeartbeatTime: now, LastTransitionTime: now,
	}
	if hb.RuntimeError != "" {
		ready.Status = corev1.ConditionFalse
		ready.Reason = "ContainerRuntimeUnavailable"
		ready.Message = "podman on the device: " + hb.RuntimeError
	}
	cond := func(t corev1.NodeConditionType, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, Message: msg,
			LastHeartbeatTime: now, LastTransitionTime: now}
	}
	runtimeVersion := "podman://unknown"
	if inv.PodmanVersion != "" {
		runtimeVersion = "podman://" + inv.PodmanVersion
	}
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				"type":                 "virtual-kubelet",
				"kubernetes.io/role":   "agent",
				corev1.LabelArchStable: arch,
				corev1.LabelOSStable:   os,
				corev1.LabelHostname:   name,
				registry.LabelManaged:  "true",
			},
			Annotations: map[string]string{
				registry.AnnotationDeviceAddresses: strings.Join(inv.Addresses, ","),
				registry.AnnotationAgentVersion:    inv.AgentVersion,
			},
		},
		Spec: corev1.NodeSpec{
			Taints: []corev1.Taint{{Key: registry.TaintKey, Value: registry.TaintValue, Effect: corev1.TaintEffectNoSchedule}},
		},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: allocatable,
			Conditions: append(append([]corev1.NodeCondition{ready},
				pressureConditions(&p.conds, name, hb, now)...),
				cond(corev1.NodeNetworkUnavailable, "RouteCreated", "device network is managed by the device"),
			),
			Addresses: []corev1.NodeAddress{
				// No Hostname address: the API server tries it first, and
				// a device's name does not resolve to vk-fleet.
				{Type: corev1.NodeInternalIP, Address: p.cfg.NodeAddress},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{
				KubeletEndpoint: corev1.DaemonEndpoint{Port: p.kubeletPort(name)},
			},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID:               inv.MachineID,
				BootID:                  inv.BootID,
				KernelVersion:           inv.KernelVersion,
				OSImage:                 inv.OSImage,
				ContainerRuntimeVersion: runtimeVersion,
				KubeletVersion:          p.cfg.Version,
				KubeProxyVersion:        "",
				OperatingSystem:         os,
				Architecture:            arch,
			},
		},
	}
	return n
}

// kubeletPort is the kubelet port advertised on device's Node: its own,
// or the shared one.
func (p *Provider) kubeletPort(device string) int32 {
	if p.ports != nil {
		if port, ok := p.ports.port(device); ok {
			return int32(port)
		}
	}
	return p.cfg.KubeletPort
}
