package kem

import (
	"crypto/mlkem"
	"crypto/sha3"
	"errors"
	"fmt"
)

// TypeKyber1024 is libsignal's key type byte for round-3 Kyber-1024
// (rust/protocol/src/kem.rs, KeyType::Kyber1024). It prefixes both public
// keys and ciphertexts.
const TypeKyber1024 = 0x08

// Sizes, from the Kyber round-3 specification v3.02 Table 1 (equal to FIPS
// 203 Table 3 for ML-KEM-1024).
const (
	PublicKeySize            = mlkem.EncapsulationKeySize1024 // 1568
	CiphertextSize           = mlkem.CiphertextSize1024       // 1568
	SerializedPublicKeySize  = 1 + PublicKeySize
	SerializedCiphertextSize = 1 + CiphertextSize
	SeedSize                 = mlkem.SeedSize // 64: d ‖ z
	SharedSecretSize         = 32
)

var (
	// ErrInvalidKey reports a public key or seed that is malformed: wrong
	// type byte, wrong length, or (FIPS 203 §7.2) unreduced coefficients.
	ErrInvalidKey = errors.New("kem: invalid key")
	// ErrInvalidCiphertext reports a ciphertext of the wrong type or
	// length. A ciphertext of the right shape never fails: see the
	// package documentation on implicit rejection.
	ErrInvalidCiphertext = errors.New("kem: invalid ciphertext")
)

// PublicKey is a Kyber-1024 public (encapsulation) key.
type PublicKey struct {
	ek *mlkem.EncapsulationKey1024
}

// PrivateKey is a Kyber-1024 private (decapsulation) key, kept as its
// ML-KEM seed.
type PrivateKey struct {
	dk *mlkem.DecapsulationKey1024
}

// ParsePublicKey decodes TypeKyber1024 ‖ 1568 bytes, the form libsignal
// serializes.
func ParsePublicKey(b []byte) (*PublicKey, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty encoding", ErrInvalidKey)
	}
	if b[0] != TypeKyber1024 {
		return nil, fmt.Errorf("%w: key type 0x%02x, want 0x%02x", ErrInvalidKey, b[0], TypeKyber1024)
	}
	if len(b) != SerializedPublicKeySize {
		return nil, fmt.Errorf("%w: length %d, want %d", ErrInvalidKey, len(b), SerializedPublicKeySize)
	}
	ek, err := mlkem.NewEncapsulationKey1024(b[1:])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	return &PublicKey{ek: ek}, nil
}

// Serialize returns TypeKyber1024 ‖ the 1568-byte public key.
func (p *PublicKey) Serialize() []byte {
	out := make([]byte, 0, SerializedPublicKeySize)
	out = append(out, TypeKyber1024)
	return append(out, p.ek.Bytes()...)
}

// Encapsulate returns a fresh ciphertext for p, serialized as libsignal
// puts it in PreKeySignalMessage.kyber_ciphertext (TypeKyber1024 ‖ 1568
// bytes), and the 32-byte shared secret. Randomness comes from
// crypto/rand inside crypto/mlkem.
func (p *PublicKey) Encapsulate() (ciphertext []byte, sharedSecret []byte, err error) {
	k, c := p.ek.Encapsulate()
	ct := make([]byte, 0, SerializedCiphertextSize)
	ct = append(ct, TypeKyber1024)
	ct = append(ct, c...)
	return ct, kyberKDF(k, c), nil
}

// kyberKDF is the last step of round-3 Kyber.CCAKEM.Enc and .Dec (spec
// v3.02, Algorithms 8 and 9): K = KDF(K̄ ‖ H(c)), KDF = SHAKE-256 with a
// 32-byte output and H = SHA3-256. kbar is ML-KEM's shared key, which is
// round-3's K̄ (see doc.go); c is the raw ciphertext without type byte.
func kyberKDF(kbar, c []byte) []byte {
	hc := sha3.Sum256(c)
	in := make([]byte, 0, len(kbar)+len(hc))
	in = append(in, kbar...)
	in = append(in, hc[:]...)
	return sha3.SumSHAKE256(in, SharedSecretSize)
}

// GenerateKey returns a new random private key.
func GenerateKey() (*PrivateKey, error) {
	dk, err := mlkem.GenerateKey1024()
	if err != nil {
		return nil, fmt.Errorf("kem: generating key: %w", err)
	}
	return &PrivateKey{dk: dk}, nil
}

// NewPrivateKey rebuilds a private key from its 64-byte seed (d ‖ z, FIPS
// 203 §7.1 ML-KEM.KeyGen_internal), as returned by Seed.
func NewPrivateKey(seed []byte) (*PrivateKey, error) {
	if len(seed) != SeedSize {
		return nil, fmt.Errorf("%w: seed length %d, want %d", ErrInvalidKey, len(seed), SeedSize)
	}
	dk, err := mlkem.NewDecapsulationKey1024(seed)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	return &PrivateKey{dk: dk}, nil
}

// Seed returns the 64-byte seed that NewPrivateKey accepts: the form in
// which Magpie stores Kyber private keys. It is secret.
func (k *PrivateKey) Seed() []byte {
	return k.dk.Bytes()
}

// PublicKey returns the public key of k.
func (k *PrivateKey) PublicKey() *PublicKey {
	return &PublicKey{ek: k.dk.EncapsulationKey()}
}

// Decapsulate returns the shared secret for a ciphertext serialized as
// Encapsulate returns it (TypeKyber1024 ‖ 1568 bytes). A ciphertext of the
// right type and length always yields 32 bytes; if it was not made for k,
// they are a pseudorandom rejection value (see doc.go).
func (k *PrivateKey) Decapsulate(ciphertext []byte) ([]byte, error) {
	if len(ciphertext) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrInvalidCiphertext)
	}
	if ciphertext[0] != TypeKyber1024 {
		return nil, fmt.Errorf("%w: key type 0x%02x, want 0x%02x", ErrInvalidCiphertext, ciphertext[0], TypeKyber1024)
	}
	if len(ciphertext) != SerializedCiphertextSize {
		return nil, fmt.Errorf("%w: length %d, want %d", ErrInvalidCiphertext, len(ciphertext), SerializedCiphertextSize)
	}
	c := ciphertext[1:]
	kbar, err := k.dk.Decapsulate(c)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCiphertext, err)
	}
	return kyberKDF(kbar, c), nil
}
