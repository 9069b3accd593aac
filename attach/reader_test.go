package attach

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// PlainSize inverts EncryptedSize for every size around chunk boundaries,
// and refuses sizes no plaintext encrypts to.
func TestPlainSizeInvertsEncryptedSize(t *testing.T) {
	valid := map[int64]bool{}
	for _, n := range []int64{0, 1, 2, ChunkSize - 1, ChunkSize, ChunkSize + 1, 2*ChunkSize - 1, 2 * ChunkSize, 2*ChunkSize + 1, 5*ChunkSize + 77} {
		e := EncryptedSize(n)
		valid[e] = true
		if got := PlainSize(e); got != n {
			t.Errorf("PlainSize(EncryptedSize(%d) = %d) = %d", n, e, got)
		}
	}
	for _, e := range []int64{-1, 0, Overhead - 1, EncryptedChunkSize + Overhead, EncryptedChunkSize + 3} {
		if valid[e] {
			continue
		}
		if got := PlainSize(e); got != -1 {
			t.Errorf("PlainSize(%d) = %d, want -1 (no plaintext has that ciphertext size)", e, got)
		}
	}
}

// Reading the plaintext back through a Reader, at any offset and length,
// gives the bytes that were encrypted.
func TestReaderReadsAnyRange(t *testing.T) {
	key, _ := NewKey()
	for _, n := range []int{0, 1, ChunkSize, ChunkSize + 1, 3*ChunkSize + 500} {
		plain := randBytes(n, uint64(n))
		ct := encrypt(t, key, plain)
		r, err := NewReader(key, bytes.NewReader(ct), int64(len(ct)))
		if err != nil {
			t.Fatal(err)
		}
		if r.Size() != int64(n) {
			t.Fatalf("Size = %d, want %d", r.Size(), n)
		}
		all, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
		if err != nil || !bytes.Equal(all, plain) {
			t.Fatalf("n=%d: whole read differs (err %v)", n, err)
		}
		for range 50 {
			if n == 0 {
				break
			}
			off := rand.IntN(n)
			l := rand.IntN(n-off) + 1
			buf := make([]byte, l)
			got, err := r.ReadAt(buf, int64(off))
			if got != l || (err != nil && err != io.EOF) || !bytes.Equal(buf, plain[off:off+l]) {
				t.Fatalf("n=%d ReadAt(%d bytes at %d) = %d, %v", n, l, off, got, err)
			}
		}
		if _, err := r.ReadAt(make([]byte, 1), int64(n)); err != io.EOF {
			t.Fatalf("read at the end: %v, want io.EOF", err)
		}
	}
}

// A changed byte in the chunk being read fails authentication; the other
// chunks still read.
func TestReaderRefusesTamperedChunk(t *testing.T) {
	key, _ := NewKey()
	plain := bytes.Repeat([]byte("magpie"), ChunkSize/2)
	ct := encrypt(t, key, plain)
	ct[EncryptedChunkSize+10] ^= 1 // in chunk 1
	r, err := NewReader(key, bytes.NewReader(ct), int64(len(ct)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(make([]byte, 10), ChunkSize+5); !errors.Is(err, ErrTampered) {
		t.Fatalf("tampered chunk read: %v, want ErrTampered", err)
	}
	buf := make([]byte, 10)
	if _, err := r.ReadAt(buf, 5); err != nil || !bytes.Equal(buf, plain[5:15]) {
		t.Fatalf("intact chunk: %v", err)
	}
	// Cut by a byte, the size still names a plaintext, but the last chunk
	// no longer authenticates.
	cut, err := NewReader(key, bytes.NewReader(ct[:len(ct)-1]), int64(len(ct))-1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cut.ReadAt(make([]byte, 1), cut.Size()-1); !errors.Is(err, ErrTampered) {
		t.Fatalf("a ciphertext cut short: %v, want ErrTampered", err)
	}
	if _, err := NewReader(key, bytes.NewReader(ct), EncryptedChunkSize+3); !errors.Is(err, ErrTampered) {
		t.Fatalf("a size no ciphertext has: %v, want ErrTampered", err)
	}
}

// eofAtEnd is an io.ReaderAt that returns io.EOF with a read that reaches
// the end of its data, as the io.ReaderAt contract allows.
type eofAtEnd []byte

func (e eofAtEnd) ReadAt(p []byte, off int64) (int, error) {
	n, err := bytes.NewReader(e).ReadAt(p, off)
	if err == nil && off+int64(n) == int64(len(e)) {
		err = io.EOF
	}
	return n, err
}

// A ciphertext source that says io.EOF along with the last bytes (as files
// and network readers may) still reads whole.
func TestReaderTakesEOFWithTheLastChunk(t *testing.T) {
	key, _ := NewKey()
	plain := randBytes(2*ChunkSize+7, 7)
	ct := encrypt(t, key, plain)
	r, err := NewReader(key, eofAtEnd(ct), int64(len(ct)))
	if err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if err != nil || !bytes.Equal(all, plain) {
		t.Fatalf("read %d of %d bytes: %v", len(all), len(plain), err)
	}
}
