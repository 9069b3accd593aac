package tlsws

import (
	"encoding/base64"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"sync"
)

// Padding: no fixed shape after the handshake.
//
// Without it the first records of every connection have the same sizes
// (the upgrade request, the 101 response, the link's handshake messages),
// which is a fingerprint a censor can match on TLS record lengths alone.
// So the first records in each direction get sizes drawn for the
// connection:
//
//   - record 1 is the HTTP upgrade request (client) or its 101 response
//     (server), padded by a cookie (client) or a Set-Cookie header
//     (server) of a drawn length;
//   - the next padFrames WebSocket messages each way carry a 4-byte header
//     (payload length, padding length), the payload and zero padding, and
//     are exactly a drawn size, from padMin up to padMax: a small write is
//     padded up to it, a large one cut at it (the rest follows unpadded
//     once the padded frames are used up). padMax keeps each frame inside
//     the first TLS records' size (crypto/tls and uTLS start with records
//     of about 1.2 kB), so a frame is one record.
//
// A size drawn for a record position is not drawn again for that position
// while it is among the last sizeMemory drawn there by this process, so
// consecutive connections from one client, or to one server, never repeat
// a size at the same position.
const (
	padFrames  = 8
	padHeader  = 4
	padMin     = 200
	padMax     = 1150
	sizeMemory = 64
	// The pad of record 1, in bytes of cookie value: the upgrade request
	// is about 500 bytes without it, and with it stays inside the first
	// record (1,186 bytes of plaintext) unless host and path are long.
	padHTTPMin = 16
	padHTTPMax = 576
)

// sizeDrawer draws record sizes per position, avoiding recent repeats.
type sizeDrawer struct {
	mu     sync.Mutex
	recent [1 + padFrames][]int
}

// Each side of a connection draws from its own memory.
var clientSizes, serverSizes sizeDrawer

// draw returns a size in [lo, hi) for record position pos.
func (d *sizeDrawer) draw(pos, lo, hi int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := &d.recent[pos]
	n := lo + rand.IntN(hi-lo)
	for try := 0; try < 64 && containsInt(*r, n); try++ {
		n = lo + rand.IntN(hi-lo)
	}
	if len(*r) == sizeMemory {
		*r = (*r)[1:]
	}
	*r = append(*r, n)
	return n
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// padValue returns a cookie-safe random string of a length drawn from d
// for record 1.
func padValue(d *sizeDrawer) string {
	n := d.draw(0, padHTTPMin, padHTTPMax)
	b := make([]byte, base64.RawURLEncoding.DecodedLen(n)+1)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

// padCookie is the client's padding cookie for the upgrade request.
func padCookie() string { return "_pk_id=" + padValue(&clientSizes) }

// padSetCookie is the server's padding header value for the 101 response.
func padSetCookie() string {
	return "_pk_ses=" + padValue(&serverSizes) + "; Path=/; Secure; HttpOnly; SameSite=Lax"
}

// padConn frames the first padFrames writes and reads of a stream that
// carries one WebSocket message per Write (wsConn).
type padConn struct {
	net.Conn
	sizes *sizeDrawer

	wmu     sync.Mutex
	wframes int

	rmu                  sync.Mutex
	rframes              int
	payloadLeft, padLeft int
}

func newPadConn(c net.Conn, sizes *sizeDrawer) *padConn {
	return &padConn{Conn: c, sizes: sizes}
}

func (c *padConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := 0
	for c.wframes < padFrames && len(p) > 0 {
		size := c.sizes.draw(1+c.wframes, padMin, padMax)
		chunk := min(len(p), size-padHeader)
		frame := make([]byte, size)
		binary.BigEndian.PutUint16(frame, uint16(chunk))
		binary.BigEndian.PutUint16(frame[2:], uint16(size-padHeader-chunk))
		copy(frame[padHeader:], p[:chunk])
		if _, err := c.Conn.Write(frame); err != nil {
			return n, err
		}
		c.wframes++
		n += chunk
		p = p[chunk:]
	}
	if len(p) == 0 {
		return n, nil
	}
	m, err := c.Conn.Write(p)
	return n + m, err
}

func (c *padConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		switch {
		case c.payloadLeft > 0:
			n, err := c.Conn.Read(p[:min(len(p), c.payloadLeft)])
			c.payloadLeft -= n
			return n, err
		case c.padLeft > 0:
			n, err := io.CopyN(io.Discard, c.Conn, int64(c.padLeft))
			c.padLeft -= int(n)
			if err != nil {
				return 0, err
			}
		case c.rframes < padFrames:
			var h [padHeader]byte
			if _, err := io.ReadFull(c.Conn, h[:]); err != nil {
				return 0, err
			}
			c.rframes++
			c.payloadLeft = int(binary.BigEndian.Uint16(h[:]))
			c.padLeft = int(binary.BigEndian.Uint16(h[2:]))
			if c.payloadLeft == 0 && c.padLeft == 0 {
				return 0, io.ErrUnexpectedEOF
			}
		default:
			return c.Conn.Read(p)
		}
	}
}
