package ratchet

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

// A base key is refused when its encoding is not the canonical one, even
// when the point it reduces to is fine: libsignal's scalar_is_in_range
// (curve.rs:165-190) refuses u >= p before looking at the point. u = 9 (the
// base point) and 16 are canonical; p + 9 and p + 16, the same points
// written with u >= p, are not. They are the only encodings above p whose
// point would pass the torsion check, so only they tell the range check's
// bounds apart.
func TestBaseKeyEncodedAboveFieldPrimeRefused(t *testing.T) {
	le := func(s string) (k [32]byte) {
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != 32 {
			t.Fatal("bad hex")
		}
		copy(k[:], b)
		return k
	}
	for _, c := range []struct{ reduced, unreduced string }{
		{"0900000000000000000000000000000000000000000000000000000000000000", "f6ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"},
		{"1000000000000000000000000000000000000000000000000000000000000000", "fdffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"},
	} {
		if !isCanonical(le(c.reduced)) {
			t.Errorf("u = %s refused", c.reduced)
		}
		if isCanonical(le(c.unreduced)) {
			t.Errorf("u = %s (u >= p) accepted", c.unreduced)
		}
	}
}

// UnmarshalBinary's count limits are the package limits, inclusive: a
// record holding exactly ArchivedStatesMax archived states, a state with
// MaxReceiverChains receiving chains, a chain with MaxMessageKeys skipped
// keys, or a pending Kyber ciphertext of maxKyberCiphertext bytes decodes;
// one more of any is refused. The session code reaches the first three
// exactly (the ciphertext bound has room to spare), and a record that does
// not decode loses its sessions.
func TestRecordLimitsAreInclusive(t *testing.T) {
	p := newPair(t, true)
	decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &p.aRec, "hi"))
	base := p.bRec.current

	withChains := func(n, skipped int) *state {
		s := base.clone()
		s.receivers = nil
		for i := range n {
			c := chain{ratchetKey: mustKeyPair(t).Public, index: uint32(skipped + i)}
			for j := range skipped {
				c.skipped = append(c.skipped, skippedKey{index: uint32(j), seed: [32]byte{byte(j), byte(j >> 8)}})
			}
			s.receivers = append(s.receivers, c)
		}
		return s
	}
	withKyberCT := func(n int) *state {
		s := base.clone()
		id := uint32(7)
		s.pending = &pending{preKeyID: &id, signedPreKeyID: 1, kyberPreKeyID: 2, kyberCiphertext: bytes.Repeat([]byte{0xAB}, n), created: 1}
		return s
	}
	archived := func(n int) Record {
		r := Record{current: base}
		for range n {
			r.previous = append(r.previous, base)
		}
		return r
	}
	cases := []struct {
		name      string
		atLimit   Record
		overLimit Record
	}{
		{"archived states", archived(ArchivedStatesMax), archived(ArchivedStatesMax + 1)},
		{"receiving chains", Record{current: withChains(MaxReceiverChains, 0)}, Record{current: withChains(MaxReceiverChains+1, 0)}},
		{"skipped keys", Record{current: withChains(1, MaxMessageKeys)}, Record{current: withChains(1, MaxMessageKeys+1)}},
		{"Kyber ciphertext", Record{current: withKyberCT(maxKyberCiphertext)}, Record{current: withKyberCT(maxKyberCiphertext + 1)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			roundTrip(t, &c.atLimit)
			b, err := c.overLimit.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var r Record
			if err := r.UnmarshalBinary(b); !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("a record over the limit: %v, want ErrInvalidRecord", err)
			}
		})
	}
}
