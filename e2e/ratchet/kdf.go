package ratchet

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
)

// KDF labels, as libsignal v0.90.0 uses them.
const (
	// pqxdhInfo is the HKDF info of the PQXDH secret (PQXDH spec §2.2:
	// "an ASCII string identifying the application"; ratchet.rs:22).
	pqxdhInfo = "WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024"
	// rootInfo is the info of KDF_RK (Double Ratchet spec §5.2;
	// ratchet/keys.rs:197).
	rootInfo = "WhisperRatchet"
	// messageKeysInfo is the info of the message-key HKDF (Double
	// Ratchet spec §5.2; ratchet/keys.rs:98).
	messageKeysInfo = "WhisperMessageKeys"
)

// Chain-key HMAC inputs (Double Ratchet spec §5.2, KDF_CK: "HMAC-SHA256
// with ck as the HMAC key and using separate constants as input (e.g. a
// single byte 0x01 as input to produce the message key, and a single byte
// 0x02 as input to produce the next chain key)"; ratchet/keys.rs:138-139).
var (
	messageKeySeedInput = []byte{0x01}
	chainKeySeedInput   = []byte{0x02}
)

// macLen is the truncated MAC appended to a SignalMessage
// (protocol.rs:74).
const macLen = 8

func hmacSHA256(key []byte, data ...[]byte) [32]byte {
	m := hmac.New(sha256.New, key)
	for _, d := range data {
		m.Write(d)
	}
	var out [32]byte
	m.Sum(out[:0])
	return out
}

func hkdfSHA256(secret, salt []byte, info string, n int) []byte {
	out, err := hkdf.Key(sha256.New, secret, salt, info, n)
	if err != nil {
		// Only possible for n > 255*32, which no caller asks for.
		panic("ratchet: hkdf: " + err.Error())
	}
	return out
}

// pqxdhKeys derives the initial root and chain keys from the PQXDH secret
// input (F ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS, with F = 32 bytes 0xFF; PQXDH
// spec §2.2, §3.3): HKDF-SHA256 without salt to 96 bytes. The last 32 are
// the SPQR authentication key, which Magpie does not use.
func pqxdhKeys(secretInput []byte) (root, chain [32]byte) {
	okm := hkdfSHA256(secretInput, nil, pqxdhInfo, 96)
	copy(root[:], okm[:32])
	copy(chain[:], okm[32:64])
	clear(okm)
	return root, chain
}

// kdfRK is the Double Ratchet's KDF_RK: HKDF with the root key as salt and
// the DH output as input key material, to a new root key and chain key.
func kdfRK(rootKey, dhOut [32]byte) (newRoot, chainKey [32]byte) {
	okm := hkdfSHA256(dhOut[:], rootKey[:], rootInfo, 64)
	copy(newRoot[:], okm[:32])
	copy(chainKey[:], okm[32:])
	clear(okm)
	return newRoot, chainKey
}

// messageKeySeed and nextChainKey are KDF_CK.
func messageKeySeed(ck [32]byte) [32]byte { return hmacSHA256(ck[:], messageKeySeedInput) }
func nextChainKey(ck [32]byte) [32]byte   { return hmacSHA256(ck[:], chainKeySeedInput) }

// messageKeys are the AES-256-CBC key, HMAC-SHA256 key and IV of one
// message.
type messageKeys struct {
	cipherKey [32]byte
	macKey    [32]byte
	iv        [16]byte
}

// deriveMessageKeys expands a message-key seed to 80 bytes (Double Ratchet
// spec §5.2 recommends exactly this split). libsignal would use an SPQR
// key as HKDF salt when SPQR supplies one; in a session without SPQR there
// is none, and the salt is empty (ratchet/keys.rs:90-100).
func deriveMessageKeys(seed [32]byte) messageKeys {
	okm := hkdfSHA256(seed[:], nil, messageKeysInfo, 80)
	var k messageKeys
	copy(k.cipherKey[:], okm[:32])
	copy(k.macKey[:], okm[32:64])
	copy(k.iv[:], okm[64:80])
	clear(okm)
	return k
}

// computeMAC is the SignalMessage MAC: HMAC-SHA256 over the sender's and
// receiver's serialized identity keys and the message bytes (version byte
// and protobuf), truncated to 8 bytes (protocol.rs:177-198).
func computeMAC(macKey [32]byte, sender, receiver [32]byte, msg []byte) [macLen]byte {
	full := hmacSHA256(macKey[:], []byte{0x05}, sender[:], []byte{0x05}, receiver[:], msg)
	var out [macLen]byte
	copy(out[:], full[:macLen])
	return out
}

func macEqual(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

// encryptCBC is AES-256-CBC with PKCS#7 padding.
func encryptCBC(k messageKeys, plaintext []byte) []byte {
	block, err := aes.NewCipher(k.cipherKey[:])
	if err != nil {
		panic("ratchet: aes: " + err.Error())
	}
	pad := aes.BlockSize - len(plaintext)%aes.BlockSize
	out := make([]byte, len(plaintext)+pad)
	copy(out, plaintext)
	for i := len(plaintext); i < len(out); i++ {
		out[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(block, k.iv[:]).CryptBlocks(out, out)
	return out
}

// decryptCBC reverses encryptCBC. The MAC has been checked before it is
// called, so padding errors do not form an oracle.
func decryptCBC(k messageKeys, ciphertext []byte) ([]byte, error) {
	if len(ciphertext) == 0 || len(ciphertext)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: ciphertext length %d is not a positive multiple of the block size", ErrInvalidMessage, len(ciphertext))
	}
	block, err := aes.NewCipher(k.cipherKey[:])
	if err != nil {
		panic("ratchet: aes: " + err.Error())
	}
	out := make([]byte, len(ciphertext))
	cipher.NewCBCDecrypter(block, k.iv[:]).CryptBlocks(out, ciphertext)
	pad := int(out[len(out)-1])
	if pad == 0 || pad > aes.BlockSize {
		return nil, fmt.Errorf("%w: bad padding", ErrInvalidMessage)
	}
	bad := 0
	for _, b := range out[len(out)-pad:] {
		bad |= int(b) ^ pad
	}
	if bad != 0 {
		return nil, fmt.Errorf("%w: bad padding", ErrInvalidMessage)
	}
	return out[:len(out)-pad], nil
}
