package kem

import (
	"bytes"
	"crypto/mlkem"
	"crypto/mlkem/mlkemtest"
	"crypto/sha3"
	"encoding/hex"
	"errors"
	"os"
	"testing"
)

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// The round-3 final step, ss = SHAKE-256(K ‖ SHA3-256(c))[:32], against
// values computed independently with Python's hashlib:
//
//	python3 -c 'import hashlib; f=lambda K,c: hashlib.shake_256(K+hashlib.sha3_256(c).digest()).hexdigest(32); print(f(bytes(32), bytes(1568))); print(f(bytes(range(32)), bytes(i%256 for i in range(1568)))); print(f(b"\xff"*32, b"\xab"*1568))'
func TestKyberKDFVectors(t *testing.T) {
	for i, v := range []struct {
		k, c []byte
		ss   string
	}{
		{make([]byte, 32), make([]byte, 1568), "32a9297999b3d17a12bf21b323f7b19a4b2e24e38a5da6cf4b864af2a5628db1"},
		{seq(32), seq(1568), "b879aab58331f2c05780c2e5f68914467a8e9a61e3dd28be56ce9a99b1e947a1"},
		{bytes.Repeat([]byte{0xff}, 32), bytes.Repeat([]byte{0xab}, 1568), "a0e2794f4d158afffa0fc6a82f5118edf93dab2b1ec1c04a068fd2295c451ba2"},
	} {
		if got := hex.EncodeToString(kyberKDF(v.k, v.c)); got != v.ss {
			t.Errorf("vector %d: %s, want %s", i, got, v.ss)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(k.PublicKey().Serialize())
	if err != nil {
		t.Fatal(err)
	}
	ct, ss, err := pub.Encapsulate()
	if err != nil {
		t.Fatal(err)
	}
	if len(ct) != 1569 || ct[0] != 0x08 || len(ss) != 32 {
		t.Fatalf("ciphertext %d bytes type 0x%02x, secret %d bytes", len(ct), ct[0], len(ss))
	}
	got, err := k.Decapsulate(ct)
	if err != nil || !bytes.Equal(got, ss) {
		t.Fatalf("Decapsulate = %x, %v; want %x", got, err, ss)
	}
	ct2, ss2, _ := pub.Encapsulate()
	if bytes.Equal(ct, ct2) || bytes.Equal(ss, ss2) {
		t.Fatal("two encapsulations are equal")
	}

	// Implicit rejection: a changed ciphertext decapsulates without error
	// to an unrelated secret, the same one each time.
	bad := bytes.Clone(ct)
	bad[100] ^= 1
	r1, err := k.Decapsulate(bad)
	if err != nil || len(r1) != 32 || bytes.Equal(r1, ss) {
		t.Fatalf("tampered ciphertext: %x, %v", r1, err)
	}
	if r2, _ := k.Decapsulate(bad); !bytes.Equal(r1, r2) {
		t.Fatal("implicit rejection is not deterministic")
	}
	other, _ := GenerateKey()
	if r, err := other.Decapsulate(ct); err != nil || bytes.Equal(r, ss) {
		t.Fatal("another key recovered the secret")
	}
}

// FIPS 203 §7.1: the key pair is a function of the 64-byte seed.
func TestSeedDeterminism(t *testing.T) {
	seed := seq(64)
	a, err := NewPrivateKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewPrivateKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.PublicKey().Serialize(), b.PublicKey().Serialize()) {
		t.Fatal("same seed gave different public keys")
	}
	if !bytes.Equal(a.Seed(), seed) {
		t.Fatal("Seed() does not return the seed")
	}
	g, _ := GenerateKey()
	g2, err := NewPrivateKey(g.Seed())
	if err != nil || !bytes.Equal(g.PublicKey().Serialize(), g2.PublicKey().Serialize()) {
		t.Fatal("seed of a generated key does not restore it")
	}
	ct, ss, _ := a.PublicKey().Encapsulate()
	if got, _ := b.Decapsulate(ct); !bytes.Equal(got, ss) {
		t.Fatal("key rebuilt from seed cannot decapsulate")
	}
	for _, n := range []int{0, 32, 63, 65, 3168} {
		if _, err := NewPrivateKey(make([]byte, n)); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("seed of %d bytes: err = %v", n, err)
		}
	}
}

// Encapsulate's shared secret is the round-3 formula applied to ML-KEM's
// K and c, checked with a fixed message through crypto/mlkem/mlkemtest
// (ML-KEM.Encaps_internal, FIPS 203 Algorithm 17): decapsulation of that
// ciphertext gives SHAKE-256(K ‖ SHA3-256(c)).
func TestDerivationWithFixedMessage(t *testing.T) {
	k, _ := NewPrivateKey(seq(64))
	ek, err := mlkem.NewEncapsulationKey1024(k.PublicKey().Serialize()[1:])
	if err != nil {
		t.Fatal(err)
	}
	kbar, c, err := mlkemtest.Encapsulate1024(ek, bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	h := sha3.Sum256(c)
	want := sha3.SumSHAKE256(append(bytes.Clone(kbar), h[:]...), 32)
	got, err := k.Decapsulate(append([]byte{TypeKyber1024}, c...))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Decapsulate = %x, %v; want %x", got, err, want)
	}
	if bytes.Equal(got, kbar) {
		t.Fatal("secret is ML-KEM's K, not round-3 Kyber's")
	}
}

