package link

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/flynn/noise"
)

// KeyPair is a Curve25519 static key pair (Noise rev. 34 §4.1, DH functions).
type KeyPair struct{ Private, Public [32]byte }

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
	kp := KeyPair{Private: priv}
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

// staticKeys remembers parsed static private keys across handshakes. A
// server answers every connection with the same static key, and parsing it
// (ecdh.NewPrivateKey derives the public key: a full scalar multiplication)
// was one of the six multiplications in each server handshake. Entries are
// keyed by the public key and a hit is confirmed against the private bytes
// in constant time, so a KeyPair whose halves do not match never gets
// another key's secret. The map is bounded: a load tool that makes
// thousands of device keys just empties it now and then.
var staticKeys struct {
	sync.Mutex
	m map[[32]byte]*ecdh.PrivateKey
}

const maxStaticKeys = 64

// parsed returns kp's private key as an *ecdh.PrivateKey, from staticKeys
// when it is there. *ecdh.PrivateKey is immutable, so handshakes share it.
func (kp *KeyPair) parsed() (*ecdh.PrivateKey, error) {
	staticKeys.Lock()
	k := staticKeys.m[kp.Public]
	staticKeys.Unlock()
	if k != nil && subtle.ConstantTimeCompare(k.Bytes(), kp.Private[:]) == 1 {
		return k, nil
	}
	k, err := ecdh.X25519().NewPrivateKey(kp.Private[:])
	if err != nil {
		return nil, err
	}
	staticKeys.Lock()
	if staticKeys.m == nil || len(staticKeys.m) >= maxStaticKeys {
		staticKeys.m = make(map[[32]byte]*ecdh.PrivateKey)
	}
	staticKeys.m[kp.Public] = k
	staticKeys.Unlock()
	return k, nil
}

func (kp *KeyPair) dhKey() noise.DHKey {
	priv, pub := kp.Private, kp.Public
	return noise.DHKey{Private: priv[:], Public: pub[:]}
}
