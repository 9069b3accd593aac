// Package xeddsa implements XEdDSA signatures over Curve25519 keys, as
// specified in "The XEdDSA and VXEdDSA Signature Schemes" (Trevor Perrin,
// Signal, revision 1, 2016-10-20), hereafter "the spec", so that an X25519
// identity key can sign pre-keys and verify signatures made by libsignal.
//
// The one place where the Signal libraries depart from the spec is the
// sign bit of the Edwards public key, and this package follows them there
// on the verifying side only:
//
//   - Sign is the spec's xeddsa_sign: calculate_key_pair forces the sign
//     bit of A to 0 (negating the private scalar when needed), so the
//     signature's top bit, the top bit of s, is always 0.
//   - libsignal (rust/core/src/curve/curve25519.rs at v0.90.0) signs with
//     the un-negated scalar and stores A's sign bit in the top bit of the
//     signature's last byte, which is otherwise always 0 because s < 2^253.
//     Its verifier takes that bit as the sign of A when it converts the
//     Montgomery u to an Edwards point. Verify does the same, so it accepts
//     both libsignal's signatures and the spec's (whose bit is 0, which
//     makes the conversion exactly the spec's convert_mont). libsignal in
//     turn accepts ours.
//
// Arithmetic uses filippo.io/edwards25519. Verification runs in variable
// time, which is fine because its inputs are public; signing is constant
// time in the private key.
package xeddsa

import (
	"crypto/sha512"
	"crypto/subtle"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"

	"github.com/magpie-im/magpie/e2e/curve"
)

// SignatureSize is the size of an XEdDSA signature R || s (spec §2.5:
// 2b bits with b = 256).
const SignatureSize = 64

// hash1Prefix is the domain separation of the spec's hash_1 (§2.5 and
// §5.1): hash_i(X) = hash(2^b - 1 - i || X), the 256-bit integer
// 2^256 - 2 in little-endian order, so that the nonce hash can never
// collide with the challenge hash, whose input starts with R.
var hash1Prefix = [32]byte{
	0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
}

// calculateKeyPair is the spec's calculate_key_pair (§2.3): E = kB with k
// the clamped X25519 scalar; A is E with its sign bit forced to 0, and the
// returned scalar a satisfies A = aB (a = -k mod q when E's sign bit was
// 1). The selection is done without branching on the sign bit, which is
// not otherwise public.
func calculateKeyPair(priv curve.PrivateKey) (a *edwards25519.Scalar, aEnc [32]byte) {
	k := priv.Clamp()
	// SetBytesWithClamping clamps again (a no-op now) and reduces mod q.
	a, err := new(edwards25519.Scalar).SetBytesWithClamping(k[:])
	if err != nil {
		panic("xeddsa: 32-byte scalar rejected: " + err.Error())
	}
	e := new(edwards25519.Point).ScalarBaseMult(a)
	copy(aEnc[:], e.Bytes())
	sign := int(aEnc[31] >> 7)
	aEnc[31] &= 0x7f // A.s = 0: negating a point flips only the sign of x.

	aBytes := a.Bytes()
	subtle.ConstantTimeCopy(sign, aBytes, new(edwards25519.Scalar).Negate(a).Bytes())
	if _, err := a.SetCanonicalBytes(aBytes); err != nil {
		panic("xeddsa: reduced scalar not canonical: " + err.Error())
	}
	return a, aEnc
}

// Sign returns the spec's xeddsa_sign(k, M, Z) (§2.5, §5 for Curve25519):
//
//	A, a = calculate_key_pair(k)
//	r = hash_1(a || M || Z) (mod q)
//	R = rB
//	h = hash(R || A || M) (mod q)
//	s = r + ha (mod q)
//	return R || s
//
// random is Z, which must be 64 bytes from a secure random source (the
// spec's requirement); it keeps r secret even if the same message is
// signed twice, and hedges against fault attacks.
func Sign(priv curve.PrivateKey, msg []byte, random [64]byte) [64]byte {
	a, aEnc := calculateKeyPair(priv)

	nonce := sha512.New()
	nonce.Write(hash1Prefix[:])
	nonce.Write(a.Bytes())
	nonce.Write(msg)
	nonce.Write(random[:])
	r, err := new(edwards25519.Scalar).SetUniformBytes(nonce.Sum(nil))
	if err != nil {
		panic("xeddsa: " + err.Error())
	}
	rEnc := new(edwards25519.Point).ScalarBaseMult(r).Bytes()

	h := challenge(rEnc, aEnc[:], msg)
	s := new(edwards25519.Scalar).MultiplyAdd(h, a, r)

	var sig [SignatureSize]byte
	copy(sig[:32], rEnc)
	copy(sig[32:], s.Bytes())
	// s < q < 2^253, so the top bit of sig[63] is 0: the sign bit of A,
	// as libsignal's verifier reads it.
	return sig
}

