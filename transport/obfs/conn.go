package obfs

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/magpie-im/magpie/transport"
)

// conn is an established obfs connection.
type conn struct {
	net.Conn // the raw connection: addresses and deadlines pass through

	closed atomic.Bool // Close was called: reads fail with net.ErrClosed

	rmu     sync.Mutex
	fr      *frameReader
	pending []byte
	rerr    error

	wmu  sync.Mutex
	wc   *frameCipher
	rng  *rand.Rand
	wbuf []byte
	werr error
	pol  padPolicy
}

// padPolicy is drawn per connection, so connections differ in their record
// size and padding habits as well as in their bytes.
type padPolicy struct {
	minChunk, maxChunk int // payload bytes per frame, before the remainder
	padProb            int // out of 16: chance a write's last frame is padded
	maxPad             int // padding added to that frame
	extraProb          int // out of 16: chance of an extra padding frame
}

func newPadPolicy(rng *rand.Rand) padPolicy {
	lo := 64 + rng.IntN(1400)
	return padPolicy{
		minChunk:  lo,
		maxChunk:  lo + 1 + rng.IntN(maxFramePay-lo),
		padProb:   6 + rng.IntN(10),
		maxPad:    32 + rng.IntN(480),
		extraProb: 1 + rng.IntN(3),
	}
}

func newRand() *rand.Rand {
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		panic(err)
	}
	return rand.New(rand.NewChaCha8(seed))
}

func newConn(raw net.Conn, r io.Reader, readCipher, writeCipher *frameCipher, rng *rand.Rand) *conn {
	c := &conn{Conn: raw, wc: writeCipher, rng: rng}
	c.fr = newFrameReader(readCipher, r)
	c.pol = newPadPolicy(rng)
	return c
}

