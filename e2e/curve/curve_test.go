package curve

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
)

func h32(t testing.TB, s string) [32]byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad hex %q", s)
	}
	return [32]byte(b)
}

// RFC 7748 §5.2: the two single scalar multiplication vectors. The second
// has the top bit of u set, which must be ignored.
func TestRFC7748ScalarMult(t *testing.T) {
	for _, v := range []struct{ k, u, out string }{
		{
			"a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
			"e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
			"c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
		},
		{
			"4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
			"e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
			"95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
		},
	} {
		got, err := PrivateKey(h32(t, v.k)).ECDH(PublicKey(h32(t, v.u)))
		if err != nil {
			t.Fatal(err)
		}
		if got != h32(t, v.out) {
			t.Errorf("X25519(%s, %s) = %x, want %s", v.k, v.u, got, v.out)
		}
	}
}

// RFC 7748 §5.2: the iterated test, k = u = 9 then (k, u) = (X25519(k, u), k).
func TestRFC7748Iterated(t *testing.T) {
	var k, u [32]byte
	k[0], u[0] = 9, 9
	want := map[int]string{
		1:    "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079",
		1000: "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51",
	}
	for i := 1; i <= 1000; i++ {
		out, err := PrivateKey(k).ECDH(PublicKey(u))
		if err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
		k, u = out, k
		if w, ok := want[i]; ok && k != h32(t, w) {
			t.Fatalf("after %d iterations: %x, want %s", i, k, w)
		}
	}
}

// RFC 7748 §6.1: Alice and Bob's key pairs and their shared secret.
func TestRFC7748DH(t *testing.T) {
	alicePriv := PrivateKey(h32(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
	alicePub := PublicKey(h32(t, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"))
	bobPriv := PrivateKey(h32(t, "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
	bobPub := PublicKey(h32(t, "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"))
	shared := h32(t, "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
	checkDH(t, alicePriv, alicePub, bobPriv, bobPub, shared)
}

// libsignal v0.90.0, rust/core/src/curve/curve25519.rs test_agreement: the
// same check with the keys libsignal's own tests use.
func TestLibsignalAgreement(t *testing.T) {
	alicePub := PublicKey(h32(t, "1bb75966f2e93a3691dfff942bb2a466a1c08b8d78ca3f4d6df8b8bfa2e4ee28"))
	alicePriv := PrivateKey(h32(t, "c806439dc9d2c476ffed8f2580c0888d58ab406bf7ae3698879021b96bb4bf59"))
	bobPub := PublicKey(h32(t, "653614993d2b15ee9e5fd3d86ce719ef4ec1daae1886a87b3f5fa9565a27a22f"))
	bobPriv := PrivateKey(h32(t, "b03b34c33a1c44f225b662d2bf4859b8135411fa7b0386d45fb75dc5b91b4466"))
	shared := h32(t, "325f239328941ced6e673b86ba41017448e99b649a9c3806c1dd7ca4c477e629")
	checkDH(t, alicePriv, alicePub, bobPriv, bobPub, shared)
}

func checkDH(t *testing.T, aPriv PrivateKey, aPub PublicKey, bPriv PrivateKey, bPub PublicKey, shared [32]byte) {
	t.Helper()
	if got, err := aPriv.PublicKey(); err != nil || got != aPub {
		t.Errorf("alice public = %x, %v; want %x", got, err, aPub)
	}
	if got, err := bPriv.PublicKey(); err != nil || got != bPub {
		t.Errorf("bob public = %x, %v; want %x", got, err, bPub)
	}
	if got, err := aPriv.ECDH(bPub); err != nil || got != shared {
		t.Errorf("alice ECDH = %x, %v; want %x", got, err, shared)
	}
	if got, err := bPriv.ECDH(aPub); err != nil || got != shared {
		t.Errorf("bob ECDH = %x, %v; want %x", got, err, shared)
	}
}

func TestClampingIsApplied(t *testing.T) {
	kp, err := GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if kp.Private != kp.Private.Clamp() {
		t.Fatal("generated key is not stored clamped")
	}
	// Unclamped bits must not change the public key (RFC 7748 §5).
	raw := kp.Private
	raw[0] |= 7
	raw[31] |= 0x80
	raw[31] &^= 0x40
	pub, err := raw.PublicKey()
	if err != nil || pub != kp.Public {
		t.Fatalf("unclamped key gave %x, %v; want %x", pub, err, kp.Public)
	}
}

func TestGenerateDeterministicAndRandom(t *testing.T) {
	seed := bytes.Repeat([]byte{0x42}, 32)
	a, err := GenerateKeyPair(bytes.NewReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateKeyPair(bytes.NewReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatal("same randomness gave different keys")
	}
	c, _ := GenerateKeyPair(rand.Reader)
	d, _ := GenerateKeyPair(rand.Reader)
	if c == d {
		t.Fatal("two random key pairs are equal")
	}
	if _, err := GenerateKeyPair(bytes.NewReader(seed[:31])); err == nil {
		t.Fatal("short randomness accepted")
	}
	s1, err := c.Private.ECDH(d.Public)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := d.Private.ECDH(c.Public)
	if err != nil || s1 != s2 {
		t.Fatalf("shared secrets differ: %x %x %v", s1, s2, err)
	}
}

// Points of small order give the all-zero output, which must be refused.
// u = 0 and u = 1 are two of them; p+1 is a non-canonical encoding of 1.
func TestLowOrderRejected(t *testing.T) {
	kp, _ := GenerateKeyPair(rand.Reader)
	pPlus1 := h32(t, "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
	for _, u := range []PublicKey{{}, {1}, PublicKey(pPlus1)} {
		if _, err := kp.Private.ECDH(u); !errors.Is(err, ErrLowOrderPoint) {
			t.Errorf("ECDH with u=%x: err = %v, want ErrLowOrderPoint", u, err)
		}
	}
}

func TestSerializeParse(t *testing.T) {
	kp, _ := GenerateKeyPair(rand.Reader)
	ser := kp.Public.Serialize()
	if len(ser) != 33 || ser[0] != 0x05 || !bytes.Equal(ser[1:], kp.Public[:]) {
		t.Fatalf("Serialize = %x", ser)
	}
	got, err := ParsePublicKey(ser)
	if err != nil || got != kp.Public {
		t.Fatalf("ParsePublicKey = %x, %v", got, err)
	}
	bad := [][]byte{
		nil,
		{0x05},
		ser[:32],
		append(append([]byte{}, ser...), 0),
		append([]byte{0x06}, ser[1:]...),
		kp.Public[:], // raw key without its type byte
	}
	for _, b := range bad {
		if _, err := ParsePublicKey(b); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ParsePublicKey(%x): err = %v, want ErrInvalidKey", b, err)
		}
	}
}

func FuzzParsePublicKey(f *testing.F) {
	f.Add([]byte{})
	f.Add(append([]byte{0x05}, make([]byte, 32)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePublicKey(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("unexpected error type: %v", err)
			}
			return
		}
		if !bytes.Equal(p.Serialize(), b) {
			t.Fatalf("round trip changed %x to %x", b, p.Serialize())
		}
	})
}

func BenchmarkECDH(b *testing.B) {
	x, _ := GenerateKeyPair(rand.Reader)
	y, _ := GenerateKeyPair(rand.Reader)
	for b.Loop() {
		if _, err := x.Private.ECDH(y.Public); err != nil {
			b.Fatal(err)
		}
	}
}
