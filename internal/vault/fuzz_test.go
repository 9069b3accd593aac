package vault

import (
	"bytes"
	"errors"
	"testing"
)

// fuzzKey is the key of the vault FuzzOpen uses; the sealed values in
// testdata/fuzz/FuzzOpen were made with it.
var fuzzKey = [32]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
	17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}

func FuzzHeaderUnmarshalBinary(f *testing.F) {
	_, ph, _ := NewFromPassphrase([]byte("pw"), testParams)
	_, rh, _ := NewFromKey(fuzzKey)
	pb, _ := ph.MarshalBinary()
	rb, _ := rh.MarshalBinary()
	f.Add(pb)
	f.Add(rb)
	f.Add([]byte("MGPV\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var h Header
		if err := h.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, ErrBadHeader) {
				t.Fatalf("error %v does not wrap ErrBadHeader", err)
			}
			if h != (Header{}) {
				t.Fatal("header modified on error")
			}
			return
		}
		out, err := h.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted header does not marshal: %v", err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("round trip changed the encoding:\n in %x\nout %x", data, out)
		}
		if err := h.params.Validate(); h.mode == ModePassphrase && err != nil {
			t.Fatalf("accepted out-of-range params: %v", err)
		}
		// Opening with a secret no seed was made with must fail cleanly,
		// never panic. Skip expensive Argon2id parameters.
		other := fuzzKey
		other[0] ^= 0xff
		if h.mode == ModeRawKey {
			if _, err := OpenWithKey(other, h); !errors.Is(err, ErrWrongKey) {
				t.Fatalf("raw-key header with another key: %v", err)
			}
		} else if uint64(h.params.Time)*uint64(h.params.MemoryKiB) <= 1024 {
			if _, err := OpenWithPassphrase([]byte("not the passphrase"), h); !errors.Is(err, ErrWrongPassphrase) {
				t.Fatalf("passphrase header with another passphrase: %v", err)
			}
		}
	})
}

func FuzzOpen(f *testing.F) {
	v, _, err := NewFromKey(fuzzKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("row"), v.Seal([]byte("row"), []byte("value")))
	f.Add([]byte(nil), v.Seal(nil, nil))
	f.Add([]byte("x"), []byte{})
	f.Fuzz(func(t *testing.T, aad, sealed []byte) {
		pt, err := v.Open(aad, sealed)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			if pt != nil {
				t.Fatal("plaintext returned with an error")
			}
			return
		}
		if len(pt) != len(sealed)-Overhead {
			t.Fatalf("plaintext length %d from %d sealed bytes", len(pt), len(sealed))
		}
		// It authenticated, so any change must not.
		c := bytes.Clone(sealed)
		c[len(c)-1] ^= 1
		if _, err := v.Open(aad, c); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("modified value accepted: %v", err)
		}
	})
}
