// Package vault encrypts the client's local data at rest.
//
// A Vault holds a 256-bit data key, derived either from a passphrase with
// Argon2id (RFC 9106) or supplied directly as a raw 32-byte key for headless
// use. A Header, stored in clear next to the encrypted data, records how the
// key was obtained (salt and Argon2id parameters, or "raw key" mode) and a
// key check value, so that a wrong passphrase or key is reported as
// ErrWrongPassphrase / ErrWrongKey instead of yielding garbage.
//
// # Key schedule
//
// The master secret (Argon2id output, or the raw key) is never used directly.
// Two independent subkeys are derived from it with HKDF-SHA256 (crypto/hkdf):
// one for the key check value and one for data. This keeps the check value
// and stored values in separate domains, so no stored value can ever be
// mistaken for the check value or vice versa.
//
// The check value is an AEAD seal of a fixed constant under the check subkey,
// with the clear part of the header (mode, salt, parameters) as associated
// data. Testing a passphrase guess against a header therefore costs one full
// Argon2id run with the recorded parameters: there is no cheaper offline
// test. Tampering with the recorded parameters or salt makes the check fail
// (it is reported as a wrong passphrase, since the two cannot be told apart).
//
// # Cipher
//
// Values are sealed with XChaCha20-Poly1305 (golang.org/x/crypto/chacha20poly1305)
// under a fresh random 192-bit nonce, which is prepended to the ciphertext.
// We chose it over AES-256-GCM with random 96-bit nonces because one key
// encrypts a store for its whole life (every message, every session-state
// rewrite), and random 96-bit nonces must stay below about 2^32 seals per key
// to keep the collision probability under 2^-32 (NIST SP 800-38D §8.3); a
// nonce collision under GCM leaks the XOR of two plaintexts and the
// authentication key. With 192-bit nonces the same 2^-32 collision bound is
// only reached after about 2^80 seals, so there is no practical limit and no
// counter state to keep. It is also constant-time in software on devices
// without AES instructions. The cost is 12 extra bytes per value.
//
// # Secrets
//
// Intermediate key material (Argon2id output, HKDF output, decoded keys) is
// zeroed as soon as the AEAD has been built. The AEAD itself keeps a copy of
// the data key that Go gives us no way to wipe; it lives as long as the Vault.
// Nothing in this package logs or formats a secret into an error.
package vault

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// Params are the Argon2id parameters. DefaultParams is the second
// recommended option of RFC 9106 §4 (t=3, m=64 MiB, p=4); the key is always
// 32 bytes and the salt 16 bytes.
type Params struct {
	Time      uint32 // passes over memory, t
	MemoryKiB uint32 // memory in KiB, m
	Threads   uint8  // lanes, p
}

