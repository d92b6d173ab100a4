package provider

import (
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"testing"
)

// freeRange finds n consecutive free ports on 127.0.0.1.
func freeRange(t *testing.T, n int) PortRange {
	t.Helper()
	for base := 40000; base < 60000; base += n {
		ok := true
		for p := base; p < base+n && ok; p++ {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				continue
			}
			ln.Close()
		}
		if ok {
			return PortRange{First: base, Last: base + n - 1}
		}
	}
	t.Fatal("no free port range")
	return PortRange{}
}

// Every device gets a port of its own, the same one again after a restart
// of the process, a port another process holds is skipped, and a full range
// says so (the Node then gets the shared port).
func TestKubeletPortsPerDevice(t *testing.T) {
	r := freeRange(t, 3)
	k := newKubeletPorts("127.0.0.1", r, slog.Default())
	a, okA := k.port("dev-a")
	b, okB := k.port("dev-b")
	if !okA || !okB || a == b || a < r.First || a > r.Last || b < r.First || b > r.Last {
		t.Fatalf("ports %d %v, %d %v in %v", a, okA, b, okB, r)
	}
	if again, _ := k.port("dev-a"); again != a {
		t.Errorf("dev-a got %d, then %d", a, again)
	}
	c, okC := k.port("dev-c")
	if _, ok := k.port("dev-d"); ok || !okC {
		t.Errorf("a fourth device in a range of three got a port (dev-c: %d %v)", c, okC)
	}
	k.close()

	// A restart: dev-a gets its port back.
	k2 := newKubeletPorts("127.0.0.1", r, slog.Default())
	defer k2.close()
	if again, _ := k2.port("dev-a"); again != a {
		t.Errorf("after a restart dev-a got %d, was %d", again, a)
	}
	// Another process holds dev-b's port: dev-b gets another.
	hold, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(b))
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	if got, ok := k2.port("dev-b"); !ok || got == b || got == a {
		t.Errorf("dev-b got %d %v with %d taken", got, ok, b)
	}
	// Connections on a device's port carry the device.
	ln := k2.listener(nil)
	defer ln.Close()
	conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(a))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if dc, ok := got.(*deviceConn); !ok || dc.device != "dev-a" {
		t.Errorf("accepted %T %+v, want dev-a's", got, got)
	}
	// A released port closes.
	k2.release("dev-a")
	if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(a)); err == nil {
		c.Close()
		t.Errorf("dev-a's port still accepts after release")
	}
}

// Hundreds of device ports cost no goroutine each: one acceptor serves
// them all, and every connection still carries its port's device.
func TestManyKubeletPortsShareOneAcceptor(t *testing.T) {
	const n = 200
	r := freeRange(t, n)
	k := newKubeletPorts("127.0.0.1", r, slog.Default())
	defer k.close()
	ln := k.listener(nil)
	defer ln.Close()
	if _, ok := k.port("warm-up"); !ok {
		t.Fatal("no port")
	}
	before := runtime.NumGoroutine()
	ports := map[string]int{}
	for i := range n - 1 {
		dev := "dev-" + strconv.Itoa(i)
		p, ok := k.port(dev)
		if !ok {
			t.Fatalf("%s got no port", dev)
		}
		ports[dev] = p
	}
	if grew := runtime.NumGoroutine() - before; grew > 5 {
		t.Errorf("%d device ports took %d goroutines", n-1, grew)
	}
	for _, dev := range []string{"dev-0", "dev-77", "dev-198"} {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(ports[dev]))
		if err != nil {
			t.Fatal(err)
		}
		got, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if dc, ok := got.(*deviceConn); !ok || dc.device != dev {
			t.Errorf("a connection to %s's port accepted as %+v", dev, got)
		}
		// The connection works both ways.
		go func() { _, _ = c.Write([]byte("ping")) }()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(got, buf); err != nil || string(buf) != "ping" {
			t.Errorf("read %q, %v", buf, err)
		}
		got.Close()
		c.Close()
	}
}
