package attach

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

const (
	// ChunkSize is the size of every plaintext chunk but the last.
	ChunkSize = 64 << 10
	// Overhead is what encryption adds to each chunk (the Poly1305 tag).
	Overhead = chacha20poly1305.Overhead
	// EncryptedChunkSize is the size of every ciphertext chunk but the last.
	// Chunk i of a ciphertext starts at offset i*EncryptedChunkSize.
	EncryptedChunkSize = ChunkSize + Overhead

	// maxChunks bounds the chunk index: the nonce holds an 11-byte counter,
	// but a uint64 index (2^64 chunks of 64 KiB) is far beyond any file.
	maxChunks = 1<<63 - 1
)

var (
	// ErrTampered means a chunk failed authentication: the ciphertext was
	// modified, reordered, cut inside a chunk, or the key is wrong.
	ErrTampered = errors.New("attach: ciphertext failed authentication")
	// ErrTruncated means the stream ended at a chunk boundary before its
	// final chunk, or was empty.
	ErrTruncated = errors.New("attach: ciphertext truncated (no final chunk)")
	// ErrTrailingData means bytes followed the final chunk.
	ErrTrailingData = errors.New("attach: data after the final chunk")
	// errClosed is returned by a DecryptWriter used after Close.
	errClosed = errors.New("attach: write after close")
)

// NewKey returns a fresh random attachment key. Never reuse a key for two
// attachments: the nonces restart at zero for every stream.
func NewKey() ([32]byte, error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("attach: generating key: %w", err)
	}
	return k, nil
}

// EncryptedSize returns the size of the ciphertext of a plain-byte
// attachment: one tag per chunk, and at least one (empty, final) chunk. It
// returns -1 for a negative size.
func EncryptedSize(plain int64) int64 {
	if plain < 0 {
		return -1
	}
	chunks := plain / ChunkSize
	if plain%ChunkSize != 0 || plain == 0 {
		chunks++
	}
	return plain + chunks*Overhead
}

// nonce builds the STREAM nonce of chunk index: an 11-byte big-endian
// counter followed by the last-chunk flag (age.md, "Payload").
func nonce(index uint64, final bool) [chacha20poly1305.NonceSize]byte {
	var n [chacha20poly1305.NonceSize]byte
	// Bytes 0..2 are the counter's high bytes, always zero for a uint64.
	binary.BigEndian.PutUint64(n[3:11], index)
	if final {
		n[11] = 1
	}
	return n
}

func newAEAD(key [32]byte) cipher.AEAD {
	a, err := chacha20poly1305.New(key[:])
	if err != nil {
		// Only a wrong key length fails, and the key is [32]byte.
		panic("attach: " + err.Error())
	}
	return a
}

// DecryptChunk opens chunk index of a ciphertext on its own, for downloads
// that resume or fetch ranges: ct is the whole ciphertext chunk (tag
// included), which starts at offset index*EncryptedChunkSize. final says
// whether the caller expects it to be the last chunk (known from the
// ciphertext size). A non-final chunk must be exactly EncryptedChunkSize
// bytes, and a final chunk may be empty only at index 0. Every failure wraps
// ErrTampered. Checking the whole ciphertext's Digest remains the caller's
// job.
func DecryptChunk(key [32]byte, index uint64, final bool, ct []byte) ([]byte, error) {
	if err := checkChunk(index, final, len(ct)); err != nil {
		return nil, err
	}
	n := nonce(index, final)
	pt, err := newAEAD(key).Open(nil, n[:], ct, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: chunk %d", ErrTampered, index)
	}
	return pt, nil
}

// checkChunk enforces the chunk-length rules of the format.
func checkChunk(index uint64, final bool, n int) error {
	switch {
	case index > maxChunks:
		return fmt.Errorf("%w: chunk index %d out of range", ErrTampered, index)
	case n < Overhead || n > EncryptedChunkSize:
		return fmt.Errorf("%w: chunk %d has length %d", ErrTampered, index, n)
	case !final && n != EncryptedChunkSize:
		return fmt.Errorf("%w: non-final chunk %d has length %d", ErrTampered, index, n)
	case final && n == Overhead && index != 0:
		return fmt.Errorf("%w: empty final chunk %d", ErrTampered, index)
	}
	return nil
}