// DefaultParams is RFC 9106 §4's second recommended option.
var DefaultParams = Params{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

// Bounds on Argon2id parameters. A header is read from disk, and whoever can
// write the file could otherwise make the client allocate terabytes or spin
// for hours before it even asks for the passphrase.
const (
	MaxTime      = 64
	MaxMemoryKiB = 2 * 1024 * 1024 // 2 GiB
	MaxThreads   = 64
)

// MaxPassphraseLen bounds the passphrase length in bytes.
const MaxPassphraseLen = 4096

const (
	// KeySize is the size of a raw key and of the derived data key.
	KeySize = 32
	// SaltSize is the Argon2id salt size.
	SaltSize = 16
	// NonceSize is the XChaCha20-Poly1305 nonce size.
	NonceSize = chacha20poly1305.NonceSizeX
	// Overhead is how many bytes Seal adds to the plaintext: the nonce and
	// the Poly1305 tag.
	Overhead = NonceSize + chacha20poly1305.Overhead
)

// Errors returned by this package. Test with errors.Is.
var (
	// ErrWrongPassphrase: the passphrase does not match the header (or the
	// header was tampered with).
	ErrWrongPassphrase = errors.New("vault: wrong passphrase")
	// ErrWrongKey: the raw key does not match the header (or the header was
	// tampered with).
	ErrWrongKey = errors.New("vault: wrong key")
	// ErrWrongMode: a passphrase was given for a raw-key header, or the
	// other way round.
	ErrWrongMode = errors.New("vault: key source does not match how the store was created")
	// ErrCorrupt: a sealed value failed authentication: it was modified,
	// truncated, sealed under another key, or sealed with other AAD.
	ErrCorrupt = errors.New("vault: value is corrupt or was not sealed for this place")
	// ErrBadHeader: the header bytes are malformed.
	ErrBadHeader = errors.New("vault: malformed header")
	// ErrEmptyPassphrase: the passphrase is empty.
	ErrEmptyPassphrase = errors.New("vault: empty passphrase")
)

// Validate reports whether p is within this package's bounds and RFC 9106's
// constraints (t ≥ 1, p ≥ 1, m ≥ 8p).
func (p Params) Validate() error {
	switch {
	case p.Time < 1 || p.Time > MaxTime:
		return fmt.Errorf("vault: argon2id time %d out of range [1, %d]", p.Time, MaxTime)
	case p.Threads < 1 || p.Threads > MaxThreads:
		return fmt.Errorf("vault: argon2id threads %d out of range [1, %d]", p.Threads, MaxThreads)
	case p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > MaxMemoryKiB:
		return fmt.Errorf("vault: argon2id memory %d KiB out of range [%d, %d]", p.MemoryKiB, 8*uint32(p.Threads), MaxMemoryKiB)
	}
	return nil
}

// Vault seals and opens values under one data key. It is safe for
// concurrent use.
type Vault struct {
	aead cipher.AEAD
}

// NewFromPassphrase derives a new key from pass with a fresh random salt and
// the parameters p, and returns the vault and the header to store.
func NewFromPassphrase(pass []byte, p Params) (*Vault, Header, error) {
	if err := checkPassphrase(pass); err != nil {
		return nil, Header{}, err
	}
	if err := p.Validate(); err != nil {
		return nil, Header{}, err
	}
	h := Header{mode: ModePassphrase, params: p}
	if _, err := rand.Read(h.salt[:]); err != nil {
		return nil, Header{}, fmt.Errorf("vault: reading random salt: %w", err)
	}
	master := argon2.IDKey(pass, h.salt[:], p.Time, p.MemoryKiB, p.Threads, KeySize)
	defer clear(master)
	return create(master, h)
}

// OpenWithPassphrase derives the key from pass and the header's salt and
// parameters. It returns ErrWrongPassphrase if the check value does not
// verify, and ErrWrongMode if h was made for a raw key.
func OpenWithPassphrase(pass []byte, h Header) (*Vault, error) {
	if err := checkPassphrase(pass); err != nil {
		return nil, err
	}
	if err := h.validate(); err != nil {
		return nil, err
	}
	if h.mode != ModePassphrase {
		return nil, fmt.Errorf("%w: the store uses a raw key (MAGPIE_KEY), not a passphrase", ErrWrongMode)
	}
	master := argon2.IDKey(pass, h.salt[:], h.params.Time, h.params.MemoryKiB, h.params.Threads, KeySize)
	defer clear(master)
	return open(master, h, ErrWrongPassphrase)
}

// NewFromKey uses key directly (no KDF) and returns the vault and a header
// recording "raw key" mode and a check value. The all-zero key is refused,
// since it is almost certainly a bug.
func NewFromKey(key [32]byte) (*Vault, Header, error) {
	if isZero(key[:]) {
		return nil, Header{}, errors.New("vault: refusing the all-zero key")
	}
	defer clear(key[:])
	return create(key[:], Header{mode: ModeRawKey})
}

// OpenWithKey opens a raw-key header with key. It returns ErrWrongKey if the
// check value does not verify, and ErrWrongMode if h was made for a
// passphrase.
func OpenWithKey(key [32]byte, h Header) (*Vault, error) {
	defer clear(key[:])
	if err := h.validate(); err != nil {
		return nil, err
	}
	if h.mode != ModeRawKey {
		return nil, fmt.Errorf("%w: the store uses a passphrase (MAGPIE_PASSPHRASE), not a raw key", ErrWrongMode)
	}
	return open(key[:], h, ErrWrongKey)
}

// Seal encrypts and authenticates plaintext, binding it to aad, and returns
// nonce || ciphertext || tag (len(plaintext)+Overhead bytes). The aad is not
// stored; the caller must pass the same aad to Open. Use it to bind a value
// to where it lives (for example table name, column and row key) so that
// values cannot be swapped between rows.
func (v *Vault) Seal(aad, plaintext []byte) []byte {
	out := make([]byte, NonceSize, Overhead+len(plaintext))
	if _, err := rand.Read(out); err != nil {
		// crypto/rand.Read never returns an error on supported platforms
		// (Go 1.24+); it crashes the program instead.
		panic("vault: crypto/rand failed: " + err.Error())
	}
	return v.aead.Seal(out, out[:NonceSize], plaintext, aad)
}

// Open authenticates and decrypts a value returned by Seal with the same
// aad. Any mismatch (modified or truncated data, another key, other aad)
// gives ErrCorrupt.
func (v *Vault) Open(aad, sealed []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the %d-byte minimum", ErrCorrupt, len(sealed), Overhead)
	}
	pt, err := v.aead.Open(nil, sealed[:NonceSize], sealed[NonceSize:], aad)
	if err != nil {
		return nil, ErrCorrupt
	}
	return pt, nil
}

