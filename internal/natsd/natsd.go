// Package natsd runs the NATS server embedded in vk-fleet, with JetStream,
// for small installs and tests.
package natsd

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config configures the embedded server.
type Config struct {
	// Listen is host:port for client connections; port 0 or -1 picks a free one.
	Listen string
	// StoreDir holds JetStream's files.
	StoreDir string
	// Name of the server. Default "vk-fleet".
	Name string
	// ConfigText is nats-server configuration (accounts, authorization)
	// applied before the fields above.
	ConfigText string
	// TLS, if set, serves client connections over TLS only.
	TLS *tls.Config
	// Gate, if set, admits client TLS handshakes (HandshakeGate).
	Gate *HandshakeGate
	// Options, if set, is applied last to the server options (auth, TLS).
	Options func(*server.Options) error
	// ListenLater starts the server with in-process connections only:
	// clients are accepted once Server.Listen is called (when whoever
	// answers their authorization is subscribed).
	ListenLater bool
	Logger      *slog.Logger
}

// Server is a running embedded NATS server.
type Server struct {
	s      *server.Server
	listen string
	once   sync.Once
	err    error
}

// Start starts the server and waits until it accepts connections.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("parsing listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("parsing listen port %q: %w", portStr, err)
	}
	if port == 0 {
		port = -1
	}
	name := cfg.Name
	if name == "" {
		name = "vk-fleet"
	}
	opts := &server.Options{}
	if cfg.ConfigText != "" {
		if err := opts.ProcessConfigString(cfg.ConfigText); err != nil {
			return nil, fmt.Errorf("parsing nats server configuration: %w", err)
		}
	}
	opts.ServerName = name
	opts.Host, opts.Port = host, port
	opts.DontListen = cfg.ListenLater
	opts.JetStream = true
	opts.StoreDir = cfg.StoreDir
	opts.NoSigs = true
	opts.MaxPayload = 8 << 20
	opts.JetStreamMaxMemory = 64 << 20
	// The server pings a new client 2 s after its CONNECT, whether or not
	// the client has been authorized yet. A client waiting for the answer
	// to its own PING (nats.go, while connecting) takes that PING for a
	// protocol error and drops the connection: every authorization slower
	// than 2 s — the auth callout working through a fleet reconnecting at
	// once, a device on a slow uplink — failed and was tried again, adding
	// to the queue it had waited in. The first ping comes at the regular
	// ping interval instead.
	opts.DisableShortFirstPing = true
	if cfg.TLS != nil {
		opts.TLSConfig = cfg.TLS
		if g := cfg.Gate; g != nil {
			// The server starts its side of a handshake once this
			// returns: a handshake that waits does no cryptography.
			opts.TLSConfig = cfg.TLS.Clone()
			next := cfg.TLS.GetConfigForClient
			opts.TLSConfig.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
				if err := g.Admit(hello.Context()); err != nil {
					return nil, err
				}
				if next != nil {
					return next(hello)
				}
				return nil, nil
			}
		}
		opts.TLS = true
		opts.TLSVerify = false
		// A fleet reconnecting at once shares the CPU among thousands
		// of handshakes, which finish together: at 5 s, 10,000 devices
		// reconnecting at once saw 2,466 handshakes closed just before
		// they completed. With the auth callout's 15 s, less than a device's
		// own connect timeout (35 s).
		opts.TLSTimeout = 15
	}
	if cfg.Options != nil {
		if err := cfg.Options(opts); err != nil {
			return nil, fmt.Errorf("configuring nats server: %w", err)
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("creating nats server: %w", err)
	}
	if cfg.Logger != nil {
		s.SetLoggerV2(&slogAdapter{l: cfg.Logger.With("component", "nats-server")}, false, false, false)
	}
	go s.Start()
	deadline := 30 * time.Second
	if d, ok := ctx.Deadline(); ok {
		deadline = time.Until(d)
	}
	if !s.ReadyForConnections(deadline) {
		s.Shutdown()
		return nil, fmt.Errorf("nats server not ready after %s", deadline)
	}
	srv := &Server{s: s, listen: cfg.Listen}
	if !cfg.ListenLater {
		srv.once.Do(func() {})
	}
	return srv, nil
}

// Listen opens the client listener of a server started with ListenLater
// and returns once it accepts connections; for any other server, or
// called again, it returns what the first call did.
func (s *Server) Listen() error {
	s.once.Do(func() {
		ready := make(chan struct{})
		s.s.AcceptLoop(ready)
		<-ready
		if s.s.Addr() == nil {
			// AcceptLoop has logged why.
			s.err = fmt.Errorf("nats server not listening on %s", s.listen)
		}
	})
	return s.err
}

// DisconnectClient closes a client connection by its ID.
func (s *Server) DisconnectClient(cid uint64) error { return s.s.DisconnectClientByID(cid) }

// ClientURL is the URL clients connect to.
func (s *Server) ClientURL() string { return s.s.ClientURL() }

// Inner returns the nats-server instance.
func (s *Server) Inner() *server.Server { return s.s }

// Shutdown stops the server and waits for it.
func (s *Server) Shutdown() {
	s.s.Shutdown()
	s.s.WaitForShutdown()
}

type slogAdapter struct{ l *slog.Logger }

func (a *slogAdapter) Noticef(f string, v ...any) { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a *slogAdapter) Warnf(f string, v ...any)   { a.l.Warn(fmt.Sprintf(f, v...)) }
func (a *slogAdapter) Fatalf(f string, v ...any)  { a.l.Error(fmt.Sprintf(f, v...)) }
func (a *slogAdapter) Errorf(f string, v ...any)  { a.l.Error(fmt.Sprintf(f, v...)) }
func (a *slogAdapter) Debugf(f string, v ...any)  { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a *slogAdapter) Tracef(f string, v ...any)  { a.l.Debug(fmt.Sprintf(f, v...)) }
