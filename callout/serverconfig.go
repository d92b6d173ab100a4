package callout

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
)

// Static users that bypass the callout: the callout service itself, and the
// vk-fleet process that embeds the server. They exist only in the embedded
// server's configuration, with random passwords made at every start.
const (
	CalloutUser  = "vkf-callout"
	ProviderUser = "vkf-provider"
)

// EmbeddedUsers holds the bypass users' passwords.
type EmbeddedUsers struct {
	CalloutPassword  string
	ProviderPassword string
}

// NewEmbeddedUsers makes random passwords.
func NewEmbeddedUsers() EmbeddedUsers {
	return EmbeddedUsers{CalloutPassword: randomHex(24), ProviderPassword: randomHex(24)}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// authTimeout is how long the server waits for a connection to be
// authorized, the auth callout's answer included: long enough for the
// callout to work through a whole fleet reconnecting at once, and shorter
// than a device's own connect timeout (20 s), so that a device that is
// refused hears why instead of timing out.
const authTimeout = 15

// ServerConfig returns nats-server configuration that routes every
// connection except the two bypass users through the callout: accounts AUTH
// (the callout's), FLEET (JetStream; devices and the provider) and SYS.
// The server must also set Options.AlwaysEnableNonce (no configuration key
// exists for it), so that devices can sign a nonce with their nkey.
func ServerConfig(keys Keys, u EmbeddedUsers) string {
	var b strings.Builder
	fmt.Fprintf(&b, `accounts {
  %s { users: [ { user: %q, password: %q } ] }
  %s { jetstream: enabled, users: [ { user: %q, password: %q } ] }
  SYS { }
}
system_account: SYS
authorization {
  timeout: %d
  auth_callout {
    issuer: %q
    account: %s
    auth_users: [ %q, %q ]
`, AuthAccount, CalloutUser, u.CalloutPassword, FleetAccount, ProviderUser, u.ProviderPassword,
		authTimeout, keys.IssuerPublic(), AuthAccount, CalloutUser, ProviderUser)
	if x := keys.XKeyPublic(); x != "" {
		fmt.Fprintf(&b, "    xkey: %q\n", x)
	}
	b.WriteString("  }\n}\n")
	return b.String()
}
