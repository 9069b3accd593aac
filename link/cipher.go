package link

import (
	"crypto/cipher"
	"encoding/binary"

	"github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"
)

// cipherState is a transport CipherState (Noise rev. 34 §5.1) for the
// ChaChaPoly cipher, the one this link's suite names. It does what
// flynn/noise's CipherState does, byte for byte, but keeps the nonce in
// place: flynn/noise allocates a fresh 12-byte nonce for every frame it
// seals or opens, two allocations per frame per link.
type cipherState struct {
	aead  cipher.AEAD
	n     uint64
	nonce [12]byte // 32 zero bits, then n little-endian (§12.3, ChaChaPoly)
}

// newCipherState takes over cs's key and nonce; cs must not be used after.
func newCipherState(cs *noise.CipherState) *cipherState {
	k := cs.UnsafeKey()
	aead, err := chacha20poly1305.New(k[:])
	if err != nil {
		panic(err) // only for a key of the wrong size, which [32]byte is not
	}
	return &cipherState{aead: aead, n: cs.Nonce()}
}

// Encrypt seals plaintext with the next nonce and appends it to out.
// Like flynn/noise, it refuses n = 2^64-1 (§5.1 reserves it).
func (s *cipherState) Encrypt(out, ad, plaintext []byte) ([]byte, error) {
	if s.n > noise.MaxNonce {
		return nil, noise.ErrMaxNonce
	}
	binary.LittleEndian.PutUint64(s.nonce[4:], s.n)
	out = s.aead.Seal(out, s.nonce[:], plaintext, ad)
	s.n++
	return out, nil
}

// Decrypt opens ciphertext with the next nonce and appends the plaintext
// to out. A frame that fails authentication does not use up the nonce.
func (s *cipherState) Decrypt(out, ad, ciphertext []byte) ([]byte, error) {
	if s.n > noise.MaxNonce {
		return nil, noise.ErrMaxNonce
	}
	binary.LittleEndian.PutUint64(s.nonce[4:], s.n)
	out, err := s.aead.Open(out, s.nonce[:], ciphertext, ad)
	if err != nil {
		return nil, err
	}
	s.n++
	return out, nil
}

// SetNonce sets the next nonce (tests).
func (s *cipherState) SetNonce(n uint64) { s.n = n }
