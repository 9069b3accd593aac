package attach

import (
	"bytes"
	"errors"
	"testing"
)

// fuzzKey is the key FuzzDecryptWriter uses; the valid ciphertexts in
// testdata/fuzz/FuzzDecryptWriter were made with it.
var fuzzKey = [32]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
	17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}

// FuzzDecryptWriter feeds arbitrary ciphertext, split at an arbitrary
// point, to NewDecryptWriter. It must not panic, must fail with one of the
// package's errors, and whatever it accepts must be exactly what encrypting
// the output again gives (encryption is deterministic for a given key), so
// no two ciphertexts decrypt to the same plaintext.
func FuzzDecryptWriter(f *testing.F) {
	for _, n := range []int{0, 1, 5, 100} {
		f.Add(encrypt(f, fuzzKey, bytes.Repeat([]byte{'a'}, n)), uint16(3))
	}
	// Two chunks, the first full (kept out of testdata: it is 64 KiB).
	f.Add(encrypt(f, fuzzKey, bytes.Repeat([]byte{'b'}, ChunkSize+1)), uint16(ChunkSize-1))
	f.Add([]byte{}, uint16(0))
	f.Add(make([]byte, 16), uint16(1))
	f.Fuzz(func(t *testing.T, ct []byte, split uint16) {
		var out bytes.Buffer
		w := NewDecryptWriter(fuzzKey, &out)
		s := min(int(split), len(ct))
		_, err := w.Write(ct[:s])
		if err == nil {
			_, err = w.Write(ct[s:])
		}
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			if !errors.Is(err, ErrTampered) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrTrailingData) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if again := encrypt(t, fuzzKey, out.Bytes()); !bytes.Equal(again, ct) {
			t.Fatalf("accepted ciphertext is not the encryption of its plaintext")
		}
	})
}