// libsignal v0.90.0 ships a Kyber-1024 key pair as test data
// (rust/protocol/src/kem/test-data/pk.dat and sk.dat), copied unchanged
// into testdata/ as libsignal-kyber1024-{pk,sk}.dat. They are facts about
// the format: pk.dat is the raw 1568-byte key that follows the 0x08 type
// byte, and sk.dat is round-3's 3168-byte secret key s ‖ pk ‖ H(pk) ‖ z.
func TestLibsignalTestData(t *testing.T) {
	pkRaw, err := os.ReadFile("testdata/libsignal-kyber1024-pk.dat")
	if err != nil {
		t.Fatal(err)
	}
	skRaw, err := os.ReadFile("testdata/libsignal-kyber1024-sk.dat")
	if err != nil {
		t.Fatal(err)
	}
	if len(pkRaw) != PublicKeySize || len(skRaw) != 3168 {
		t.Fatalf("sizes %d and %d", len(pkRaw), len(skRaw))
	}
	ser := append([]byte{TypeKyber1024}, pkRaw...)
	pub, err := ParsePublicKey(ser)
	if err != nil {
		t.Fatalf("libsignal's public key rejected: %v", err)
	}
	if !bytes.Equal(pub.Serialize(), ser) {
		t.Fatal("re-serialized public key differs")
	}
	// The embedded copy of pk and H(pk) = SHA3-256(pk) in the secret key
	// confirm that our public key encoding and hash H are round-3's.
	if !bytes.Equal(skRaw[1536:3104], pkRaw) {
		t.Fatal("sk.dat does not embed pk.dat at offset 1536")
	}
	if h := sha3.Sum256(pkRaw); !bytes.Equal(skRaw[3104:3136], h[:]) {
		t.Fatal("sk.dat's H(pk) is not SHA3-256(pk)")
	}
	ct, ss, err := pub.Encapsulate()
	if err != nil || len(ct) != SerializedCiphertextSize || len(ss) != 32 {
		t.Fatalf("Encapsulate to libsignal's key: %d, %d, %v", len(ct), len(ss), err)
	}
}

func TestParseErrors(t *testing.T) {
	k, _ := GenerateKey()
	ser := k.PublicKey().Serialize()
	if len(ser) != 1569 || ser[0] != 0x08 {
		t.Fatalf("Serialize: %d bytes, type 0x%02x", len(ser), ser[0])
	}
	// Coefficient 0 set to 0xfff > q = 3329: FIPS 203 §7.2 modulus check.
	unreduced := bytes.Clone(ser)
	unreduced[1] = 0xff
	unreduced[2] |= 0x0f
	for _, b := range [][]byte{
		nil, {0x08}, ser[:1568], append(bytes.Clone(ser), 0),
		append([]byte{0x0a}, ser[1:]...), // ML-KEM-1024's type byte in libsignal
		append([]byte{0x05}, ser[1:]...),
		ser[1:], unreduced,
	} {
		if _, err := ParsePublicKey(b); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ParsePublicKey(%d bytes, 0x%x...): err = %v", len(b), b[:min(len(b), 1)], err)
		}
	}
	ct, _, _ := k.PublicKey().Encapsulate()
	for _, b := range [][]byte{
		nil, {0x08}, ct[1:], ct[:1568], append(bytes.Clone(ct), 0),
		append([]byte{0x0a}, ct[1:]...),
	} {
		if _, err := k.Decapsulate(b); !errors.Is(err, ErrInvalidCiphertext) {
			t.Errorf("Decapsulate(%d bytes): err = %v", len(b), err)
		}
	}
}

func FuzzParsePublicKey(f *testing.F) {
	if pk, err := os.ReadFile("testdata/libsignal-kyber1024-pk.dat"); err == nil {
		f.Add(append([]byte{TypeKyber1024}, pk...))
	}
	f.Add([]byte{TypeKyber1024})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePublicKey(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("unexpected error: %v", err)
			}
			return
		}
		if !bytes.Equal(p.Serialize(), b) {
			t.Fatal("round trip changed the key")
		}
	})
}

func FuzzDecapsulate(f *testing.F) {
	k, err := NewPrivateKey(seq(64))
	if err != nil {
		f.Fatal(err)
	}
	ct, _, _ := k.PublicKey().Encapsulate()
	f.Add(ct)
	f.Add([]byte{TypeKyber1024})
	f.Fuzz(func(t *testing.T, b []byte) {
		ss, err := k.Decapsulate(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidCiphertext) {
				t.Fatalf("unexpected error: %v", err)
			}
			return
		}
		if len(ss) != SharedSecretSize {
			t.Fatalf("secret of %d bytes", len(ss))
		}
	})
}

func BenchmarkGenerateKey(b *testing.B) {
	for b.Loop() {
		if _, err := GenerateKey(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncapsulate(b *testing.B) {
	k, _ := GenerateKey()
	pub := k.PublicKey()
	for b.Loop() {
		if _, _, err := pub.Encapsulate(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecapsulate(b *testing.B) {
	k, _ := GenerateKey()
	ct, _, _ := k.PublicKey().Encapsulate()
	for b.Loop() {
		if _, err := k.Decapsulate(ct); err != nil {
			b.Fatal(err)
		}
	}
}