// challenge is h = hash(R || A || M) (mod q), with hash = SHA-512 (spec §5).
func challenge(rEnc, aEnc, msg []byte) *edwards25519.Scalar {
	d := sha512.New()
	d.Write(rEnc)
	d.Write(aEnc)
	d.Write(msg)
	h, err := new(edwards25519.Scalar).SetUniformBytes(d.Sum(nil))
	if err != nil {
		panic("xeddsa: " + err.Error())
	}
	return h
}

// minusOne is p - 1, the u-coordinate where the birational map below has
// no value (u + 1 = 0).
var minusOne = new(field.Element).Negate(new(field.Element).One())

// Verify reports whether sig is a valid signature of msg by pub. It is the
// spec's xeddsa_verify (§2.5, §5) with libsignal's sign-bit extension:
//
//	if u >= p or R.y >= 2^|p| or s >= 2^|q|: return false
//	A = convert_mont(u)   -- with A.s taken from the top bit of sig[63]
//	if not on_curve(A): return false
//	h = hash(R || A || M) (mod q)
//	Rcheck = sB - hA
//	return bytes_equal(R, Rcheck)
//
// Two checks are stricter than libsignal's verifier, and neither can
// refuse a signature made by an honest signer: s must be fully reduced
// (s < q, not only s < 2^253 as the spec requires), which rules out the
// malleable twin s + q of a valid signature; and u must be canonical
// (u < p, as the spec requires, where libsignal reduces it).
func Verify(pub curve.PublicKey, msg []byte, sig [64]byte) bool {
	// The top bit of the last byte is A's sign bit, not part of s.
	sign := sig[63] >> 7
	var sEnc [32]byte
	copy(sEnc[:], sig[32:])
	sEnc[31] &= 0x7f
	s, err := new(edwards25519.Scalar).SetCanonicalBytes(sEnc[:])
	if err != nil {
		return false
	}

	// u >= p: field.Element.SetBytes ignores the top bit and accepts
	// values up to 2^255 - 1, so check that the encoding round-trips.
	u, err := new(field.Element).SetBytes(pub[:])
	if err != nil || subtle.ConstantTimeCompare(u.Bytes(), pub[:]) != 1 {
		return false
	}
	// At u = -1 the map is undefined. The spec's inv(0) = 0 would give
	// y = 0, a point of order 4; libsignal refuses the key, and so do we.
	if u.Equal(minusOne) == 1 {
		return false
	}

	// convert_mont: y = u_to_y(u) = (u - 1) * inv(u + 1) (mod p) (§2.2),
	// with the sign bit from the signature.
	one := new(field.Element).One()
	y := new(field.Element).Subtract(u, one)
	y.Multiply(y, new(field.Element).Invert(new(field.Element).Add(u, one)))
	var aEnc [32]byte
	copy(aEnc[:], y.Bytes())
	aEnc[31] |= sign << 7
	// SetBytes fails when no x exists for y: the on_curve check.
	A, err := new(edwards25519.Point).SetBytes(aEnc[:])
	if err != nil {
		return false
	}

	// R is compared as bytes against the canonical encoding of Rcheck, so
	// a non-canonical R (the spec's R.y >= 2^|p| test) can never match.
	h := challenge(sig[:32], A.Bytes(), msg)
	minusA := new(edwards25519.Point).Negate(A)
	rCheck := new(edwards25519.Point).VarTimeDoubleScalarBaseMult(h, minusA, s)
	return subtle.ConstantTimeCompare(rCheck.Bytes(), sig[:32]) == 1
}
