package callout

import (
	"fmt"

	"github.com/nats-io/nkeys"
)

// Keys are the callout's signing key (an account nkey, whose public key is
// the auth_callout issuer) and its optional curve key for encryption.
type Keys struct {
	Issuer nkeys.KeyPair
	XKey   nkeys.KeyPair // nil disables encryption
}

// GenerateKeys returns a fresh issuer and xkey.
func GenerateKeys() (Keys, error) {
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		return Keys{}, fmt.Errorf("creating issuer key: %w", err)
	}
	xkey, err := nkeys.CreateCurveKeys()
	if err != nil {
		return Keys{}, fmt.Errorf("creating xkey: %w", err)
	}
	return Keys{Issuer: issuer, XKey: xkey}, nil
}

// KeysFromSeeds loads keys from their seeds; xkeySeed may be empty.
func KeysFromSeeds(issuerSeed, xkeySeed []byte) (Keys, error) {
	issuer, err := nkeys.FromSeed(issuerSeed)
	if err != nil {
		return Keys{}, fmt.Errorf("loading issuer seed: %w", err)
	}
	if pub, _ := issuer.PublicKey(); !nkeys.IsValidPublicAccountKey(pub) {
		return Keys{}, fmt.Errorf("issuer seed is not an account key")
	}
	k := Keys{Issuer: issuer}
	if len(xkeySeed) > 0 {
		if k.XKey, err = nkeys.FromCurveSeed(xkeySeed); err != nil {
			return Keys{}, fmt.Errorf("loading xkey seed: %w", err)
		}
	}
	return k, nil
}

// IssuerPublic is the public issuer key for the server's auth_callout.
func (k Keys) IssuerPublic() string {
	p, _ := k.Issuer.PublicKey()
	return p
}

// XKeyPublic is the public xkey, or "".
func (k Keys) XKeyPublic() string {
	if k.XKey == nil {
		return ""
	}
	p, _ := k.XKey.PublicKey()
	return p
}
