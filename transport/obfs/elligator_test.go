package obfs

import (
	"bytes"
	"testing"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
	"golang.org/x/crypto/curve25519"
)

func TestLowOrderPoints(t *testing.T) {
	id := lowOrder[0]
	for k := 1; k < 8; k++ {
		if lowOrder[k].Equal(id) == 1 {
			t.Fatalf("[%d]T is the identity", k)
		}
	}
	p8 := new(edwards25519.Point).Add(lowOrder[1], lowOrder[7]) // [8]T
	if p8.Equal(id) != 1 {
		t.Fatal("[8]T is not the identity")
	}
}

func TestElligatorKeys(t *testing.T) {
	highBits := map[byte]int{}
	branch1 := 0
	const n = 400
	for range n {
		k, err := newEphemeralKey(cryptoReader{})
		if err != nil {
			t.Fatal(err)
		}
		// The representative maps back to the public key.
		if u := representativeToU(&k.repr); u != k.public {
			t.Fatalf("map(repr) = %x, want %x", u, k.public)
		}
		highBits[k.repr[31]>>6]++
		// X25519 against the dirty key agrees with the clean key.
		other, _ := newEphemeralKey(cryptoReader{})
		clean, err := curve25519.X25519(k.private[:], curve25519.Basepoint)
		if err != nil {
			t.Fatal(err)
		}
		s1, err := curve25519.X25519(other.private[:], k.public[:])
		if err != nil {
			t.Fatal(err)
		}
		s2, err := curve25519.X25519(other.private[:], clean)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(s1, s2) {
			t.Fatal("low-order component changed the shared secret")
		}
		s3, _ := curve25519.X25519(k.private[:], other.public[:])
		if !bytes.Equal(s1, s3) {
			t.Fatal("DH disagrees")
		}
		// Which branch of the map the representative takes.
		if firstBranch(&k.repr) {
			branch1++
		}
	}
	for b := byte(0); b < 4; b++ {
		if highBits[b] < n/8 {
			t.Fatalf("high bits %02b seen %d times out of %d: not random", b, highBits[b], n)
		}
	}
	if branch1 < n/3 || branch1 > 2*n/3 {
		t.Fatalf("first branch taken %d times of %d; representatives are distinguishable", branch1, n)
	}
}

// firstBranch reports whether g(x1) is square for the representative, ie
// the forward map returns x1 rather than -x1-A.
func firstBranch(repr *[32]byte) bool {
	b := *repr
	b[31] &= 0x3f
	r, _ := new(field.Element).SetBytes(b[:])
	d := new(field.Element).Square(r)
	d.Add(d, d)
	d.Add(d, feOne)
	x1 := new(field.Element).Invert(d)
	x1.Multiply(x1, feNegA)
	gx := new(field.Element).Add(x1, feA)
	gx.Multiply(gx, x1)
	gx.Add(gx, feOne)
	gx.Multiply(gx, x1)
	_, sq := new(field.Element).SqrtRatio(gx, feOne)
	return sq == 1
}

// TestElligatorUnrepresentable checks that the inverse refuses points
// outside the image (about half of them), and agrees with the forward map
// whenever it accepts.
func TestElligatorUnrepresentable(t *testing.T) {
	refused := 0
	for i := range 200 {
		var sk [32]byte
		copy(sk[:], pattern(32, byte(i)))
		u, err := curve25519.X25519(sk[:], curve25519.Basepoint)
		if err != nil {
			t.Fatal(err)
		}
		var uu [32]byte
		copy(uu[:], u)
		for br := range 2 {
			r, ok := uToRepresentative(&uu, br)
			if !ok {
				refused++
				continue
			}
			if r[31]&0xc0 != 0 {
				t.Fatal("representative has high bits set")
			}
			if got := representativeToU(&r); got != uu {
				t.Fatal("inverse and forward map disagree")
			}
		}
	}
	if refused < 100 || refused > 300 {
		t.Fatalf("refused %d of 400", refused)
	}
}
