package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/flynn/noise"
)

// Wire constants. Noise rev. 34 §3: a Noise message is at most 65535 bytes,
// and transport messages carry a 16-byte AEAD tag (§5.1 EncryptWithAd).
const (
	maxNoiseMsg = noise.MaxMsgLen // 65535
	tagSize     = 16
	hdrSize     = 2 // uint16 big-endian length prefix (§13: framing is ours)

	// Plaintext of a transport message is type byte || body.
	maxFrameBody = maxNoiseMsg - tagSize - 1 // 65518
	minFrameLen  = 1 + tagSize               // empty body

	// IK message 1 is e (32) || enc(s) (32+16) || enc(payload) (len+16);
	// message 2 is e (32) || enc(payload) (len+16). Noise rev. 34 §7.5.
	ikMsg1Overhead = 32 + 32 + tagSize + tagSize // 96
	ikMsg2Overhead = 32 + tagSize                // 48
)

// Frame types (doc.go, "Wire format").
const (
	framePing     byte = 0
	framePong     byte = 1
	frameDataLast byte = 2
	frameDataMore byte = 3
)

var (
	// ErrHandshakeTimeout: the client got no answer (or the server hung up)
	// before its handshake timeout. A server that does not recognise the
	// client's idea of its key is silent by design, so a wrong key looks
	// exactly like this.
	ErrHandshakeTimeout = errors.New("no answer from server: check the invite's server key and address, and this device's clock")
	// ErrInvalidHandshake: the handshake failed. A server returns it only
	// after the probe drain (doc.go), never early.
	ErrInvalidHandshake = errors.New("invalid handshake")
	// ErrMessageTooLarge: a message exceeds Config.MaxMessageSize (or a
	// hello exceeds MaxHelloSize). When the peer sent it, the connection is
	// closed.
	ErrMessageTooLarge = errors.New("message too large")
	// ErrIdleTimeout: nothing was received for Config.IdleTimeout.
	ErrIdleTimeout = errors.New("idle timeout")
	// ErrInvalidFrame: a transport frame failed authentication, had an
	// impossible length or an unknown type. The connection is closed.
	ErrInvalidFrame = errors.New("invalid frame")
	// ErrNonceExhausted: 2^64-1 messages were sent or received under this
	// session's key; Noise rev. 34 §5.1 forbids further use. Reconnect.
	ErrNonceExhausted = errors.New("nonce space exhausted")
)

// Buffer pools. Idle connections hold no buffer; a buffer is taken only once
// a frame header has arrived (read) or a message is being sent (write).
// Two size classes so that chatty small messages do not pin 64 KiB each.
const (
	smallBufSize = 4 << 10
	largeBufSize = hdrSize + maxNoiseMsg
)

var (
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallBufSize); return &b }}
	largePool = sync.Pool{New: func() any { b := make([]byte, largeBufSize); return &b }}
)

// getBuf returns a pooled buffer of capacity at least n (n <= largeBufSize).
func getBuf(n int) *[]byte {
	if n <= smallBufSize {
		return smallPool.Get().(*[]byte)
	}
	return largePool.Get().(*[]byte)
}

func putBuf(b *[]byte) {
	if b == nil {
		return
	}
	switch cap(*b) {
	case smallBufSize:
		smallPool.Put(b)
	case largeBufSize:
		largePool.Put(b)
	}
}

// numFrames is how many frames carry an application message of n bytes.
// Zero-length messages still take one frame.
func numFrames(n int) int {
	if n == 0 {
		return 1
	}
	return (n + maxFrameBody - 1) / maxFrameBody
}

// wireSize is the number of bytes a message of n bytes occupies on the wire.
func wireSize(n int) int {
	return n + numFrames(n)*(hdrSize+1+tagSize)
}

// sealFrame appends hdr || Encrypt(type || body) to dst, encrypting in place.
// The caller guarantees cap(dst)-len(dst) >= hdrSize+1+len(body)+tagSize so
// the AEAD never reallocates (that would break the in-place layout).
func sealFrame(cs *cipherState, dst []byte, typ byte, body []byte) ([]byte, error) {
	off := len(dst)
	dst = append(dst, 0, 0, typ)
	dst = append(dst, body...)
	pt := dst[off+hdrSize:]
	ct, err := cs.Encrypt(pt[:0], nil, pt)
	if err != nil {
		if errors.Is(err, noise.ErrMaxNonce) {
			err = ErrNonceExhausted
		}
		return dst[:off], err
	}
	binary.BigEndian.PutUint16(dst[off:], uint16(len(ct)))
	return dst[:off+hdrSize+len(ct)], nil
}

// openFrame decrypts one transport message in place and splits it into type
// and body.
func openFrame(cs *cipherState, msg []byte) (typ byte, body []byte, err error) {
	if len(msg) < minFrameLen {
		return 0, nil, ErrInvalidFrame
	}
	pt, err := cs.Decrypt(msg[:0], nil, msg)
	if err != nil {
		if errors.Is(err, noise.ErrMaxNonce) {
			return 0, nil, ErrNonceExhausted
		}
		return 0, nil, ErrInvalidFrame
	}
	return pt[0], pt[1:], nil
}

// action is what the reader must do after feeding a frame to a reassembler.
type action uint8

const (
	actNone    action = iota // frame consumed, keep reading
	actPong                  // peer pinged: answer
	actMessage               // a full application message is ready
)

// reassembler turns a sequence of decrypted (type, body) frames into
// application messages. It is free of I/O and crypto so it can be fuzzed.
type reassembler struct {
	max     int
	buf     []byte // fragments so far; nil when no message is in progress
	pending bool
}

// feed consumes one frame. When act == actMessage, msg is the message; if
// aliased is true msg is body itself (single-frame fast path, no copy) and is
// only valid as long as body is.
func (r *reassembler) feed(typ byte, body []byte) (act action, msg []byte, aliased bool, err error) {
	switch typ {
	case framePing:
		// Bodies of control frames are ignored (room for padding).
		return actPong, nil, false, nil
	case framePong:
		return actNone, nil, false, nil
	case frameDataLast, frameDataMore:
	default:
		return actNone, nil, false, fmt.Errorf("%w: unknown frame type %d", ErrInvalidFrame, typ)
	}
	if len(r.buf)+len(body) > r.max {
		return actNone, nil, false, ErrMessageTooLarge
	}
	if typ == frameDataLast && !r.pending {
		return actMessage, body, true, nil
	}
	if r.buf == nil {
		r.buf = make([]byte, 0, 2*len(body))
	}
	r.buf = append(r.buf, body...)
	r.pending = true
	if typ == frameDataMore {
		return actNone, nil, false, nil
	}
	// Hand the buffer to the caller and forget it, so an idle connection
	// does not keep a large reassembly buffer alive.
	msg, r.buf, r.pending = r.buf, nil, false
	return actMessage, msg, false, nil
}
