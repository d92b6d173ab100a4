package callout

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/nacl/box"
)

// The callout signs two JWTs and opens and seals one box per connection
// admitted, thousands a minute when a fleet (re)connects at once. nkeys
// derives the ed25519 key from the seed on every PublicKey and Sign call
// (a scalar multiplication each), and nacl's box computes the shared key
// of the server's and the callout's curve keys on every Seal and Open
// (another): fixed keys, computed once here instead. The wire formats are
// nkeys' own, so the server cannot tell.

// signer is an nkeys.KeyPair whose public and private keys are derived
// once.
type signer struct {
	nkeys.KeyPair
	pub  string
	priv ed25519.PrivateKey
}

// newSigner returns kp with its keys derived once, or kp itself if they
// cannot be.
func newSigner(kp nkeys.KeyPair) nkeys.KeyPair {
	seed, err := kp.Seed()
	if err != nil {
		return kp
	}
	_, raw, err := nkeys.DecodeSeed(seed)
	if err != nil || len(raw) != ed25519.SeedSize {
		return kp
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return kp
	}
	return &signer{KeyPair: kp, pub: pub, priv: ed25519.NewKeyFromSeed(raw)}
}

func (s *signer) PublicKey() (string, error) { return s.pub, nil }

func (s *signer) Sign(input []byte) ([]byte, error) { return ed25519.Sign(s.priv, input), nil }

// xkeyVersion and nonceLen are nkeys' sealed-box framing: version, nonce,
// box.
const (
	xkeyVersion = nkeys.XKeyVersionV1
	nonceLen    = 24
)

// boxer seals and opens nkeys xkey boxes between one private curve key and
// its peers, each peer's shared key computed once.
type boxer struct {
	priv   [32]byte
	mu     sync.Mutex
	shared map[string]*[32]byte // peer's public xkey → shared key
}

// newBoxer returns a boxer for the curve key pair kp.
func newBoxer(kp nkeys.KeyPair) (*boxer, error) {
	seed, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("reading xkey seed: %w", err)
	}
	prefix, raw, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("decoding xkey seed: %w", err)
	}
	if prefix != nkeys.PrefixByteCurve || len(raw) != 32 {
		return nil, errors.New("xkey seed is not a curve key")
	}
	b := &boxer{shared: map[string]*[32]byte{}}
	copy(b.priv[:], raw)
	return b, nil
}

// sharedKey returns the shared key with peer's public xkey.
func (b *boxer) sharedKey(peer string) (*[32]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if k, ok := b.shared[peer]; ok {
		return k, nil
	}
	raw, err := nkeys.Decode(nkeys.PrefixByteCurve, []byte(peer))
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("invalid peer xkey %q", peer)
	}
	var pub [32]byte
	copy(pub[:], raw)
	k := new([32]byte)
	box.Precompute(k, &pub, &b.priv)
	// Servers are few (one per replica), but the header is the sender's
	// word: do not let it grow the cache without bound.
	if len(b.shared) >= 64 {
		clear(b.shared)
	}
	b.shared[peer] = k
	return k, nil
}

// Open opens a box peer sealed for us (nkeys' KeyPair.Open).
func (b *boxer) Open(input []byte, peer string) ([]byte, error) {
	if len(input) <= len(xkeyVersion)+nonceLen || !bytes.HasPrefix(input, []byte(xkeyVersion)) {
		return nil, nkeys.ErrInvalidEncrypted
	}
	k, err := b.sharedKey(peer)
	if err != nil {
		return nil, err
	}
	var nonce [nonceLen]byte
	copy(nonce[:], input[len(xkeyVersion):])
	out, ok := box.OpenAfterPrecomputation(nil, input[len(xkeyVersion)+nonceLen:], &nonce, k)
	if !ok {
		return nil, nkeys.ErrCouldNotDecrypt
	}
	return out, nil
}

// Seal seals input for peer (nkeys' KeyPair.Seal).
func (b *boxer) Seal(input []byte, peer string) ([]byte, error) {
	k, err := b.sharedKey(peer)
	if err != nil {
		return nil, err
	}
	var nonce [nonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(xkeyVersion)+nonceLen+len(input)+box.Overhead)
	out = append(append(out, xkeyVersion...), nonce[:]...)
	return box.SealAfterPrecomputation(out, input, &nonce, k), nil
}
