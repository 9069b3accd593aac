package vault

import (
	"encoding/binary"
	"fmt"
)

// Mode says how a store's key is obtained.
type Mode uint8

const (
	ModePassphrase Mode = 1 // Argon2id from a passphrase
	ModeRawKey     Mode = 2 // raw 32-byte key, no KDF
)

func (m Mode) String() string {
	switch m {
	case ModePassphrase:
		return "passphrase"
	case ModeRawKey:
		return "raw key"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Header is stored in clear next to the encrypted data. It holds the mode,
// the Argon2id salt and parameters (passphrase mode only) and the key check
// value. It contains no secret; it lets a wrong passphrase or key be
// detected, at the cost of one full Argon2id run per guess.
//
// Encoding (big-endian), version 1:
//
//	"MGPV" | version=1 | mode
//	mode 1 (passphrase) only: time u32 | memoryKiB u32 | threads u8 | salt [16]
//	check nonce [24] | check value [len(checkConstant)+16]
//
// The zero Header is invalid; obtain one from NewFromPassphrase, NewFromKey
// or UnmarshalBinary.
type Header struct {
	mode       Mode
	params     Params
	salt       [SaltSize]byte
	checkNonce [NonceSize]byte
	checkValue [checkValueSize]byte
}

const (
	headerMagic    = "MGPV"
	headerVersion  = 1
	checkValueSize = 25 + 16 // len(checkConstant) + Poly1305 tag
	prefixSize     = len(headerMagic) + 2
	paramsSize     = 4 + 4 + 1 + SaltSize
	checkSize      = NonceSize + checkValueSize
	// HeaderSizeRawKey and HeaderSizePassphrase are the encoded sizes.
	HeaderSizeRawKey     = prefixSize + checkSize
	HeaderSizePassphrase = prefixSize + paramsSize + checkSize
)

// Mode reports how the store's key is obtained.
func (h Header) Mode() Mode { return h.mode }

// Params returns the Argon2id parameters; ok is false in raw-key mode.
func (h Header) Params() (p Params, ok bool) {
	return h.params, h.mode == ModePassphrase
}

func (h Header) validate() error {
	switch h.mode {
	case ModePassphrase:
		if err := h.params.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrBadHeader, err)
		}
	case ModeRawKey:
		if h.params != (Params{}) {
			return fmt.Errorf("%w: raw-key header with Argon2id parameters", ErrBadHeader)
		}
	default:
		return fmt.Errorf("%w: unknown mode %d", ErrBadHeader, uint8(h.mode))
	}
	return nil
}

// clearPart is the encoding up to (not including) the check nonce; it is
// the associated data of the check value, so that mode, salt and parameters
// cannot be changed without the check failing.
func (h Header) clearPart() []byte {
	b := make([]byte, 0, HeaderSizePassphrase)
	b = append(b, headerMagic...)
	b = append(b, headerVersion, byte(h.mode))
	if h.mode == ModePassphrase {
		b = binary.BigEndian.AppendUint32(b, h.params.Time)
		b = binary.BigEndian.AppendUint32(b, h.params.MemoryKiB)
		b = append(b, h.params.Threads)
		b = append(b, h.salt[:]...)
	}
	return b
}

// MarshalBinary encodes h. It fails on an invalid (for example zero) Header.
func (h Header) MarshalBinary() ([]byte, error) {
	if err := h.validate(); err != nil {
		return nil, err
	}
	b := h.clearPart()
	b = append(b, h.checkNonce[:]...)
	b = append(b, h.checkValue[:]...)
	return b, nil
}

// UnmarshalBinary decodes data into h. It rejects unknown magic, version
// or mode, wrong lengths (including trailing bytes) and out-of-range
// Argon2id parameters, returning an error wrapping ErrBadHeader. On error
// h is left unchanged.
func (h *Header) UnmarshalBinary(data []byte) error {
	if len(data) < prefixSize {
		return fmt.Errorf("%w: %d bytes is too short", ErrBadHeader, len(data))
	}
	if string(data[:len(headerMagic)]) != headerMagic {
		return fmt.Errorf("%w: not a Magpie vault header", ErrBadHeader)
	}
	if v := data[len(headerMagic)]; v != headerVersion {
		return fmt.Errorf("%w: unsupported version %d", ErrBadHeader, v)
	}
	var n Header
	n.mode = Mode(data[len(headerMagic)+1])
	want := 0
	switch n.mode {
	case ModePassphrase:
		want = HeaderSizePassphrase
	case ModeRawKey:
		want = HeaderSizeRawKey
	default:
		return fmt.Errorf("%w: unknown mode %d", ErrBadHeader, uint8(n.mode))
	}
	if len(data) != want {
		return fmt.Errorf("%w: %s header is %d bytes, want %d", ErrBadHeader, n.mode, len(data), want)
	}
	rest := data[prefixSize:]
	if n.mode == ModePassphrase {
		n.params.Time = binary.BigEndian.Uint32(rest[0:4])
		n.params.MemoryKiB = binary.BigEndian.Uint32(rest[4:8])
		n.params.Threads = rest[8]
		copy(n.salt[:], rest[9:9+SaltSize])
		rest = rest[paramsSize:]
	}
	copy(n.checkNonce[:], rest[:NonceSize])
	copy(n.checkValue[:], rest[NonceSize:])
	if err := n.validate(); err != nil {
		return err
	}
	*h = n
	return nil
}
