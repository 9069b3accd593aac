package obfs

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"io"

	"golang.org/x/crypto/chacha20"
	"golang.org/x/crypto/chacha20poly1305"
)

// Data frames:
//
//	frame  = L' (2) ‖ sealed (L bytes)
//	L'     = L XOR next two bytes of ChaCha20(lenKey, nonce 0) keystream
//	sealed = ChaCha20-Poly1305(aeadKey, nonce = 0⁴ ‖ counter (8, big-endian),
//	                           plaintext, additional data = L')
//	plaintext = payload length (2, big-endian) ‖ payload ‖ zero padding
//
// A frame with a zero payload length is pure padding. The length mask and
// the counter run per direction and never repeat within a connection.
const (
	frameHeaderLen = 2
	frameInnerLen  = 2
	tagLen         = chacha20poly1305.Overhead
	// maxFramePlain is the largest plaintext (payload length field,
	// payload and padding) in one frame.
	maxFramePlain  = 16384
	maxFramePay    = maxFramePlain - frameInnerLen
	minFrameSealed = frameInnerLen + tagLen
	maxFrameSealed = maxFramePlain + tagLen
	maxFrameLen    = frameHeaderLen + maxFrameSealed
)

var (
	errFrameLength = errors.New("obfs: corrupt frame length")
	errFrameAuth   = errors.New("obfs: frame failed authentication")
	errFrameInner  = errors.New("obfs: corrupt frame contents")
	errNonceWrap   = errors.New("obfs: frame counter exhausted")
)

type frameCipher struct {
	aead    cipher.AEAD
	lenMask *chacha20.Cipher
	counter uint64
	nonce   [chacha20poly1305.NonceSize]byte
}

func newFrameCipher(aeadKey, lenKey *[32]byte) *frameCipher {
	a, err := chacha20poly1305.New(aeadKey[:])
	if err != nil {
		panic(err)
	}
	var zero [chacha20.NonceSize]byte
	m, err := chacha20.NewUnauthenticatedCipher(lenKey[:], zero[:])
	if err != nil {
		panic(err)
	}
	return &frameCipher{aead: a, lenMask: m}
}

func (c *frameCipher) nextNonce() ([]byte, error) {
	if c.counter == ^uint64(0) {
		return nil, errNonceWrap
	}
	binary.BigEndian.PutUint64(c.nonce[4:], c.counter)
	c.counter++
	return c.nonce[:], nil
}

// appendFrame appends one frame carrying payload (at most maxFramePay
// bytes) and pad bytes of padding (payload+pad ≤ maxFramePay) to dst.
func (c *frameCipher) appendFrame(dst, payload []byte, pad int) ([]byte, error) {
	if len(payload)+pad > maxFramePay {
		panic("obfs: frame too large")
	}
	nonce, err := c.nextNonce()
	if err != nil {
		return dst, err
	}
	plainLen := frameInnerLen + len(payload) + pad
	sealedLen := plainLen + tagLen
	start := len(dst)
	dst = append(dst, make([]byte, frameHeaderLen+plainLen)...)
	hdr := dst[start : start+frameHeaderLen]
	binary.BigEndian.PutUint16(hdr, uint16(sealedLen))
	c.lenMask.XORKeyStream(hdr, hdr)
	plain := dst[start+frameHeaderLen:]
	binary.BigEndian.PutUint16(plain, uint16(len(payload)))
	copy(plain[frameInnerLen:], payload)
	clear(plain[frameInnerLen+len(payload):])
	dst = c.aead.Seal(dst[:start+frameHeaderLen], nonce, plain, hdr)
	return dst, nil
}

// frameReader decodes frames from a byte stream. It keeps partial frames
// across calls, so a read deadline that expires mid-frame loses nothing.
type frameReader struct {
	c         *frameCipher
	r         io.Reader
	buf       []byte
	n         int // bytes of the current frame in buf
	sealedLen int // length of the current frame's body, once its header is decoded
}

func newFrameReader(c *frameCipher, r io.Reader) *frameReader {
	return &frameReader{c: c, r: r, buf: make([]byte, maxFrameLen)}
}

// fill reads until buf holds want bytes of the current frame.
func (f *frameReader) fill(want int) error {
	for f.n < want {
		m, err := f.r.Read(f.buf[f.n:want])
		f.n += m
		if f.n >= want {
			return nil
		}
		if err != nil {
			if err == io.EOF && f.n > 0 {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// next returns the payload of the next frame (possibly empty, for a
// padding frame). The slice is valid until the next call. Corruption is
// final: the stream cannot be resynchronized.
func (f *frameReader) next() ([]byte, error) {
	if f.sealedLen == 0 {
		if err := f.fill(frameHeaderLen); err != nil {
			return nil, err
		}
		var plainHdr [frameHeaderLen]byte
		f.c.lenMask.XORKeyStream(plainHdr[:], f.buf[:frameHeaderLen])
		n := int(binary.BigEndian.Uint16(plainHdr[:]))
		if n < minFrameSealed || n > maxFrameSealed {
			return nil, errFrameLength
		}
		f.sealedLen = n
	}
	if err := f.fill(frameHeaderLen + f.sealedLen); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	hdr := f.buf[:frameHeaderLen]
	sealed := f.buf[frameHeaderLen : frameHeaderLen+f.sealedLen]
	f.n, f.sealedLen = 0, 0
	nonce, err := f.c.nextNonce()
	if err != nil {
		return nil, err
	}
	plain, err := f.c.aead.Open(sealed[:0], nonce, sealed, hdr)
	if err != nil {
		return nil, errFrameAuth
	}
	m := int(binary.BigEndian.Uint16(plain))
	if m > len(plain)-frameInnerLen {
		return nil, errFrameInner
	}
	return plain[frameInnerLen : frameInnerLen+m], nil
}
