package senderkey

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"fmt"
)

// A message is AES-256-CBC with PKCS#7 padding under its MessageKeys
// (libsignal's signal_crypto::aes_256_cbc_encrypt and _decrypt,
// rust/crypto/src/aes_cbc.rs).

func (k MessageKeys) block() cipher.Block {
	b, err := aes.NewCipher(k.CipherKey[:])
	if err != nil {
		panic("senderkey: aes: " + err.Error()) // the key is always 32 bytes
	}
	return b
}

// Seal encrypts plaintext with AES-256-CBC and PKCS#7 padding.
func (k MessageKeys) Seal(plaintext []byte) []byte {
	n := len(plaintext)/aes.BlockSize*aes.BlockSize + aes.BlockSize
	out := make([]byte, n)
	copy(out, plaintext)
	pad := byte(n - len(plaintext))
	for i := len(plaintext); i < n; i++ {
		out[i] = pad
	}
	cipher.NewCBCEncrypter(k.block(), k.IV[:]).CryptBlocks(out, out)
	return out
}

// Open reverses Seal. Its errors wrap ErrInvalidMessage. A Message's
// signature is checked before its keys are derived, so a padding error is
// no oracle to anyone but the signer.
func (k MessageKeys) Open(ciphertext []byte) ([]byte, error) {
	if len(ciphertext) == 0 || len(ciphertext)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: ciphertext of %d bytes is not a positive multiple of %d", ErrInvalidMessage, len(ciphertext), aes.BlockSize)
	}
	out := make([]byte, len(ciphertext))
	cipher.NewCBCDecrypter(k.block(), k.IV[:]).CryptBlocks(out, ciphertext)
	pad := out[len(out)-1]
	ok := subtle.ConstantTimeLessOrEq(1, int(pad)) & subtle.ConstantTimeLessOrEq(int(pad), aes.BlockSize)
	for i := 1; i <= aes.BlockSize; i++ {
		inPad := subtle.ConstantTimeLessOrEq(i, int(pad))
		same := subtle.ConstantTimeByteEq(out[len(out)-i], pad)
		ok &= 1 ^ (inPad & (1 ^ same))
	}
	if ok != 1 {
		return nil, fmt.Errorf("%w: bad padding", ErrInvalidMessage)
	}
	return out[:len(out)-int(pad)], nil
}
