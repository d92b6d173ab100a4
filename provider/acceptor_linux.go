//go:build linux

package provider

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
)

// epollAcceptor accepts on every device's kubelet port with one goroutine
// and one epoll set, instead of a goroutine per port: a replica serving
// 10,000 devices holds 10,000 listening sockets.
type epollAcceptor struct {
	k    *kubeletPorts
	once sync.Once
	err  error
	epfd int
	wake [2]int // a pipe that interrupts epoll_wait when the ports close

	mu   sync.Mutex
	byFD map[int]acceptTarget
}

type acceptTarget struct {
	ln     *net.TCPListener
	raw    syscall.RawConn
	device string
}

func newAcceptor(k *kubeletPorts) acceptor {
	return &epollAcceptor{k: k, epfd: -1, byFD: map[int]acceptTarget{}}
}

func (a *epollAcceptor) start() error {
	a.once.Do(func() {
		if a.epfd, a.err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); a.err != nil {
			return
		}
		if a.err = syscall.Pipe2(a.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); a.err != nil {
			return
		}
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(a.wake[0])}
		if a.err = syscall.EpollCtl(a.epfd, syscall.EPOLL_CTL_ADD, a.wake[0], &ev); a.err != nil {
			return
		}
		go a.loop()
	})
	return a.err
}

// add starts accepting on ln for device.
func (a *epollAcceptor) add(ln net.Listener, device string) error {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return errors.New("not a TCP listener")
	}
	if err := a.start(); err != nil {
		return err
	}
	raw, err := tl.SyscallConn()
	if err != nil {
		return err
	}
	var fd int
	if err := raw.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return err
	}
	a.mu.Lock()
	a.byFD[fd] = acceptTarget{ln: tl, raw: raw, device: device}
	a.mu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}
	if err := syscall.EpollCtl(a.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		a.mu.Lock()
		delete(a.byFD, fd)
		a.mu.Unlock()
		return err
	}
	return nil
}

// remove stops accepting on ln; call it before closing ln.
func (a *epollAcceptor) remove(ln net.Listener) {
	tl, ok := ln.(*net.TCPListener)
	if !ok || a.epfd < 0 {
		return
	}
	raw, err := tl.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(f uintptr) {
		_ = syscall.EpollCtl(a.epfd, syscall.EPOLL_CTL_DEL, int(f), nil)
		a.mu.Lock()
		delete(a.byFD, int(f))
		a.mu.Unlock()
	})
}

// stop ends the loop.
func (a *epollAcceptor) stop() {
	if a.epfd >= 0 {
		_, _ = syscall.Write(a.wake[1], []byte{1})
	}
}

func (a *epollAcceptor) loop() {
	events := make([]syscall.EpollEvent, 64)
	for {
		n, err := syscall.EpollWait(a.epfd, events, -1)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			a.k.log.Error("kubelet ports: epoll", "err", err)
			return
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == a.wake[0] {
				_ = syscall.Close(a.epfd)
				_ = syscall.Close(a.wake[0])
				_ = syscall.Close(a.wake[1])
				return
			}
			a.mu.Lock()
			t, ok := a.byFD[fd]
			a.mu.Unlock()
			if ok {
				a.acceptAll(t)
			}
		}
	}
}

// acceptAll accepts every pending connection of t and hands each over.
func (a *epollAcceptor) acceptAll(t acceptTarget) {
	for {
		var nfd int
		var aerr error
		if err := t.raw.Control(func(f uintptr) {
			nfd, _, aerr = syscall.Accept4(int(f), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		}); err != nil {
			return // closed
		}
		if aerr != nil {
			if !errors.Is(aerr, syscall.EAGAIN) && !errors.Is(aerr, syscall.ECONNABORTED) {
				a.k.log.Warn("kubelet port", "device", t.device, "err", aerr)
			}
			return
		}
		f := os.NewFile(uintptr(nfd), "kubelet-conn")
		c, err := net.FileConn(f)
		_ = f.Close()
		if err != nil {
			a.k.log.Warn("kubelet port", "device", t.device, "err", err)
			continue
		}
		select {
		case a.k.conns <- &deviceConn{Conn: c, device: t.device}:
		case <-a.k.done:
			_ = c.Close()
			return
		}
	}
}
