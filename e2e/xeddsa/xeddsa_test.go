package xeddsa

import (
	"bytes"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"math/big"
	"testing"

	"filippo.io/edwards25519"

	"github.com/magpie-im/magpie/e2e/curve"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The signature vector published in libsignal v0.90.0's tests
// (rust/core/src/curve/curve25519.rs test_signature, and the same bytes in
// java/.../ecc/Curve25519Test.java testSignature): Alice's identity key
// signs her serialized ephemeral public key (0x05 || u). Its last byte is
// 0x88, so the sign-bit extension is in use: the spec's verifier alone
// would reject it.
const (
	vecPriv = "c097248412e58bf05df487968205132794178e367637f5818f81e0e6ce73e865"
	vecPub  = "ab7e717d4a163b7d9a1d8071dfe9dcf8cdcd1cea3339b6356be84d887e322c64"
	vecMsg  = "05edce9d9c415ca78cb7252e72c2c4a554d3eb29485a0e1d503118d1a82d99fb4a"
	vecSig  = "5de88ca9a89b4a115da79109c67c9c7464a3e4180274f1cb8c63c2984e286dfb" +
		"ede82deb9dcd9fae0bfbb821569b3d9001bd8130cd11d486cef047bd60b86e88"
)

func libsignalVector(t testing.TB) (curve.PrivateKey, curve.PublicKey, []byte, [64]byte) {
	return curve.PrivateKey(unhex(t, vecPriv)), curve.PublicKey(unhex(t, vecPub)),
		unhex(t, vecMsg), [64]byte(unhex(t, vecSig))
}

func TestLibsignalVector(t *testing.T) {
	priv, pub, msg, sig := libsignalVector(t)
	if got, err := priv.PublicKey(); err != nil || got != pub {
		t.Fatalf("public key = %x, %v; want %x", got, err, pub)
	}
	if sig[63]&0x80 == 0 {
		t.Fatal("vector no longer exercises the sign bit")
	}
	if !Verify(pub, msg, sig) {
		t.Fatal("libsignal's signature rejected")
	}
	// As libsignal's test: every single-bit change must be rejected. We
	// flip every bit, not only the low bit of each byte.
	for i := range 64 * 8 {
		bad := sig
		bad[i/8] ^= 1 << (i % 8)
		if Verify(pub, msg, bad) {
			t.Errorf("signature with bit %d flipped accepted", i)
		}
	}
	for i := range len(msg) * 8 {
		bad := bytes.Clone(msg)
		bad[i/8] ^= 1 << (i % 8)
		if Verify(pub, bad, sig) {
			t.Errorf("message with bit %d flipped accepted", i)
		}
	}
	for i := range 32 * 8 {
		bad := pub
		bad[i/8] ^= 1 << (i % 8)
		if Verify(bad, msg, sig) {
			t.Errorf("public key with bit %d flipped accepted", i)
		}
	}
	// And our own signature with the same key verifies.
	var z [64]byte
	if !Verify(pub, msg, Sign(priv, msg, z)) {
		t.Fatal("own signature with libsignal's key rejected")
	}
}

func randomKey(t testing.TB) curve.KeyPair {
	kp, err := curve.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func randomZ() (z [64]byte) {
	rand.Read(z[:])
	return z
}

func TestSignVerifyRoundTrip(t *testing.T) {
	signBits := 0
	for i := range 200 {
		kp := randomKey(t)
		msg := make([]byte, i)
		rand.Read(msg)
		sig := Sign(kp.Private, msg, randomZ())
		if sig[63]&0x80 != 0 {
			t.Fatal("Sign set the top bit: A's sign bit must be 0 (spec §2.3)")
		}
		if !Verify(kp.Public, msg, sig) {
			t.Fatalf("round trip %d failed", i)
		}
		// The Edwards point of about half of all keys has sign bit 1;
		// make sure both halves were exercised.
		if edSignBit(t, kp.Private) == 1 {
			signBits++
		}
		other := randomKey(t)
		if Verify(other.Public, msg, sig) {
			t.Fatal("signature accepted under another key")
		}
		if Verify(kp.Public, append(bytes.Clone(msg), 0), sig) {
			t.Fatal("signature accepted for a longer message")
		}
	}
	if signBits == 0 || signBits == 200 {
		t.Fatalf("only one sign of E exercised (%d/200)", signBits)
	}
}

func edSignBit(t testing.TB, k curve.PrivateKey) byte {
	k = k.Clamp()
	a, err := new(edwards25519.Scalar).SetBytesWithClamping(k[:])
	if err != nil {
		t.Fatal(err)
	}
	return new(edwards25519.Point).ScalarBaseMult(a).Bytes()[31] >> 7
}

func TestSignDeterministicInZ(t *testing.T) {
	kp := randomKey(t)
	msg := []byte("pre-key")
	z := randomZ()
	if s1, s2 := Sign(kp.Private, msg, z), Sign(kp.Private, msg, z); s1 != s2 {
		t.Fatal("same inputs gave different signatures")
	}
	if Sign(kp.Private, msg, z) == Sign(kp.Private, msg, randomZ()) {
		t.Fatal("different Z gave the same signature")
	}
	// The unclamped form of a key signs as the key.
	raw := kp.Private
	raw[0] |= 7
	if !Verify(kp.Public, msg, Sign(raw, msg, z)) {
		t.Fatal("unclamped private key signature rejected")
	}
}

// signLibsignalStyle signs the way libsignal v0.90.0 does (facts from
// rust/core/src/curve/curve25519.rs, restated): the scalar is not negated,
// A keeps its sign bit, and that bit is stored in the top bit of sig[63].
// The nonce derivation does not matter to a verifier, so it is simplified.
func signLibsignalStyle(a *edwards25519.Scalar, msg []byte, z [64]byte) [64]byte {
	aEnc := new(edwards25519.Point).ScalarBaseMult(a).Bytes()
	d := sha512.New()
	d.Write(hash1Prefix[:])
	d.Write(a.Bytes())
	d.Write(msg)
	d.Write(z[:])
	r, _ := new(edwards25519.Scalar).SetUniformBytes(d.Sum(nil))
	rEnc := new(edwards25519.Point).ScalarBaseMult(r).Bytes()
	s := new(edwards25519.Scalar).MultiplyAdd(challenge(rEnc, aEnc, msg), a, r)
	var sig [64]byte
	copy(sig[:32], rEnc)
	copy(sig[32:], s.Bytes())
	sig[63] |= aEnc[31] & 0x80
	return sig
}

func scalarOf(t testing.TB, k curve.PrivateKey) *edwards25519.Scalar {
	k = k.Clamp()
	a, err := new(edwards25519.Scalar).SetBytesWithClamping(k[:])
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestVerifiesLibsignalStyleSignatures(t *testing.T) {
	seen := [2]int{}
	for range 100 {
		kp := randomKey(t)
		msg := []byte("libsignal interop")
		sig := signLibsignalStyle(scalarOf(t, kp.Private), msg, randomZ())
		seen[sig[63]>>7]++
		if !Verify(kp.Public, msg, sig) {
			t.Fatalf("libsignal-style signature rejected (sign bit %d)", sig[63]>>7)
		}
		// Clearing or setting the sign bit must break it.
		sig[63] ^= 0x80
		if Verify(kp.Public, msg, sig) {
			t.Fatal("signature with the wrong sign bit accepted")
		}
	}
	if seen[0] == 0 || seen[1] == 0 {
		t.Fatalf("sign bits not both exercised: %v", seen)
	}
}

// groupOrder is q = 2^252 + 27742317777372353535851937790883648493.
var groupOrder, _ = new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)

func leToInt(b []byte) *big.Int {
	be := bytes.Clone(b)
	for i, j := 0, len(be)-1; i < j; i, j = i+1, j-1 {
		be[i], be[j] = be[j], be[i]
	}
	return new(big.Int).SetBytes(be)
}

func intToLE(x *big.Int) [32]byte {
	var out [32]byte
	x.FillBytes(out[:])
	for i, j := 0, 31; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// s + q encodes the same residue as s. The spec (s < 2^253) and libsignal
// accept it when it fits; we require s < q so signatures are not malleable.
func TestNonCanonicalSRejected(t *testing.T) {
	tried := 0
	for tried < 20 {
		kp := randomKey(t)
		msg := []byte("malleability")
		sig := Sign(kp.Private, msg, randomZ())
		s := leToInt(sig[32:])
		s2 := new(big.Int).Add(s, groupOrder)
		if s2.BitLen() > 253 {
			continue // does not fit below the sign bit; try another
		}
		tried++
		bad := sig
		enc := intToLE(s2)
		copy(bad[32:], enc[:])
		if Verify(kp.Public, msg, bad) {
			t.Fatal("s + q accepted")
		}
		if !Verify(kp.Public, msg, sig) {
			t.Fatal("canonical s rejected")
		}
	}
	// Bits 253 and 254 of s set: s >= 2^253, rejected by the spec itself.
	_, pub, msg, sig := libsignalVector(t)
	for _, bit := range []byte{0x20, 0x40} {
		bad := sig
		bad[63] |= bit
		if Verify(pub, msg, bad) {
			t.Errorf("s with bit 0x%02x of the top byte accepted", bit)
		}
	}
}

// The key u = 9 is the base point B (a = 1, and B's sign bit is 0). u + p
// encodes the same field element non-canonically and must be rejected, as
// must the same key with the (X25519-ignored) top bit set.
func TestNonCanonicalURejected(t *testing.T) {
	one := new(edwards25519.Scalar)
	var oneBytes [32]byte
	oneBytes[0] = 1
	if _, err := one.SetCanonicalBytes(oneBytes[:]); err != nil {
		t.Fatal(err)
	}
	msg := []byte("base point")
	sig := signLibsignalStyle(one, msg, randomZ())
	if sig[63]&0x80 != 0 {
		t.Fatal("B's sign bit is expected to be 0")
	}
	u := curve.PublicKey{9}
	if !Verify(u, msg, sig) {
		t.Fatal("signature under u = 9 rejected")
	}
	pPlus9 := curve.PublicKey(unhex(t, "f6ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"))
	if Verify(pPlus9, msg, sig) {
		t.Fatal("u = p + 9 accepted")
	}
	top := u
	top[31] |= 0x80
	if Verify(top, msg, sig) {
		t.Fatal("u with its top bit set accepted")
	}
	minus1 := curve.PublicKey(unhex(t, "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"))
	if Verify(minus1, msg, sig) {
		t.Fatal("u = -1 accepted")
	}
}

// u = 2 has no point on Curve25519 (it lies on the twist), so the
// converted y has no x: the spec's on_curve check.
func TestOffCurveKeyRejected(t *testing.T) {
	_, _, msg, sig := libsignalVector(t)
	for _, u := range []curve.PublicKey{{2}, {}} {
		if Verify(u, msg, sig) {
			t.Errorf("u = %x accepted", u)
		}
	}
}

func FuzzVerify(f *testing.F) {
	_, pub, msg, sig := libsignalVector(f)
	f.Add(pub[:], msg, sig[:])
	f.Fuzz(func(t *testing.T, pub, msg, sig []byte) {
		if len(pub) != 32 || len(sig) != 64 {
			return
		}
		p, s := curve.PublicKey(pub), [64]byte(sig)
		ok := Verify(p, msg, s)
		if ok != Verify(p, msg, s) {
			t.Fatal("Verify is not deterministic")
		}
		if ok {
			// Any accepted signature must have canonical s and u.
			s[63] &= 0x7f
			if _, err := new(edwards25519.Scalar).SetCanonicalBytes(s[32:]); err != nil {
				t.Fatal("accepted non-canonical s")
			}
		}
	})
}

func FuzzSignVerify(f *testing.F) {
	f.Add(unhex(f, vecPriv), unhex(f, vecMsg), make([]byte, 64))
	f.Fuzz(func(t *testing.T, key, msg, z []byte) {
		if len(key) != 32 || len(z) != 64 {
			return
		}
		priv := curve.PrivateKey(key)
		pub, err := priv.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		sig := Sign(priv, msg, [64]byte(z))
		if !Verify(pub, msg, sig) {
			t.Fatalf("round trip failed for key %x", key)
		}
	})
}

func BenchmarkSign(b *testing.B) {
	kp := randomKey(b)
	msg := make([]byte, 33)
	z := randomZ()
	for b.Loop() {
		Sign(kp.Private, msg, z)
	}
}

func BenchmarkVerify(b *testing.B) {
	kp := randomKey(b)
	msg := make([]byte, 33)
	sig := Sign(kp.Private, msg, randomZ())
	for b.Loop() {
		if !Verify(kp.Public, msg, sig) {
			b.Fatal("rejected")
		}
	}
}