// encReader is the io.Reader returned by NewEncryptReader.
type encReader struct {
	aead  cipher.AEAD
	src   io.Reader
	buf   []byte // ChunkSize+Overhead: one chunk, sealed in place
	out   []byte // sealed bytes not yet returned
	index uint64
	peek  [1]byte                          // first byte of the next chunk, read to detect the end
	ahead bool                             // peek holds a byte
	done  bool                             // the final chunk has been sealed
	err   error                            // sticky error from src
	nonce [chacha20poly1305.NonceSize]byte // kept here so it does not escape per chunk
}

// NewEncryptReader returns a reader of the ciphertext of plain under key.
// It reads plain one chunk ahead and holds one chunk in memory, whatever the
// stream's length. An error from plain is returned as is, and sticks.
func NewEncryptReader(key [32]byte, plain io.Reader) io.Reader {
	return &encReader{
		aead: newAEAD(key),
		src:  plain,
		buf:  make([]byte, EncryptedChunkSize),
	}
}

func (r *encReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(r.out) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.done {
			return 0, io.EOF
		}
		r.fill()
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	return n, nil
}

// fill reads and seals the next chunk. To know whether a full chunk is the
// last one it reads one byte beyond it, which starts the next chunk.
func (r *encReader) fill() {
	pt := r.buf[:ChunkSize]
	n := 0
	if r.ahead {
		pt[0] = r.peek[0]
		n = 1
		r.ahead = false
	}
	m, err := io.ReadFull(r.src, pt[n:])
	n += m
	final := false
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		final = true
	case err != nil:
		r.err = err
		return
	default:
		_, err = io.ReadFull(r.src, r.peek[:])
		switch {
		case err == io.EOF:
			final = true
		case err != nil:
			r.err = err
			return
		default:
			r.ahead = true
		}
	}
	if r.index > maxChunks {
		r.err = errors.New("attach: too many chunks")
		return
	}
	r.nonce = nonce(r.index, final)
	r.out = r.aead.Seal(pt[:0], r.nonce[:], pt[:n], nil)
	r.index++
	r.done = final
}

// DecryptWriter is the io.WriteCloser returned by NewDecryptWriter.
type DecryptWriter struct {
	aead cipher.AEAD
	dst  io.Writer
	buf  []byte // up to EncryptedChunkSize bytes of the current chunk
	pt   []byte // ChunkSize bytes for the opened chunk (Open zeroes its
	// output on failure, so it cannot open in place and then retry)
	index uint64
	err   error                            // sticky
	nonce [chacha20poly1305.NonceSize]byte // kept here so it does not escape per chunk
}

// NewDecryptWriter returns a writer that takes ciphertext, authenticates it
// chunk by chunk and writes only authenticated plaintext to dst. A full
// chunk is opened once the first byte after it arrives (only then is it
// known not to be the last), so at most one chunk is held back; the last
// chunk is opened and written by Close. Errors wrap ErrTampered,
// ErrTruncated or ErrTrailingData, and stick. Plaintext written to dst
// before a later error is authenticated, but the attachment as a whole is
// only valid once Close returns nil (and its Digest matched).
func NewDecryptWriter(key [32]byte, dst io.Writer) io.WriteCloser {
	return &DecryptWriter{
		aead: newAEAD(key),
		dst:  dst,
		buf:  make([]byte, 0, EncryptedChunkSize),
		pt:   make([]byte, 0, ChunkSize),
	}
}

