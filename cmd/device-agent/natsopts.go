package main

import (
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
)

// Connection timing of a device, shared by the agent and its simulator.
const (
	// deviceConnectTimeout bounds dialing, the TLS handshake and the
	// server's answer to CONNECT, which waits for the auth callout. When a
	// whole fleet reconnects at once, thousands of handshakes share the
	// server's CPU and finish together: a device that gave up just before
	// (nats.go's default is 2 s; at 10 s, 610 of 2,000 devices reconnecting
	// at once did) tries again and adds to the queue it waited in. A slow
	// uplink needs the time too. vk-fleet's server gives an attempt up to
	// 15 s for its TLS handshake and then 15 s for the auth callout: a
	// device waits longer than both, so that it never walks away from an
	// attempt the server is still answering (at 20 s, 3,000 simulated
	// devices reconnecting at once gave up 1,024 times).
	deviceConnectTimeout = 35 * time.Second
	// reconnectBase and reconnectCap bound the back-off between failed
	// connection attempts.
	reconnectBase = 2 * time.Second
	reconnectCap  = 30 * time.Second
)

// reconnectDelay is the wait after the attempt-th failed connection attempt
// in a row: exponential from reconnectBase up to reconnectCap, each a random
// time between half and all of it, so that a fleet that lost its server
// at once does not come back at once, again and again.
func reconnectDelay(attempt int) time.Duration {
	d := reconnectCap
	if attempt < 6 {
		d = min(reconnectBase<<max(attempt-1, 0), reconnectCap)
	}
	return d/2 + rand.N(d/2+1)
}

// deviceNATSOptions are the connection options every device connection
// uses; inboxPrefix is the device's own inbox (its only subscribable
// subjects).
func deviceNATSOptions(name, inboxPrefix string) []nats.Option {
	return []nats.Option{
		nats.Name(name),
		nats.Timeout(deviceConnectTimeout),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(reconnectDelay),
		nats.CustomInboxPrefix(inboxPrefix),
		// nats.go gives up for good when a server refuses the same
		// credentials twice in a row. A device is unattended: a refusal
		// can pass (vk-fleet starting, its device cache behind an
		// enrollment, a revoked device enrolled again), so it keeps
		// trying, backing off as above.
		nats.IgnoreAuthErrorAbort(),
	}
}