func (c *conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.pending) == 0 {
		if c.closed.Load() {
			// Even after the peer's EOF: a closed connection says so, as
			// a net.Conn's does (a drain waits for exactly this).
			return 0, net.ErrClosed
		}
		if c.rerr != nil {
			return 0, c.rerr
		}
		if len(p) == 0 {
			return 0, nil
		}
		payload, err := c.fr.next()
		if err != nil {
			var ne net.Error
			if !(errors.As(err, &ne) && ne.Timeout()) {
				c.rerr = err // corruption and EOF are final; timeouts are not
			}
			return 0, err
		}
		c.pending = payload
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// Close closes the raw connection; reads from then on fail with
// net.ErrClosed.
func (c *conn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// maxWriteBatch bounds the ciphertext built before each write to the
// raw connection.
const maxWriteBatch = 64 << 10

// Write splits p into frames of random sizes, sometimes pads the last one
// and sometimes adds a padding-only frame, so the sizes on the wire do not
// follow the sizes of the writes.
func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if len(p) == 0 {
		return 0, nil
	}
	written := 0
	for written < len(p) {
		batchStart := written
		buf := c.wbuf[:0]
		for written < len(p) && len(buf) < maxWriteBatch {
			rest := len(p) - written
			n := c.pol.minChunk + c.rng.IntN(c.pol.maxChunk-c.pol.minChunk+1)
			n = min(n, rest)
			pad := 0
			last := n == rest
			if last && c.rng.IntN(16) < c.pol.padProb {
				pad = min(c.rng.IntN(c.pol.maxPad+1), maxFramePay-n)
			}
			var err error
			if buf, err = c.wc.appendFrame(buf, p[written:written+n], pad); err != nil {
				c.werr = err
				return batchStart, err
			}
			written += n
			if last && c.rng.IntN(16) < c.pol.extraProb {
				if buf, err = c.wc.appendFrame(buf, nil, c.rng.IntN(c.pol.maxPad+1)); err != nil {
					c.werr = err
					return batchStart, err
				}
			}
		}
		c.wbuf = buf
		if _, err := c.Conn.Write(buf); err != nil {
			c.werr = err
			return batchStart, err
		}
	}
	return written, nil
}

// Dial connects to an obfs server at address and runs the handshake. cert
// is the server's Cert() from the invite.
func Dial(ctx context.Context, network, address, cert string) (net.Conn, error) {
	if _, _, err := ParseCert(cert); err != nil {
		return nil, err
	}
	d := net.Dialer{KeepAliveConfig: transport.ClientKeepAlive}
	raw, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	c, err := Client(ctx, raw, cert)
	if err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// ErrNoAnswer is returned when the server closes the connection or lets
// the handshake time out without answering: the invite's server key (cert)
// or address is probably wrong, or a censor interferes.
var ErrNoAnswer = errors.New("obfs: server did not answer the handshake (check the invite's server key and address)")

// Client runs the client handshake over an established connection (the
// caller keeps ownership of raw on error).
func Client(ctx context.Context, raw net.Conn, cert string) (net.Conn, error) {
	return clientHandshake(ctx, raw, cert, time.Now(), -1)
}

// clientHandshake is Client with the clock and the first packet's shaping
// strategy (-1: random) exposed for tests.
func clientHandshake(ctx context.Context, raw net.Conn, cert string, now time.Time, strategy int) (net.Conn, error) {
	nodeID, pub, err := ParseCert(cert)
	if err != nil {
		return nil, err
	}
	hk := newHandshakeKey(nodeID, pub)
	rng := newRand()
	eph, err := newEphemeralKey(crand.Reader)
	if err != nil {
		return nil, err
	}
	defer clear(eph.private[:])

	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	ctxErr := func(err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}

	hour := epochHour(now)
	if strategy < 0 {
		strategy = rng.IntN(numShapes)
	}
	hello := buildClientHello(rng, hk, eph, hour, strategy)
	if _, err := raw.Write(hello); err != nil {
		return nil, ctxErr(err)
	}

	br := bufio.NewReaderSize(raw, 32<<10)
	head := make([]byte, reprLen+markLen+lenLen, maxServerReply)
	if _, err := io.ReadFull(br, head); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = ErrNoAnswer
		}
		return nil, ctxErr(err)
	}
	h := hk.hmac()
	var yRepr [reprLen]byte
	copy(yRepr[:], head)
	mark, mask := hk.markAndMask(h, labelServerMark, yRepr[:])
	if subtle.ConstantTimeCompare(mark[:], head[reprLen:reprLen+markLen]) != 1 {
		return nil, errors.New("obfs: server reply not authentic")
	}
	padLen := int(binary.BigEndian.Uint16(head[reprLen+markLen:]) ^ mask)
	if padLen > maxServerPad {
		return nil, errors.New("obfs: server reply too long")
	}
	reply := head[:serverFixed+padLen]
	if _, err := io.ReadFull(br, reply[len(head):]); err != nil {
		return nil, ctxErr(fmt.Errorf("obfs: reading server reply: %w", err))
	}
	wantMAC := hk.mac(h, labelServerMAC, reply[:len(reply)-macLen], hour)
	if subtle.ConstantTimeCompare(wantMAC[:], reply[len(reply)-macLen:]) != 1 {
		return nil, errors.New("obfs: server reply not authentic")
	}
	Y := representativeToU(&yRepr)
	dhEph, err := x25519(eph.private[:], Y[:])
	if err != nil {
		return nil, err
	}
	dhStatic, err := x25519(eph.private[:], pub[:])
	if err != nil {
		return nil, err
	}
	keys, auth := ntor(dhEph, dhStatic, hk, &eph.public, &Y)
	gotAuth := reply[reprLen+markLen+lenLen : reprLen+markLen+lenLen+authLen]
	if subtle.ConstantTimeCompare(auth[:], gotAuth) != 1 {
		return nil, errors.New("obfs: server failed to prove its key")
	}
	if !stop() { // ctx ended just now and its deadline hit raw
		return nil, ctxErr(context.Canceled)
	}
	_ = raw.SetDeadline(time.Time{})
	c := newConn(raw, br,
		newFrameCipher(&keys.serverAEAD, &keys.serverLen),
		newFrameCipher(&keys.clientAEAD, &keys.clientLen), rng)
	clear(keys.clientAEAD[:])
	clear(keys.serverAEAD[:])
	return c, nil
}
