package natsd

import (
	"net"
	"testing"

	"github.com/nats-io/nats.go"
)

// A server started with ListenLater takes in-process connections at once
// and no client from the network until Listen.
func TestListenLaterKeepsClientsOutUntilListen(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	srv, err := Start(t.Context(), Config{Listen: addr, StoreDir: t.TempDir(), ListenLater: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)

	inproc, err := nats.Connect("", nats.InProcessServer(srv.Inner()))
	if err != nil {
		t.Fatalf("in-process connection before Listen: %v", err)
	}
	defer inproc.Close()
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("%s accepted a connection before Listen", addr)
	}

	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatalf("a second Listen: %v", err)
	}
	if got, want := srv.ClientURL(), "nats://"+addr; got != want {
		t.Errorf("ClientURL %s, want %s", got, want)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatalf("connecting after Listen: %v", err)
	}
	nc.Close()
}

// Listen reports a listener that could not be opened.
func TestListenReportsATakenPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv, err := Start(t.Context(), Config{Listen: l.Addr().String(), StoreDir: t.TempDir(), ListenLater: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	if err := srv.Listen(); err == nil {
		t.Fatalf("Listen on %s, which another listener holds, reported no error", l.Addr())
	}
}
