package link

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"

	"github.com/flynn/noise"
)

// KeyPair is a Curve25519 static key pair (Noise rev. 34 §4.1, DH functions).
type KeyPair struct {
	Private, Public [32]byte

	// key is Private parsed, when GenerateKey or KeyPairFromPrivate made
	// the pair: they already paid the scalar multiplication that
	// ecdh.NewPrivateKey costs, so a handshake with this pair need not pay
	// it again (see parsed). A KeyPair written as a literal has none, and
	// each of its handshakes parses it. It also means == on two KeyPairs
	// compares this pointer: compare Public instead.
	key *ecdh.PrivateKey
}

// GenerateKey returns a new key pair using 32 bytes from rand (crypto/rand if
// nil).
func GenerateKey(rand io.Reader) (KeyPair, error) {
	var priv [32]byte
	if rand == nil {
		rand = cryptoRand
	}
	if _, err := io.ReadFull(rand, priv[:]); err != nil {
		return KeyPair{}, fmt.Errorf("link: generate key: %w", err)
	}
	return KeyPairFromPrivate(priv)
}

// KeyPairFromPrivate derives the public key for priv. Every 32-byte string is
// a valid X25519 private key (it is clamped, RFC 7748 §5).
func KeyPairFromPrivate(priv [32]byte) (KeyPair, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return KeyPair{}, fmt.Errorf("link: private key: %w", err)
	}
	kp := KeyPair{Private: priv, key: k}
	copy(kp.Public[:], k.PublicKey().Bytes())
	return kp, nil
}

var cryptoRand = rand.Reader

var errLowOrder = errors.New("link: X25519 result is all zero (low-order public key)")

// x25519 is a noise.DHFunc built on crypto/ecdh. One instance serves a single
// handshake: it remembers the *ecdh.PrivateKey for the static and ephemeral
// keys it has seen, because ecdh.NewPrivateKey performs a full scalar
// multiplication to derive the public key, which would otherwise double the
// cost of every DH in the handshake. forget drops them once the handshake is
// over so the ephemeral secret does not outlive it (forward secrecy).
type x25519 struct {
	cache [2]struct {
		raw []byte // identity of the slice flynn/noise passes back to DH
		key *ecdh.PrivateKey
	}
}

func (d *x25519) GenerateKeypair(r io.Reader) (noise.DHKey, error) {
	if r == nil {
		r = cryptoRand
	}
	raw := make([]byte, 32)
	if _, err := io.ReadFull(r, raw); err != nil {
		return noise.DHKey{}, err
	}
	k, err := ecdh.X25519().NewPrivateKey(raw)
	if err != nil {
		return noise.DHKey{}, err
	}
	d.remember(1, raw, k)
	return noise.DHKey{Private: raw, Public: k.PublicKey().Bytes()}, nil
}

func (d *x25519) remember(i int, raw []byte, k *ecdh.PrivateKey) {
	d.cache[i].raw, d.cache[i].key = raw, k
}

func (d *x25519) lookup(priv []byte) *ecdh.PrivateKey {
	for i := range d.cache {
		c := &d.cache[i]
		// Pointer identity, not content comparison: no secret-dependent timing.
		if c.key != nil && len(priv) == 32 && len(c.raw) == 32 && &c.raw[0] == &priv[0] {
			return c.key
		}
	}
	return nil
}

// DH computes X25519(priv, pub). Noise rev. 34 §4.1 and §12.1 let DH
// signal an error for invalid public keys; we reject any that yield the all-zero shared
// secret (a low-order point), which crypto/ecdh reports as an error, and we
// check again here so that property does not rest on library internals.
func (d *x25519) DH(priv, pub []byte) ([]byte, error) {
	k := d.lookup(priv)
	if k == nil {
		var err error
		if k, err = ecdh.X25519().NewPrivateKey(priv); err != nil {
			return nil, err
		}
		d.remember(0, priv, k)
	}
	p, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	out, err := k.ECDH(p)
	if err != nil {
		return nil, errLowOrder
	}
	var acc byte
	for _, b := range out {
		acc |= b
	}
	if acc == 0 {
		return nil, errLowOrder
	}
	return out, nil
}

func (d *x25519) forget() {
	d.cache = [2]struct {
		raw []byte
		key *ecdh.PrivateKey
	}{}
}
func (*x25519) DHLen() int     { return 32 }
func (*x25519) DHName() string { return "25519" }

// newSuite returns Noise_*_25519_ChaChaPoly_BLAKE2b with a fresh DH cache.
func newSuite() (noise.CipherSuite, *x25519) {
	dh := new(x25519)
	return noise.NewCipherSuite(dh, noise.CipherChaChaPoly, noise.HashBLAKE2b), dh
}

// parsed returns kp's private key as an *ecdh.PrivateKey: the one kp was
// made with if its private bytes are still kp.Private (compared in constant
// time, since the fields are exported and may have been changed), else a
// fresh parse. Parsing derives the public key, a full scalar
// multiplication: it was one of the six in each server handshake, and of
// the load tool's, before KeyPair carried its parse. *ecdh.PrivateKey is
// immutable, so handshakes share it.
func (kp *KeyPair) parsed() (*ecdh.PrivateKey, error) {
	if kp.key != nil && subtle.ConstantTimeCompare(kp.key.Bytes(), kp.Private[:]) == 1 {
		return kp.key, nil
	}
	return ecdh.X25519().NewPrivateKey(kp.Private[:])
}

func (kp *KeyPair) dhKey() noise.DHKey {
	priv, pub := kp.Private, kp.Public
	return noise.DHKey{Private: priv[:], Public: pub[:]}
}
