package libsignaloracle

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/fingerprint"
	"github.com/magpie-im/magpie/e2e/kem"
)

// TestFingerprintInterop checks that Magpie's safety numbers (e2e/fingerprint)
// equal libsignal's: for libsignal's fixed vector identities, and for fresh
// identities and identifiers of several lengths, from both points of view.
func TestFingerprintInterop(t *testing.T) {
	o := Start(t)
	type ident struct {
		id  []byte
		key []byte
	}
	pairs := [][2]ident{{{[]byte(vectorAliceID), vectorAliceIdentity}, {[]byte(vectorBobID), vectorBobIdentity}}}
	for i := range 4 {
		var pair [2]ident
		for j := range pair {
			kp, err := curve.GenerateKeyPair(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			id := make([]byte, []int{0, 1, 16, 36}[i])
			rand.Read(id)
			pair[j] = ident{id, kp.Public.Serialize()}
		}
		pairs = append(pairs, pair)
	}
	for i, p := range pairs {
		for _, dir := range [][2]ident{{p[0], p[1]}, {p[1], p[0]}} {
			local, remote := dir[0], dir[1]
			lk, err := curve.ParsePublicKey(local.key)
			if err != nil {
				t.Fatal(err)
			}
			rk, err := curve.ParsePublicKey(remote.key)
			if err != nil {
				t.Fatal(err)
			}
			wantDisp, wantScan := o.Fingerprint(local.id, local.key, remote.id, remote.key)
			if got := fingerprint.Displayable(local.id, lk, remote.id, rk); got != wantDisp {
				t.Errorf("pair %d: Magpie's safety number %s, libsignal's %s", i, got, wantDisp)
			}
			if got := fingerprint.Scannable(local.id, lk, remote.id, rk); !bytes.Equal(got, wantScan) {
				t.Errorf("pair %d: Magpie's scannable %x, libsignal's %x", i, got, wantScan)
			}
		}
	}
	// A different key gives a different number, in both implementations.
	other, _ := curve.GenerateKeyPair(rand.Reader)
	a, _ := curve.ParsePublicKey(vectorAliceIdentity)
	if fingerprint.Displayable([]byte(vectorAliceID), a, []byte(vectorBobID), other.Public) == vectorDisplayable {
		t.Error("Magpie's safety number ignores the remote key")
	}
	if d, _ := o.Fingerprint([]byte(vectorAliceID), vectorAliceIdentity, []byte(vectorBobID), other.Public.Serialize()); d == vectorDisplayable {
		t.Error("libsignal's safety number ignores the remote key")
	}
	// Magpie's scannable payload compares equal with libsignal's from the
	// other side.
	_, libBob := o.Fingerprint([]byte(vectorBobID), vectorBobIdentity, []byte(vectorAliceID), vectorAliceIdentity)
	b, _ := curve.ParsePublicKey(vectorBobIdentity)
	ok, err := fingerprint.CompareScannable(fingerprint.Scannable([]byte(vectorAliceID), a, []byte(vectorBobID), b), libBob)
	if err != nil || !ok {
		t.Errorf("Magpie's scannable does not match libsignal's from the other side: %v, %v", ok, err)
	}
}

// TestKEMKeyInterop checks that each side parses the other's Kyber1024
// public keys unchanged (0x08 || 1568 bytes) and that Magpie can
// encapsulate to libsignal's keys. libsignal-client 0.90.0 has no
// encapsulate or decapsulate in its Node API, so the shared secrets are
// checked by the PQXDH sessions of e2e/ratchet's interop tests, where each
// side decapsulates the other's ciphertext.
func TestKEMKeyInterop(t *testing.T) {
	o := Start(t)
	for i := range 3 {
		pub, sec := o.KEMGenerate()
		if len(pub) != 1569 || pub[0] != kem.TypeKyber1024 {
			t.Fatalf("libsignal KEM public key: %d bytes, type %#x", len(pub), pub[0])
		}
		if len(sec) != 3169 {
			t.Fatalf("libsignal KEM secret key: %d bytes, want 3169", len(sec))
		}
		pk, err := kem.ParsePublicKey(pub)
		if err != nil {
			t.Fatalf("Magpie cannot parse libsignal's KEM public key: %v", err)
		}
		if !bytes.Equal(pk.Serialize(), pub) {
			t.Fatal("Magpie reserializes libsignal's KEM public key differently")
		}
		// libsignal's ciphertexts carry the key type byte too.
		if ct, ss, err := pk.Encapsulate(); err != nil || len(ct) != 1569 || ct[0] != kem.TypeKyber1024 || len(ss) != 32 {
			t.Fatalf("Magpie encapsulating to libsignal's key: %d-byte ct, %d-byte secret, %v", len(ct), len(ss), err)
		}

		mk, err := kem.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		mpub := mk.PublicKey().Serialize()
		back, _, err := o.KEMCheck(mpub, nil)
		if err != nil {
			t.Fatalf("libsignal refuses Magpie's KEM public key %d: %v", i, err)
		}
		if !bytes.Equal(back, mpub) {
			t.Fatal("libsignal reserializes Magpie's KEM public key differently")
		}
	}
	// Both refuse a key with the ML-KEM type byte, or a truncated key.
	pub, _ := o.KEMGenerate()
	for _, bad := range [][]byte{append([]byte{0x0A}, pub[1:]...), pub[:len(pub)-1]} {
		if _, err := kem.ParsePublicKey(bad); err == nil {
			t.Errorf("Magpie accepts a bad KEM key (%s)", describe(bad))
		}
	}
	if _, _, err := o.KEMCheck(pub[:len(pub)-1], nil); err == nil {
		t.Error("libsignal accepts a truncated KEM key")
	}
}

func describe(b []byte) string {
	return fmt.Sprintf("%d bytes, type %s", len(b), hex.EncodeToString(b[:1]))
}
