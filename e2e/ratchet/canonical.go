package ratchet

import (
	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"

	"github.com/magpie-im/magpie/e2e/curve"
)

// isCanonical reports whether a Curve25519 public key is what libsignal
// calls canonical (rust/core/src/curve.rs:165-190): its u-coordinate is
// below p = 2^255-19, and it maps (with sign 0) to an Edwards point that is
// torsion-free, that is, in the subgroup of prime order L. libsignal
// requires this of the initiator's base key (ratchet.rs:139-145).
//
// The map is the birational one of RFC 7748 §4.1, y = (u-1)/(u+1); u = -1
// has no image, and a u on the quadratic twist gives a y that does not
// decompress. Torsion-freeness is [L]P = O, computed as [L-1]P + P since
// scalars are reduced mod L. Only public data is involved.
func isCanonical(pub curve.PublicKey) bool {
	// scalar_is_in_range: bit 255 clear and not p <= u < 2^255.
	if pub[31]&0x80 != 0 {
		return false
	}
	if pub[31] == 0x7F && pub[0] >= 0xED && allFF(pub[1:31]) {
		return false
	}
	u, err := new(field.Element).SetBytes(pub[:])
	if err != nil {
		return false
	}
	one := new(field.Element).One()
	den := new(field.Element).Add(u, one)
	if den.Equal(new(field.Element).Zero()) == 1 {
		return false
	}
	y := new(field.Element).Subtract(u, one)
	y.Multiply(y, new(field.Element).Invert(den))
	p, err := new(edwards25519.Point).SetBytes(y.Bytes())
	if err != nil {
		return false
	}
	q := new(edwards25519.Point).ScalarMult(scalarMinusOne, p)
	q.Add(q, p)
	return q.Equal(edwards25519.NewIdentityPoint()) == 1
}

// scalarMinusOne is L-1, that is -1 mod L.
var scalarMinusOne = func() *edwards25519.Scalar {
	one, err := edwards25519.NewScalar().SetCanonicalBytes(append([]byte{1}, make([]byte, 31)...))
	if err != nil {
		panic(err)
	}
	return edwards25519.NewScalar().Negate(one)
}()

func allFF(b []byte) bool {
	for _, x := range b {
		if x != 0xFF {
			return false
		}
	}
	return true
}
