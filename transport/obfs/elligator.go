package obfs

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

// Elligator 2 for Curve25519 (Bernstein, Hamburg, Krasnova, Lange,
// "Elligator: elliptic-curve points indistinguishable from uniform random
// strings", CCS 2013; the map is specified in RFC 9380 §6.7.1 with Z = 2).
//
// The forward map takes a representative r (a field element) to the
// Montgomery u-coordinate
//
//	x1 = -A / (1 + 2r²)          (x1 = -A if the denominator is 0)
//	u  = x1        if g(x1) = x1³ + A·x1² + x1 is square,
//	u  = -x1 - A   otherwise.
//
// The inverse exists when -2u(u+A) is a square, and then u has exactly two
// representatives in [0, (p-1)/2]: r² = -u/(2(u+A)) (reached through the
// second branch) and r² = -(u+A)/(2u) (reached through the first). We pick
// between them with a fair coin, so a uniformly random representable point
// gives a uniformly random representative; always picking one branch would
// let an observer test g(x1) and tell our bytes from random ones.
//
// Ephemeral keys are "dirty": the public point is [x]B plus a random point
// of small order. Elligator only encodes about half of all points, and keys
// from the prime-order subgroup alone would leave a distinguisher (their
// images never reach the other cosets). X25519 clamps its scalar to a
// multiple of the cofactor 8, so the small-order part vanishes in every
// Diffie-Hellman and the shared secret is the usual X25519 one.
//
// We use filippo.io/edwards25519 (already a Magpie dependency, a maintained
// constant-time implementation that also backs Go's crypto/ed25519) for the
// field and group arithmetic, and write only the map itself.

var (
	feZero = new(field.Element).Zero()
	feOne  = new(field.Element).One()
	feA    = feSmall(486662)
	feNegA = new(field.Element).Negate(feA)

	// lowOrder[k] is [k]T for a generator T of the 8-torsion subgroup.
	lowOrder = computeLowOrder()
)

func feSmall(v uint32) *field.Element {
	var b [32]byte
	binary.LittleEndian.PutUint32(b[:], v)
	e, err := new(field.Element).SetBytes(b[:])
	if err != nil {
		panic(err)
	}
	return e
}

// computeLowOrder derives a point of order 8 as [ℓ]Q for a point Q found
// deterministically, and returns its multiples. (E(F_p) ≅ Z/8 × Z/ℓ, so
// [ℓ]Q lies in the torsion subgroup; we keep the first one of full order 8.)
func computeLowOrder() [8]*edwards25519.Point {
	// ℓ - 1, little-endian (ℓ = 2^252 + 27742317777372353535851937790883648493).
	lMinus1 := []byte{
		0xec, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58,
		0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
	}
	s, err := edwards25519.NewScalar().SetCanonicalBytes(lMinus1)
	if err != nil {
		panic(err)
	}
	id := edwards25519.NewIdentityPoint()
	for i := uint32(0); ; i++ {
		var seed [4]byte
		binary.BigEndian.PutUint32(seed[:], i)
		h := sha256.Sum256(append([]byte("magpie obfs torsion"), seed[:]...))
		h[31] &= 0x7f
		q, err := new(edwards25519.Point).SetBytes(h[:])
		if err != nil {
			continue
		}
		t := new(edwards25519.Point).ScalarMult(s, q)
		t.Add(t, q) // [ℓ]Q
		t4 := new(edwards25519.Point).Double(t)
		t4.Double(t4)
		if t4.Equal(id) == 1 {
			continue // order 1, 2 or 4
		}
		var out [8]*edwards25519.Point
		out[0] = edwards25519.NewIdentityPoint()
		for k := 1; k < 8; k++ {
			out[k] = new(edwards25519.Point).Add(out[k-1], t)
		}
		return out
	}
}

// representativeToU is the Elligator 2 forward map. The two high bits of
// the representative are ignored (they are random padding on the wire).
func representativeToU(repr *[32]byte) [32]byte {
	b := *repr
	b[31] &= 0x3f
	r, err := new(field.Element).SetBytes(b[:])
	if err != nil {
		panic(err) // unreachable: SetBytes accepts any 32 bytes
	}
	d := new(field.Element).Square(r)
	d.Add(d, d)
	d.Add(d, feOne) // 1 + 2r²
	d.Select(feOne, d, d.Equal(feZero))
	x1 := new(field.Element).Invert(d)
	x1.Multiply(x1, feNegA) // -A / (1 + 2r²)
	gx := new(field.Element).Add(x1, feA)
	gx.Multiply(gx, x1)
	gx.Add(gx, feOne)
	gx.Multiply(gx, x1) // x1³ + A·x1² + x1
	_, isSquare := new(field.Element).SqrtRatio(gx, feOne)
	x2 := new(field.Element).Negate(x1)
	x2.Subtract(x2, feA)
	u := new(field.Element).Select(x1, x2, isSquare)
	var out [32]byte
	copy(out[:], u.Bytes())
	return out
}

// uToRepresentative is the inverse map. branch (0 or 1) picks between the
// two representatives of u. The result is below 2^254, so its two high
// bits are zero. ok is false if u has no representative.
func uToRepresentative(u *[32]byte, branch int) (repr [32]byte, ok bool) {
	U, err := new(field.Element).SetBytes(u[:])
	if err != nil {
		return repr, false
	}
	uPlusA := new(field.Element).Add(U, feA)
	if U.Equal(feZero) == 1 || uPlusA.Equal(feZero) == 1 {
		return repr, false
	}
	// branch 0: r² = -u / (2(u+A)); branch 1: r² = -(u+A) / (2u).
	n0 := new(field.Element).Negate(U)
	d0 := new(field.Element).Add(uPlusA, uPlusA)
	n1 := new(field.Element).Negate(uPlusA)
	d1 := new(field.Element).Add(U, U)
	n := new(field.Element).Select(n1, n0, branch&1)
	d := new(field.Element).Select(d1, d0, branch&1)
	r, wasSquare := new(field.Element).SqrtRatio(n, d)
	if wasSquare != 1 {
		return repr, false
	}
	b := r.Bytes()
	if b[31]&0x40 != 0 { // r ≥ 2^254: use -r, which is below 2^254
		r.Negate(r)
		b = r.Bytes()
	}
	copy(repr[:], b)
	return repr, true
}

// ephemeralKey is an X25519 key pair whose public key has an Elligator 2
// representative.
type ephemeralKey struct {
	private [32]byte // X25519 scalar (clamped by X25519 itself)
	public  [32]byte // Montgomery u-coordinate
	repr    [32]byte // what goes on the wire, high bits randomized
}

var errNoKey = errors.New("obfs: could not generate a representable key")

func newEphemeralKey(rnd io.Reader) (*ephemeralKey, error) {
	var buf [33]byte
	for range 256 { // each try succeeds with probability 1/2
		if _, err := io.ReadFull(rnd, buf[:]); err != nil {
			return nil, err
		}
		k := &ephemeralKey{}
		copy(k.private[:], buf[:32])
		tweak := buf[32]
		s, err := edwards25519.NewScalar().SetBytesWithClamping(k.private[:])
		if err != nil {
			return nil, err
		}
		p := new(edwards25519.Point).ScalarBaseMult(s)
		p.Add(p, lowOrder[tweak&7])
		copy(k.public[:], p.BytesMontgomery())
		repr, ok := uToRepresentative(&k.public, int(tweak>>3)&1)
		if !ok {
			continue
		}
		repr[31] |= tweak & 0xc0
		k.repr = repr
		return k, nil
	}
	return nil, errNoKey
}
