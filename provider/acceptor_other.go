//go:build !linux

package provider

import "net"

// goAcceptor accepts on each device's kubelet port with a goroutine of its
// own (the Linux build uses one epoll set for all).
type goAcceptor struct{ k *kubeletPorts }

func newAcceptor(k *kubeletPorts) acceptor { return goAcceptor{k} }

func (a goAcceptor) add(ln net.Listener, device string) error {
	go a.k.accept(ln, device)
	return nil
}

func (goAcceptor) remove(net.Listener) {}
func (goAcceptor) stop()               {}
