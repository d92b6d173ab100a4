package provider

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// podSemanticsProtocol is the first device protocol that runs init
// containers and probes.
const podSemanticsProtocol = 6

func hasProbes(spec *corev1.PodSpec) bool {
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			if c.StartupProbe != nil || c.ReadinessProbe != nil || c.LivenessProbe != nil {
				return true
			}
		}
	}
	return false
}

// translateProbe turns a Kubernetes probe into the device's, with the API
// server's defaults and named ports resolved against c's ports.
func translateProbe(p *corev1.Probe, c *corev1.Container) (*bridge.Probe, error) {
	if p == nil {
		return nil, nil
	}
	out := &bridge.Probe{
		InitialDelaySeconds: p.InitialDelaySeconds,
		PeriodSeconds:       orDefault(p.PeriodSeconds, 10),
		TimeoutSeconds:      orDefault(p.TimeoutSeconds, 1),
		SuccessThreshold:    orDefault(p.SuccessThreshold, 1),
		FailureThreshold:    orDefault(p.FailureThreshold, 3),
	}
	h := p.ProbeHandler
	switch {
	case h.Exec != nil:
		if len(h.Exec.Command) == 0 {
			return nil, errors.New("exec probe without a command")
		}
		out.Exec = h.Exec.Command
	case h.HTTPGet != nil:
		g, err := httpGet(h.HTTPGet, c)
		if err != nil {
			return nil, err
		}
		out.HTTPGet = g
	case h.TCPSocket != nil:
		if h.TCPSocket.Host != "" {
			return nil, errors.New("tcpSocket probe with a host: devices probe inside the pod only")
		}
		port, err := probePort(h.TCPSocket.Port, c)
		if err != nil {
			return nil, err
		}
		out.TCPPort = port
	case h.GRPC != nil:
		if h.GRPC.Port <= 0 || h.GRPC.Port > 65535 {
			return nil, fmt.Errorf("grpc probe port %d out of range", h.GRPC.Port)
		}
		out.GRPC = &bridge.GRPCProbe{Port: h.GRPC.Port}
		if h.GRPC.Service != nil {
			out.GRPC.Service = *h.GRPC.Service
		}
	default:
		return nil, errors.New("probe without a handler")
	}
	return out, nil
}

func orDefault(v, d int32) int32 {
	if v <= 0 {
		return d
	}
	return v
}

// probePort resolves a probe's port: a number, or the name of one of c's
// ports.
func probePort(p intstr.IntOrString, c *corev1.Container) (int32, error) {
	if p.Type == intstr.Int {
		if p.IntVal <= 0 || p.IntVal > 65535 {
			return 0, fmt.Errorf("probe port %d out of range", p.IntVal)
		}
		return p.IntVal, nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("probe port %q is not a port of the container", p.StrVal)
}

func hasHooks(spec *corev1.PodSpec) bool {
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			if c.Lifecycle != nil && (c.Lifecycle.PostStart != nil || c.Lifecycle.PreStop != nil) {
				return true
			}
		}
	}
	return false
}

// translateHandler turns a lifecycle hook into the device's.
func translateHandler(h *corev1.LifecycleHandler, c *corev1.Container) (*bridge.Handler, error) {
	if h == nil {
		return nil, nil
	}
	switch {
	case h.Exec != nil:
		if len(h.Exec.Command) == 0 {
			return nil, errors.New("exec hook without a command")
		}
		return &bridge.Handler{Exec: h.Exec.Command}, nil
	case h.HTTPGet != nil:
		g, err := httpGet(h.HTTPGet, c)
		if err != nil {
			return nil, err
		}
		return &bridge.Handler{HTTPGet: g}, nil
	case h.Sleep != nil:
		return &bridge.Handler{SleepSeconds: max(h.Sleep.Seconds, 0)}, nil
	case h.TCPSocket != nil:
		return nil, errors.New("tcpSocket hooks are deprecated and not run by kubelets either; use exec or httpGet")
	}
	return nil, errors.New("hook without a handler")
}

// httpGet translates an HTTP GET of a probe or hook.
func httpGet(a *corev1.HTTPGetAction, c *corev1.Container) (*bridge.HTTPProbe, error) {
	port, err := probePort(a.Port, c)
	if err != nil {
		return nil, err
	}
	g := &bridge.HTTPProbe{Path: a.Path, Port: port, Scheme: string(a.Scheme), Host: a.Host}
	for _, hd := range a.HTTPHeaders {
		if g.Headers == nil {
			g.Headers = map[string]string{}
		}
		g.Headers[hd.Name] = hd.Value
	}
	return g, nil
}
