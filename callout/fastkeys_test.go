package callout

import (
	"bytes"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// The callout's cached keys must speak nkeys' own formats: the server
// opens what the callout seals and verifies what it signs with nkeys.
func TestCachedKeysSpeakNKeysFormats(t *testing.T) {
	keys, err := GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	server, _ := nkeys.CreateCurveKeys()
	serverPub, _ := server.PublicKey()
	ourPub := keys.XKeyPublic()
	b, err := newBoxer(keys.XKey)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("an authorization request")
	for range 2 { // the second time with the shared key cached
		sealed, err := server.Seal(msg, ourPub)
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.Open(sealed, serverPub)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("opening what nkeys sealed: %q, %v", got, err)
		}
		ours, err := b.Seal(msg, serverPub)
		if err != nil {
			t.Fatal(err)
		}
		got, err = server.Open(ours, ourPub)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("nkeys opening what we sealed: %q, %v", got, err)
		}
		// A box sealed for someone else does not open.
		other, _ := nkeys.CreateCurveKeys()
		otherPub, _ := other.PublicKey()
		forOther, _ := server.Seal(msg, otherPub)
		if _, err := b.Open(forOther, serverPub); err == nil {
			t.Fatal("opened a box sealed for another key")
		}
		tampered := bytes.Clone(sealed)
		tampered[len(tampered)-1] ^= 1
		if _, err := b.Open(tampered, serverPub); err == nil {
			t.Fatal("opened a tampered box")
		}
	}
	if _, err := b.Open([]byte("xkv1short"), serverPub); err == nil {
		t.Fatal("opened a truncated box")
	}
	if _, err := b.Seal(msg, "not-a-key"); err == nil {
		t.Fatal("sealed for an invalid key")
	}

	s := newSigner(keys.Issuer)
	if got, want := mustPub(t, s), keys.IssuerPublic(); got != want {
		t.Fatalf("public key %s, want %s", got, want)
	}
	user, _ := nkeys.CreateUser()
	userPub, _ := user.PublicKey()
	uc := jwt.NewUserClaims(userPub)
	tok, err := uc.Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := jwt.DecodeUserClaims(tok) // verifies the signature
	if err != nil {
		t.Fatalf("decoding a JWT the cached signer signed: %v", err)
	}
	if decoded.Issuer != keys.IssuerPublic() {
		t.Fatalf("issuer %s, want %s", decoded.Issuer, keys.IssuerPublic())
	}
	sig, _ := s.Sign(msg)
	if err := keys.Issuer.Verify(msg, sig); err != nil {
		t.Fatalf("nkeys rejects the cached signer's signature: %v", err)
	}
}

func mustPub(t *testing.T, kp nkeys.KeyPair) string {
	t.Helper()
	p, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func BenchmarkCalloutCrypto(b *testing.B) {
	keys, _ := GenerateKeys()
	server, _ := nkeys.CreateCurveKeys()
	serverPub, _ := server.PublicKey()
	user, _ := nkeys.CreateUser()
	userPub, _ := user.PublicKey()
	sealed, _ := server.Seal(make([]byte, 2048), keys.XKeyPublic())
	bx, _ := newBoxer(keys.XKey)
	for _, c := range []struct {
		name   string
		signer nkeys.KeyPair
		open   func([]byte, string) ([]byte, error)
		seal   func([]byte, string) ([]byte, error)
	}{
		{"nkeys", keys.Issuer, keys.XKey.Open, keys.XKey.Seal},
		{"cached", newSigner(keys.Issuer), bx.Open, bx.Seal},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := c.open(sealed, serverPub); err != nil {
					b.Fatal(err)
				}
				tok, err := jwt.NewUserClaims(userPub).Encode(c.signer)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.seal([]byte(tok), serverPub); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
