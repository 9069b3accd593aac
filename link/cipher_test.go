package link

import (
	"bytes"
	"errors"
	"testing"

	"github.com/flynn/noise"
)

// The link's cipherState must produce and accept exactly what flynn/noise's
// CipherState does, at every nonce, or two builds of the link would not
// understand each other.
func TestCipherStateMatchesNoise(t *testing.T) {
	suite, _ := newSuite()
	key := [32]byte{1, 2, 3}
	for _, start := range []uint64{0, 1, 1 << 32, noise.MaxNonce - 2} {
		ref := noise.UnsafeNewCipherState(suite, key, start)
		ours := newCipherState(noise.UnsafeNewCipherState(suite, key, start))
		refOpen := noise.UnsafeNewCipherState(suite, key, start)
		oursOpen := newCipherState(noise.UnsafeNewCipherState(suite, key, start))
		for i := range 3 {
			pt := bytes.Repeat([]byte{byte(i)}, 10+i)
			ad := []byte{byte(i)}
			want, err := ref.Encrypt(nil, ad, pt)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ours.Encrypt(nil, ad, pt)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("nonce %d: sealed %x, flynn/noise %x", start+uint64(i), got, want)
			}
			if p, err := oursOpen.Decrypt(nil, ad, want); err != nil || !bytes.Equal(p, pt) {
				t.Fatalf("nonce %d: opening flynn/noise's: %q %v", start+uint64(i), p, err)
			}
			if p, err := refOpen.Decrypt(nil, ad, got); err != nil || !bytes.Equal(p, pt) {
				t.Fatalf("nonce %d: flynn/noise opening ours: %q %v", start+uint64(i), p, err)
			}
		}
		if start == noise.MaxNonce-2 {
			// 2^64-1 is reserved (§5.1): both refuse it.
			if _, err := ours.Encrypt(nil, nil, nil); !errors.Is(err, noise.ErrMaxNonce) {
				t.Fatalf("encrypt at 2^64-1: %v", err)
			}
			if _, err := oursOpen.Decrypt(nil, nil, make([]byte, tagSize)); !errors.Is(err, noise.ErrMaxNonce) {
				t.Fatalf("decrypt at 2^64-1: %v", err)
			}
		}
	}
}

// A frame that fails authentication must not use up the nonce (flynn/noise
// does not either); the link closes on it anyway, but the state stays exact.
func TestCipherStateFailedOpenKeepsNonce(t *testing.T) {
	suite, _ := newSuite()
	var key [32]byte
	tx := newCipherState(noise.UnsafeNewCipherState(suite, key, 0))
	rx := newCipherState(noise.UnsafeNewCipherState(suite, key, 0))
	ct, _ := tx.Encrypt(nil, nil, []byte("x"))
	bad := bytes.Clone(ct)
	bad[0] ^= 1
	if _, err := rx.Decrypt(nil, nil, bad); err == nil {
		t.Fatal("tampered frame opened")
	}
	if p, err := rx.Decrypt(nil, nil, ct); err != nil || string(p) != "x" {
		t.Fatalf("%q %v", p, err)
	}
}
