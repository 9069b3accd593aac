package senderkey

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/magpie-im/magpie/e2e/curve"
)

// hexBytes is a hex string in JSON.
type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	*h = v
	return err
}

type vectorFile struct {
	ChainKey0      hexBytes `json:"chain_key_0"`
	SigningPrivate hexBytes `json:"signing_private"`
	SigningPublic  hexBytes `json:"signing_public"`
	Vectors        []struct {
		Iteration  uint32   `json:"iteration"`
		ChainKey   hexBytes `json:"chain_key"`
		Seed       hexBytes `json:"seed"`
		IV         hexBytes `json:"iv"`
		CipherKey  hexBytes `json:"cipher_key"`
		Plaintext  hexBytes `json:"plaintext"`
		Ciphertext hexBytes `json:"ciphertext"`
	} `json:"vectors"`
}

// loadVectors reads testdata/vectors.json (see its header and vectors.py
// for how it was made).
func loadVectors(t *testing.T) *vectorFile {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectorFile
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.ChainKey0) != 32 || len(v.SigningPrivate) != 32 || len(v.SigningPublic) != 32 || len(v.Vectors) < 9 {
		t.Fatal("vectors.json is incomplete")
	}
	return &v
}

// TestVectors checks the chain, the message keys and AES-CBC against the
// independently computed known answers, then decrypts the vectors'
// ciphertexts through a Record.
func TestVectors(t *testing.T) {
	v := loadVectors(t)
	c := ChainKey{Key: [32]byte(v.ChainKey0)}
	for _, want := range v.Vectors {
		for c.Iteration < want.Iteration {
			var err error
			if c, err = c.Next(); err != nil {
				t.Fatal(err)
			}
		}
		k := c.MessageKeys()
		if !bytes.Equal(c.Key[:], want.ChainKey) || !bytes.Equal(k.Seed[:], want.Seed) ||
			!bytes.Equal(k.IV[:], want.IV) || !bytes.Equal(k.CipherKey[:], want.CipherKey) || k.Iteration != want.Iteration {
			t.Fatalf("iteration %d: chain key %x, seed %x, IV %x, cipher key %x", want.Iteration, c.Key, k.Seed, k.IV, k.CipherKey)
		}
		if k2 := NewMessageKeys(want.Iteration, [32]byte(want.Seed)); k2 != k {
			t.Fatalf("iteration %d: NewMessageKeys from the seed differs", want.Iteration)
		}
		if ct := k.Seal(want.Plaintext); !bytes.Equal(ct, want.Ciphertext) {
			t.Fatalf("iteration %d: ciphertext %x, want %x", want.Iteration, ct, want.Ciphertext)
		}
		if pt, err := k.Open(want.Ciphertext); err != nil || !bytes.Equal(pt, want.Plaintext) {
			t.Fatalf("iteration %d: Open: %q, %v", want.Iteration, pt, err)
		}
	}

	// Through a Record: the vectors' chain, their ciphertexts in messages
	// signed with the vectors' signing key, the highest first.
	priv := curve.PrivateKey(v.SigningPrivate)
	if pub, err := priv.PublicKey(); err != nil || !bytes.Equal(pub[:], v.SigningPublic) {
		t.Fatalf("signing key pair: %v", err)
	}
	var r Record
	id := DistributionID{0x42, 6: 0x40, 8: 0x80}
	r.Process(DistributionMessage{DistributionID: id, ChainID: 77, ChainKey: [32]byte(v.ChainKey0), SigningKey: curve.PublicKey(v.SigningPublic)})
	for i := len(v.Vectors) - 1; i >= 0; i-- {
		want := v.Vectors[i]
		m := signMessage(id, 77, want.Iteration, want.Ciphertext, priv, [64]byte{})
		mustDecrypt(t, &r, m, string(want.Plaintext))
	}
}

// Open accepts exactly the PKCS#7 paddings.
func TestOpenPadding(t *testing.T) {
	k := NewMessageKeys(0, [32]byte{7})
	raw := func(block []byte) []byte {
		out := make([]byte, len(block))
		cipher.NewCBCEncrypter(k.block(), k.IV[:]).CryptBlocks(out, block)
		return out
	}
	for pad := 0; pad <= 255; pad++ {
		block := bytes.Repeat([]byte{byte(pad)}, aes.BlockSize)
		pt, err := k.Open(raw(block))
		valid := pad >= 1 && pad <= aes.BlockSize
		if valid != (err == nil) || (valid && len(pt) != aes.BlockSize-pad) {
			t.Fatalf("padding byte %d: %d bytes, %v", pad, len(pt), err)
		}
		if !valid && !errors.Is(err, ErrInvalidMessage) {
			t.Fatalf("padding byte %d: %v", pad, err)
		}
		// One wrong byte anywhere in the padding is refused.
		for i := aes.BlockSize - pad; valid && i < aes.BlockSize-1; i++ {
			bad := bytes.Clone(block)
			bad[i] ^= 0x80
			if _, err := k.Open(raw(bad)); !errors.Is(err, ErrInvalidMessage) {
				t.Fatalf("padding %d with byte %d wrong: %v", pad, i, err)
			}
		}
	}
}
