// Package curve holds Curve25519 (X25519) keys in the form the Signal
// protocol uses them: 32-byte scalars and u-coordinates, with public keys
// serialized behind a one-byte key type, as libsignal does.
//
// Diffie-Hellman is RFC 7748 X25519 through the standard library's
// crypto/ecdh. Signatures over these same keys are XEdDSA; see the sibling
// package e2e/xeddsa.
package curve

import (
	"crypto/ecdh"
	"errors"
	"fmt"
	"io"
)

// TypeDJB is the key type byte that libsignal puts in front of a Curve25519
// public key when it serializes one (its KeyType::Djb, named after
// D. J. Bernstein). It is the only curve type Signal defines.
const TypeDJB = 0x05

// Sizes of the encodings in this package.
const (
	// KeySize is the size of a scalar or a u-coordinate (RFC 7748 §5).
	KeySize = 32
	// SerializedPublicKeySize is TypeDJB followed by the u-coordinate.
	SerializedPublicKeySize = 1 + KeySize
	// SharedSecretSize is the size of an X25519 output.
	SharedSecretSize = 32
)

var (
	// ErrInvalidKey reports a public key encoding that is not TypeDJB
	// followed by exactly 32 bytes, or a scalar the X25519 implementation
	// refuses.
	ErrInvalidKey = errors.New("curve: invalid key")
	// ErrLowOrderPoint reports an X25519 result of all zeros, which means
	// the peer's public key was a point of small order (RFC 7748 §6.1:
	// "check for the all-zero value and abort if so"). Accepting it would
	// let a malicious peer force a known shared secret.
	ErrLowOrderPoint = errors.New("curve: low-order public key")
)

// PrivateKey is an X25519 private scalar. It is clamped on every use (RFC
// 7748 §5, decodeScalar25519), so any 32 bytes are a valid key; keys made by
// GenerateKeyPair are stored already clamped, which is also the form
// libsignal stores and serializes.
type PrivateKey [KeySize]byte

// PublicKey is an X25519 public key: the little-endian u-coordinate of a
// point on Curve25519 (RFC 7748 §5).
type PublicKey [KeySize]byte

// KeyPair is a private key together with its public key.
type KeyPair struct {
	Private PrivateKey
	Public  PublicKey
}

// Clamp applies RFC 7748 §5's decodeScalar25519 bit fixing: clear the
// three low bits (the scalar becomes a multiple of the cofactor 8), clear
// bit 255 and set bit 254.
func (k PrivateKey) Clamp() PrivateKey {
	k[0] &= 248
	k[31] &= 127
	k[31] |= 64
	return k
}

// GenerateKeyPair makes a new key pair from 32 bytes read from rand (use
// crypto/rand.Reader). The scalar is read here rather than by
// ecdh.Curve.GenerateKey so that a deterministic reader gives a
// deterministic key, which tests rely on; it is stored clamped.
func GenerateKeyPair(rand io.Reader) (KeyPair, error) {
	var k PrivateKey
	if _, err := io.ReadFull(rand, k[:]); err != nil {
		return KeyPair{}, fmt.Errorf("curve: reading randomness: %w", err)
	}
	k = k.Clamp()
	pub, err := k.PublicKey()
	if err != nil {
		return KeyPair{}, err
	}
	return KeyPair{Private: k, Public: pub}, nil
}

// ecdhKey converts k for crypto/ecdh, which clamps internally as RFC 7748
// requires.
func (k PrivateKey) ecdhKey() (*ecdh.PrivateKey, error) {
	key, err := ecdh.X25519().NewPrivateKey(k[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	return key, nil
}

// PublicKey returns X25519(k, 9), the public key of k (RFC 7748 §6.1).
func (k PrivateKey) PublicKey() (PublicKey, error) {
	key, err := k.ecdhKey()
	if err != nil {
		return PublicKey{}, err
	}
	var pub PublicKey
	copy(pub[:], key.PublicKey().Bytes())
	return pub, nil
}

// ECDH returns X25519(k, pub). As RFC 7748 §5 requires, the top bit of pub
// is ignored and non-canonical u-coordinates are accepted. An all-zero
// result (pub of small order) is refused with ErrLowOrderPoint, per §6.1.
func (k PrivateKey) ECDH(pub PublicKey) ([SharedSecretSize]byte, error) {
	var out [SharedSecretSize]byte
	key, err := k.ecdhKey()
	if err != nil {
		return out, err
	}
	peer, err := ecdh.X25519().NewPublicKey(pub[:])
	if err != nil {
		return out, fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	secret, err := key.ECDH(peer)
	if err != nil {
		// crypto/ecdh's only failure for X25519 is the all-zero output
		// check of RFC 7748 §6.1.
		return out, fmt.Errorf("%w: %w", ErrLowOrderPoint, err)
	}
	copy(out[:], secret)
	return out, nil
}

// Serialize returns TypeDJB followed by the 32-byte u-coordinate: the
// 33-byte form libsignal uses for identity keys, pre-keys and ratchet keys
// on the wire and as input to signatures and fingerprints.
func (p PublicKey) Serialize() []byte {
	out := make([]byte, SerializedPublicKeySize)
	out[0] = TypeDJB
	copy(out[1:], p[:])
	return out
}

// ParsePublicKey decodes the output of Serialize. It requires the TypeDJB
// prefix and exactly 33 bytes: libsignal rejects any other key type, and
// this package rejects trailing bytes too, so that one key has one
// encoding.
func ParsePublicKey(b []byte) (PublicKey, error) {
	var p PublicKey
	if len(b) == 0 {
		return p, fmt.Errorf("%w: empty encoding", ErrInvalidKey)
	}
	if b[0] != TypeDJB {
		return p, fmt.Errorf("%w: key type 0x%02x, want 0x%02x", ErrInvalidKey, b[0], TypeDJB)
	}
	if len(b) != SerializedPublicKeySize {
		return p, fmt.Errorf("%w: length %d, want %d", ErrInvalidKey, len(b), SerializedPublicKeySize)
	}
	copy(p[:], b[1:])
	return p, nil
}