// checkConstant is the plaintext of the key check value.
var checkConstant = []byte("magpie vault key check v1")

const (
	infoData  = "magpie vault v1 data key"
	infoCheck = "magpie vault v1 key check"
)

// subkeys derives the data and check AEADs from master.
func subkeys(master []byte) (data, check cipher.AEAD, err error) {
	dk, err := hkdf.Key(sha256.New, master, nil, infoData, KeySize)
	if err != nil {
		return nil, nil, err
	}
	defer clear(dk)
	ck, err := hkdf.Key(sha256.New, master, nil, infoCheck, KeySize)
	if err != nil {
		return nil, nil, err
	}
	defer clear(ck)
	if data, err = chacha20poly1305.NewX(dk); err != nil {
		return nil, nil, err
	}
	if check, err = chacha20poly1305.NewX(ck); err != nil {
		return nil, nil, err
	}
	return data, check, nil
}

// create fills in h's check value and returns the vault.
func create(master []byte, h Header) (*Vault, Header, error) {
	data, check, err := subkeys(master)
	if err != nil {
		return nil, Header{}, fmt.Errorf("vault: deriving subkeys: %w", err)
	}
	if _, err := rand.Read(h.checkNonce[:]); err != nil {
		return nil, Header{}, fmt.Errorf("vault: reading random nonce: %w", err)
	}
	sealed := check.Seal(nil, h.checkNonce[:], checkConstant, h.clearPart())
	copy(h.checkValue[:], sealed)
	return &Vault{aead: data}, h, nil
}

// open verifies h's check value under master and returns the vault, or
// wrong if it does not verify.
func open(master []byte, h Header, wrong error) (*Vault, error) {
	data, check, err := subkeys(master)
	if err != nil {
		return nil, fmt.Errorf("vault: deriving subkeys: %w", err)
	}
	pt, err := check.Open(nil, h.checkNonce[:], h.checkValue[:], h.clearPart())
	if err != nil || subtle.ConstantTimeCompare(pt, checkConstant) != 1 {
		return nil, wrong
	}
	return &Vault{aead: data}, nil
}

func checkPassphrase(pass []byte) error {
	if len(pass) == 0 {
		return ErrEmptyPassphrase
	}
	if len(pass) > MaxPassphraseLen {
		return fmt.Errorf("vault: passphrase longer than %d bytes", MaxPassphraseLen)
	}
	return nil
}

func isZero(b []byte) bool {
	var acc byte
	for _, c := range b {
		acc |= c
	}
	return acc == 0
}