// Write implements io.Writer.
func (w *DecryptWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		if len(w.buf) == EncryptedChunkSize {
			// More data follows a full chunk, so it must not be the last.
			if err := w.openNonFinal(); err != nil {
				w.err = err
				return written, err
			}
		}
		n := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+n]
		p = p[n:]
		written += n
	}
	return written, nil
}

// openNonFinal opens the full buffered chunk as a non-final chunk.
func (w *DecryptWriter) openNonFinal() error {
	if w.index >= maxChunks {
		return fmt.Errorf("%w: too many chunks", ErrTampered)
	}
	w.nonce = nonce(w.index, false)
	pt, err := w.aead.Open(w.pt[:0], w.nonce[:], w.buf, nil)
	if err != nil {
		// Tell apart a valid final chunk followed by more bytes.
		w.nonce = nonce(w.index, true)
		if _, ferr := w.aead.Open(w.pt[:0], w.nonce[:], w.buf, nil); ferr == nil {
			return fmt.Errorf("%w: after chunk %d", ErrTrailingData, w.index)
		}
		return fmt.Errorf("%w: chunk %d", ErrTampered, w.index)
	}
	if _, err := w.dst.Write(pt); err != nil {
		return err
	}
	w.index++
	w.buf = w.buf[:0]
	return nil
}

// Close opens the last buffered chunk as the final chunk and writes its
// plaintext. It fails if the stream ended at a chunk boundary without a
// final chunk (ErrTruncated), inside a chunk or with a bad final chunk
// (ErrTampered). It does not close dst.
func (w *DecryptWriter) Close() error {
	if w.err != nil {
		if w.err == errClosed {
			return nil
		}
		return w.err
	}
	w.err = w.closeFinal()
	if w.err != nil {
		return w.err
	}
	w.err = errClosed
	return nil
}

func (w *DecryptWriter) closeFinal() error {
	switch {
	case len(w.buf) == 0:
		// Nothing written at all (every full chunk keeps its last byte
		// buffered until more arrives).
		return fmt.Errorf("%w: empty stream", ErrTruncated)
	case len(w.buf) < Overhead:
		return fmt.Errorf("%w: stream ends inside chunk %d", ErrTruncated, w.index)
	}
	if err := checkChunk(w.index, true, len(w.buf)); err != nil {
		return err
	}
	w.nonce = nonce(w.index, true)
	pt, err := w.aead.Open(w.pt[:0], w.nonce[:], w.buf, nil)
	if err != nil {
		if len(w.buf) == EncryptedChunkSize {
			w.nonce = nonce(w.index, false)
			if _, nerr := w.aead.Open(w.pt[:0], w.nonce[:], w.buf, nil); nerr == nil {
				return fmt.Errorf("%w: stream ends after chunk %d", ErrTruncated, w.index)
			}
		}
		return fmt.Errorf("%w: final chunk %d", ErrTampered, w.index)
	}
	if _, err := w.dst.Write(pt); err != nil {
		return err
	}
	w.index++
	w.buf = w.buf[:0]
	return nil
}

// Digest is the SHA-256 of a whole attachment ciphertext. The sender puts it
// in the end-to-end message with the key; the recipient compares it with the
// Digest of the bytes it downloaded before accepting the attachment. It
// commits the sender to one exact ciphertext (see the package comment).
type Digest [32]byte

// Equal reports whether d and o are the same, in constant time.
func (d Digest) Equal(o Digest) bool {
	return subtle.ConstantTimeCompare(d[:], o[:]) == 1
}

// Digester hashes ciphertext as it passes, for example through
// io.TeeReader on upload or io.MultiWriter on download.
type Digester struct{ h hash.Hash }

// NewDigester returns a Digester over no bytes yet.
func NewDigester() *Digester { return &Digester{h: sha256.New()} }

// Write adds ciphertext bytes; it never fails.
func (d *Digester) Write(p []byte) (int, error) { return d.h.Write(p) }

// Sum returns the Digest of everything written so far.
func (d *Digester) Sum() Digest {
	var out Digest
	d.h.Sum(out[:0])
	return out
}
