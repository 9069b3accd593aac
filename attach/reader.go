package attach

import (
	"errors"
	"fmt"
	"io"
)

// PlainSize returns the size of the plaintext whose ciphertext is
// encrypted bytes long (the inverse of EncryptedSize), or -1 if no
// plaintext encrypts to that size.
func PlainSize(encrypted int64) int64 {
	if encrypted < Overhead {
		return -1
	}
	full := encrypted / EncryptedChunkSize
	rest := encrypted % EncryptedChunkSize
	switch {
	case rest == 0 && full > 0:
		return full * ChunkSize // the last chunk is full
	case rest < Overhead:
		return -1
	case rest == Overhead && full > 0:
		return -1 // an empty final chunk only ever stands alone
	}
	return full*ChunkSize + rest - Overhead
}

// Reader reads the plaintext of a stored ciphertext at any offset, opening
// (and authenticating) only the chunks it needs: an encrypted copy of a
// file can be shown, seeked and inspected without a plaintext copy on disk.
// It implements io.ReaderAt; wrap it in io.NewSectionReader(r, 0, r.Size())
// for Read and Seek.
type Reader struct {
	key  [32]byte
	ct   io.ReaderAt
	size int64 // plaintext
	last uint64

	cached  uint64 // index of the chunk in chunk, if valid
	chunk   []byte
	valid   bool
	scratch []byte
}

// NewReader returns a Reader of the plaintext of the ciphertext ct, which
// is encrypted bytes long.
func NewReader(key [32]byte, ct io.ReaderAt, encrypted int64) (*Reader, error) {
	size := PlainSize(encrypted)
	if size < 0 {
		return nil, fmt.Errorf("%w: %d bytes is no ciphertext's size", ErrTampered, encrypted)
	}
	last := uint64(0)
	if size > 0 {
		last = uint64((size - 1) / ChunkSize)
	}
	return &Reader{key: key, ct: ct, size: size, last: last, scratch: make([]byte, EncryptedChunkSize)}, nil
}

// Size is the plaintext's size.
func (r *Reader) Size() int64 { return r.size }

// ReadAt implements io.ReaderAt. It is not safe for concurrent use.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("attach: negative offset")
	}
	n := 0
	for len(p) > 0 {
		if off >= r.size {
			return n, io.EOF
		}
		idx := uint64(off / ChunkSize)
		chunk, err := r.open(idx)
		if err != nil {
			return n, err
		}
		c := copy(p, chunk[off%ChunkSize:])
		n += c
		p = p[c:]
		off += int64(c)
	}
	return n, nil
}

// open returns the plaintext of chunk idx.
func (r *Reader) open(idx uint64) ([]byte, error) {
	if r.valid && r.cached == idx {
		return r.chunk, nil
	}
	final := idx == r.last
	length := int64(EncryptedChunkSize)
	if final {
		length = int64(r.size) - int64(idx)*ChunkSize + Overhead
	}
	buf := r.scratch[:length]
	if _, err := r.ct.ReadAt(buf, int64(idx)*EncryptedChunkSize); err != nil && !(err == io.EOF && final) {
		return nil, fmt.Errorf("attach: reading chunk %d: %w", idx, err)
	}
	pt, err := DecryptChunk(r.key, idx, final, buf)
	if err != nil {
		r.valid = false
		return nil, err
	}
	r.chunk, r.cached, r.valid = pt, idx, true
	return pt, nil
}
