package provider

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
)

// PortRange is an inclusive range of TCP ports.
type PortRange struct{ First, Last int }

// ParsePortRange parses "FIRST-LAST" (or one port).
func ParsePortRange(s string) (PortRange, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		b = a
	}
	first, err1 := strconv.Atoi(strings.TrimSpace(a))
	last, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err := errors.Join(err1, err2); err != nil || first < 1 || last > 65535 || first > last {
		return PortRange{}, fmt.Errorf("port range %q: want FIRST-LAST within 1-65535", s)
	}
	return PortRange{First: first, Last: last}, nil
}

// Size is the number of ports in r; 0 for the zero PortRange.
func (r PortRange) Size() int {
	if r.First <= 0 || r.Last < r.First {
		return 0
	}
	return r.Last - r.First + 1
}

// kubeletPorts gives every device Node a kubelet port of its own, so that
// the routes that name no pod (/stats/summary, /metrics/resource, /pods)
// know their Node, as a kubelet's do: the API server and metrics-server
// reach a Node at its InternalIP (this replica's address) and
// status.daemonEndpoints.kubeletEndpoint.port. A port is bound when a
// device is first served (the same one after a restart, when free) and
// released when it is given up; connections on
// every port are served by one HTTP server, which learns the device from
// the connection. 10,000 devices cost 10,000 listening sockets and no
// goroutine per idle listener beyond its accept loop.
type kubeletPorts struct {
	host  string
	r     PortRange
	log   *slog.Logger
	conns chan net.Conn

	// acc accepts on every device's port.
	acc acceptor

	mu       sync.Mutex
	byDevice map[string]*devicePort
	used     map[int]bool
	full     bool
	done     chan struct{}
}

type devicePort struct {
	port int
	ln   net.Listener
}

// deviceConn is a connection accepted on a device's own port.
type deviceConn struct {
	net.Conn
	device string
}

func newKubeletPorts(host string, r PortRange, log *slog.Logger) *kubeletPorts {
	k := &kubeletPorts{host: host, r: r, log: log, conns: make(chan net.Conn),
		byDevice: map[string]*devicePort{}, used: map[int]bool{}, done: make(chan struct{})}
	k.acc = newAcceptor(k)
	return k
}

// acceptor accepts connections on the devices' listeners and sends them,
// with their device, to kubeletPorts.conns.
type acceptor interface {
	add(ln net.Listener, device string) error
	// remove stops accepting on ln; it is called before ln closes.
	remove(ln net.Listener)
	stop()
}

// port returns device's port, binding one from the range the first time;
// false when the range is used up (or no port in it can be bound).
func (k *kubeletPorts) port(device string) (int, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if dp := k.byDevice[device]; dp != nil {
		return dp.port, true
	}
	select {
	case <-k.done:
		return 0, false
	default:
	}
	// Probe from a point given by the name, so that a device keeps its
	// port across restarts of vk-fleet as long as the range allows.
	h := fnv.New32a()
	_, _ = h.Write([]byte(device))
	start := int(h.Sum32() % uint32(k.r.Size()))
	for i := range k.r.Size() {
		p := k.r.First + (start+i)%k.r.Size()
		if k.used[p] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(k.host, strconv.Itoa(p)))
		if err != nil {
			continue // taken by another process: try the next
		}
		if err := k.acc.add(ln, device); err != nil {
			k.log.Warn("kubelet port", "device", device, "port", p, "err", err)
			_ = ln.Close()
			continue
		}
		k.used[p] = true
		k.byDevice[device] = &devicePort{port: p, ln: ln}
		k.full = false
		return p, true
	}
	if !k.full {
		k.full = true
		k.log.Warn("no free kubelet port left in the range; further Nodes get the shared kubelet port, without node stats",
			"range", fmt.Sprintf("%d-%d", k.r.First, k.r.Last), "devices", len(k.byDevice))
	}
	return 0, false
}

// release closes device's port.
func (k *kubeletPorts) release(device string) {
	k.mu.Lock()
	dp := k.byDevice[device]
	if dp != nil {
		delete(k.byDevice, device)
		delete(k.used, dp.port)
	}
	k.mu.Unlock()
	if dp != nil {
		k.acc.remove(dp.ln)
		_ = dp.ln.Close()
	}
}

func (k *kubeletPorts) accept(ln net.Listener, device string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				k.log.Warn("kubelet port", "device", device, "err", err)
			}
			return
		}
		select {
		case k.conns <- &deviceConn{Conn: c, device: device}:
		case <-k.done:
			_ = c.Close()
			return
		}
	}
}

// close releases every port.
func (k *kubeletPorts) close() {
	k.mu.Lock()
	select {
	case <-k.done:
	default:
		close(k.done)
	}
	all := k.byDevice
	k.byDevice, k.used = map[string]*devicePort{}, map[int]bool{}
	k.mu.Unlock()
	for _, dp := range all {
		k.acc.remove(dp.ln)
		_ = dp.ln.Close()
	}
	k.acc.stop()
}

// listener merges the devices' ports and the shared one into one
// net.Listener for the HTTP server.
type mergedListener struct {
	k      *kubeletPorts
	shared net.Listener
	once   sync.Once
	closed chan struct{}
	errs   chan error
}

func (k *kubeletPorts) listener(shared net.Listener) *mergedListener {
	m := &mergedListener{k: k, shared: shared, closed: make(chan struct{}), errs: make(chan error, 1)}
	if shared != nil {
		go func() {
			for {
				c, err := shared.Accept()
				if err != nil {
					m.errs <- err
					return
				}
				select {
				case k.conns <- c:
				case <-m.closed:
					_ = c.Close()
					return
				}
			}
		}()
	}
	return m
}

func (m *mergedListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.k.conns:
		return c, nil
	case err := <-m.errs:
		return nil, err
	case <-m.closed:
		return nil, net.ErrClosed
	}
}

func (m *mergedListener) Close() error {
	m.once.Do(func() {
		close(m.closed)
		if m.shared != nil {
			_ = m.shared.Close()
		}
	})
	return nil
}

func (m *mergedListener) Addr() net.Addr {
	if m.shared != nil {
		return m.shared.Addr()
	}
	return &net.TCPAddr{}
}

type deviceKey struct{}

// connDevice returns the device whose port the request came in on, or "".
func connDevice(ctx context.Context) string {
	d, _ := ctx.Value(deviceKey{}).(string)
	return d
}
