package senderkey

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"math"
)

// The symmetric ratchet of a sender key chain (sender_keys.rs:76-129): a
// chain key advances by HMAC-SHA256(ck, 0x02) and gives each message the
// seed HMAC-SHA256(ck, 0x01); HKDF-SHA256 expands the seed, without salt and
// with the info "WhisperGroup", to 48 bytes: the AES-CBC IV, then the
// AES-256 key (sender_keys.rs:34-45), for AES-256-CBC with PKCS#7 padding
// (cbc.go).
const messageKeysInfo = "WhisperGroup"

var (
	messageSeedInput = []byte{0x01}
	nextChainInput   = []byte{0x02}
)

// ChainKey is a chain's key at one iteration.
type ChainKey struct {
	Iteration uint32
	Key       [32]byte
}

func (c ChainKey) derive(input []byte) [32]byte {
	m := hmac.New(sha256.New, c.Key[:])
	m.Write(input)
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// Next returns the chain key of the next iteration, or ErrChainExhausted
// at iteration 2^32-1.
func (c ChainKey) Next() (ChainKey, error) {
	if c.Iteration == math.MaxUint32 {
		return ChainKey{}, ErrChainExhausted
	}
	return ChainKey{Iteration: c.Iteration + 1, Key: c.derive(nextChainInput)}, nil
}

// MessageKeys returns the keys of the message at this iteration.
func (c ChainKey) MessageKeys() MessageKeys { return NewMessageKeys(c.Iteration, c.seed()) }

// seed is the message seed at this iteration.
func (c ChainKey) seed() [32]byte { return c.derive(messageSeedInput) }

// MessageKeys are the keys of one message, and the seed they come from
// (which is what a chain keeps for a skipped message).
type MessageKeys struct {
	Iteration uint32
	Seed      [32]byte
	IV        [16]byte
	CipherKey [32]byte
}

// NewMessageKeys expands a message seed.
func NewMessageKeys(iteration uint32, seed [32]byte) MessageKeys {
	okm, err := hkdf.Key(sha256.New, seed[:], nil, messageKeysInfo, 48)
	if err != nil {
		panic("senderkey: hkdf: " + err.Error()) // only for lengths above 255*32
	}
	k := MessageKeys{Iteration: iteration, Seed: seed}
	copy(k.IV[:], okm[:16])
	copy(k.CipherKey[:], okm[16:])
	clear(okm)
	return k
}
