package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is an established link: Noise transport messages (rev. 34 §5.1) over
// a net.Conn, framed as described in doc.go.
//
// One goroutine may call ReadMessage at a time; WriteMessage, WriteMessages
// and Close may be called from any goroutine, concurrently with reads.
//
// Any transport or protocol error is fatal: the underlying connection is
// closed and the error sticks.
type Conn struct {
	conn net.Conn
	peer [32]byte

	idleTimeout  time.Duration
	keepalive    time.Duration
	pongTimeout  time.Duration
	writeTimeout time.Duration
	maxMsg       int

	// Read side, owned by the reading goroutine.
	rx    *cipherState
	hdr   [hdrSize + minFrameLen]byte // a frame's length prefix and the start of its body
	rbuf  *[]byte                     // pooled buffer backing the last returned message
	reasm reassembler
	rerr  error

	// Write side, guarded by wmu. Encryption happens under the lock so the
	// nonce order equals the byte order on the wire; the write itself does
	// not hold it (see WriteMessages).
	wmu     sync.Mutex
	wdone   sync.Cond // on wmu: a write has ended (written or werr moved)
	tx      *cipherState
	werr    error
	out     []*[]byte // sealed, not yet being written: pooled chunks
	spare   []*[]byte // the other half of out's double buffer
	sealed  uint64    // batches sealed into out (or written) so far
	written uint64    // batches written so far
	writing bool      // a write to conn is under way; at most one is
	outArr  [2][2]*[]byte
	ka      atomic.Pointer[time.Timer] // keepalive; nil if disabled

	// pongDue is when an answer to the last ping is due (unix ns), 0 when
	// no ping waits for one. The keepalive sets it; the reader clears it
	// on a pong, or on any frame whose read began after the ping.
	pongDue atomic.Int64
	// pongSeen is pongDue as the reader saw it when it began its current
	// read. Reader only.
	pongSeen int64
	// readBy is the read deadline armIdle last set (unix ns), 0 for none,
	// so that a ping only ever brings the deadline closer.
	readBy atomic.Int64

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

func newConn(conn net.Conn, tx, rx *cipherState, peer [32]byte, cfg Config) *Conn {
	c := &Conn{
		conn:         conn,
		peer:         peer,
		idleTimeout:  cfg.IdleTimeout,
		keepalive:    cfg.KeepaliveInterval,
		pongTimeout:  cfg.PongTimeout,
		writeTimeout: cfg.WriteTimeout,
		maxMsg:       cfg.MaxMessageSize,
		rx:           rx,
		tx:           tx,
		reasm:        reassembler{max: cfg.MaxMessageSize},
	}
	c.wdone.L = &c.wmu
	c.out, c.spare = c.outArr[0][:0], c.outArr[1][:0]
	if c.keepalive > 0 {
		// A timer, not a goroutine: an idle connection costs no stack.
		// Atomic: a short interval can fire before AfterFunc returns.
		c.ka.Store(time.AfterFunc(c.keepaliveDelay(), c.sendKeepalive))
	}
	return c
}

// PeerKey returns the peer's authenticated static public key.
func (c *Conn) PeerKey() [32]byte { return c.peer }

// LocalAddr returns the underlying connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the underlying connection's remote address.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// Close closes the link and the underlying connection. It is safe to call
// more than once and concurrently with reads and writes, which then fail.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		if ka := c.ka.Load(); ka != nil {
			ka.Stop()
		}
		c.closeErr = c.conn.Close()
	})
	return c.closeErr
}

// ReadMessage returns the next application message. The slice is valid until
// the next call to ReadMessage. Pings are answered and pongs swallowed here,
// so a connection must be read for keepalives to work.
func (c *Conn) ReadMessage() ([]byte, error) {
	for {
		msg, err := c.ReadFrame()
		if msg != nil || err != nil {
			return msg, err
		}
	}
}

// ReadFrame reads one frame. It returns the application message the frame
// completes, or nil, nil after a frame that completes none (a keepalive, or
// one fragment of a larger message), so that a caller can decide between
// frames whether to keep waiting (a server parks idle connections; see
// internal/netpoll). The slice is valid until the next read.
//
// The link reads exactly one frame from the transport per call and never
// reads ahead: whatever has not been returned is still in the transport.
func (c *Conn) ReadFrame() ([]byte, error) {
	// Give the previous message's buffer back before blocking, so an idle
	// connection holds no buffer.
	putBuf(c.rbuf)
	c.rbuf = nil
	if c.rerr != nil {
		return nil, c.rerr
	}
	typ, body, bp, err := c.readFrame()
	if err != nil {
		return nil, c.failRead(err)
	}
	switch {
	case typ == framePong:
		// The answer (TCP keeps order: to the oldest ping outstanding).
		c.pongDue.Store(0)
	case c.pongSeen != 0:
		// Any frame whose read began after the ping went out shows the
		// path works. (One whose read began before may have been on its
		// way already, so it proves nothing.)
		c.pongDue.CompareAndSwap(c.pongSeen, 0)
	}
	act, msg, aliased, err := c.reasm.feed(typ, body)
	if aliased {
		c.rbuf = bp
	} else {
		putBuf(bp)
	}
	if err != nil {
		return nil, c.failRead(err)
	}
	switch act {
	case actMessage:
		if msg == nil {
			msg = []byte{} // an empty message is still a message
		}
		return msg, nil
	case actPong:
		c.sendControl(framePong)
	}
	return nil, nil
}

// MidMessage reports whether the frames read so far end inside a
// fragmented message, so the rest of it is still to come. Call it from the
// reading goroutine only.
func (c *Conn) MidMessage() bool { return c.reasm.pending }

// ReleaseReadBuffer gives back the buffer behind the last message returned,
// which is otherwise held until the next read. A reader that stops reading
// while idle (see ReadFrame) calls it first, so that an idle connection
// pins no buffer. Call it from the reading goroutine only; the last
// message's slice is invalid afterwards.
func (c *Conn) ReleaseReadBuffer() {
	putBuf(c.rbuf)
	c.rbuf = nil
}

// readFrame reads and decrypts one frame into a pooled buffer.
//
// Every frame is at least minFrameLen bytes after its length prefix, so the
// first read may take the prefix and up to that much of the body together
// without ever reading into the next frame: a keepalive (an empty frame)
// costs one read, not two.
func (c *Conn) readFrame() (typ byte, body []byte, bp *[]byte, err error) {
	c.armIdle()
	got, err := io.ReadAtLeast(c.conn, c.hdr[:], hdrSize)
	if err != nil {
		return 0, nil, nil, err
	}
	n := int(binary.BigEndian.Uint16(c.hdr[:hdrSize]))
	if n < minFrameLen {
		return 0, nil, nil, fmt.Errorf("%w: length %d", ErrInvalidFrame, n)
	}
	bp = getBuf(n)
	buf := (*bp)[:n]
	have := copy(buf, c.hdr[hdrSize:got])
	if have < n {
		c.armIdle() // "nothing received for IdleTimeout": the start counts
		if _, err := io.ReadFull(c.conn, buf[have:]); err != nil {
			putBuf(bp)
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, nil, err
		}
	}
	typ, body, err = openFrame(c.rx, buf)
	if err != nil {
		putBuf(bp)
		return 0, nil, nil, err
	}
	return typ, body, bp, nil
}

// armIdle sets the read deadline for the next read: IdleTimeout from now,
// or sooner if an answer to a ping is due sooner.
func (c *Conn) armIdle() {
	c.pongSeen = c.pongDue.Load()
	var by int64
	if c.idleTimeout > 0 {
		by = time.Now().Add(c.idleTimeout).UnixNano()
	}
	if c.pongSeen != 0 && (by == 0 || c.pongSeen < by) {
		by = c.pongSeen
	}
	if by != 0 {
		c.readBy.Store(by)
		c.conn.SetReadDeadline(time.Unix(0, by))
	} else if c.pongTimeout > 0 {
		// No limit on this read, but the deadline of an answered ping
		// (set by an earlier read or by sendControl) may still be armed.
		c.readBy.Store(0)
		c.conn.SetReadDeadline(time.Time{})
	}
}

// pongTimedOut reports whether the deadline that expired was a ping's
// rather than IdleTimeout.
func (c *Conn) pongTimedOut() bool {
	due := c.pongDue.Load()
	by := c.readBy.Load()
	return due != 0 && (by == 0 || due <= by)
}

// failRead records a fatal read error, closes the link and returns the error
// in the form callers branch on.
func (c *Conn) failRead(err error) error {
	switch {
	case err == io.EOF:
		// Clean close at a frame boundary: plain io.EOF, like net.Conn.
	case c.closed.Load() || errors.Is(err, net.ErrClosed):
		err = fmt.Errorf("link: read: %w", net.ErrClosed)
	case errors.Is(err, os.ErrDeadlineExceeded) && c.pongTimedOut():
		err = fmt.Errorf("link: read: no answer to a keepalive within %v: %w", c.pongTimeout, ErrIdleTimeout)
	case c.idleTimeout > 0 && errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("link: read: nothing received for %v: %w", c.idleTimeout, ErrIdleTimeout)
	default:
		err = fmt.Errorf("link: read: %w", err)
	}
	c.rerr = err
	c.Close()
	return err
}

// WriteMessage sends one application message, fragmenting it if it does not
// fit one Noise message. Safe for concurrent use.
func (c *Conn) WriteMessage(p []byte) error {
	return c.WriteMessages([][]byte{p})
}

// WriteMessages sends several application messages, in order, with a single
// write (writev) to the transport where possible. Safe for concurrent use;
// the messages of one call are not interleaved with other writers'.
//
// Concurrent writers are coalesced: frames sealed while another caller's
// write is in the kernel go out together in the next write, issued by
// one of the waiting callers as soon as that write returns. A caller alone
// writes at once; nothing ever waits for company.
func (c *Conn) WriteMessages(ps [][]byte) error {
	for _, p := range ps {
		if len(p) > c.maxMsg {
			return fmt.Errorf("link: write %d bytes (max %d): %w", len(p), c.maxMsg, ErrMessageTooLarge)
		}
	}
	if len(ps) == 0 {
		return nil
	}
	return c.writeFrames(ps, frameDataLast)
}

// writeFrames seals ps and returns once their bytes have been written. typ
// is the type of each message's last frame (data, or a control type for
// tests).
func (c *Conn) writeFrames(ps [][]byte, typ byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.sealLocked(ps, typ); err != nil {
		return err
	}
	mine := c.sealed
	for c.written < mine {
		switch {
		case c.werr != nil:
			return c.werr
		case c.writing:
			c.wdone.Wait()
		default:
			c.flushLocked()
		}
	}
	return nil
}

// sealLocked encrypts ps onto the end of c.out, header and ciphertext
// contiguous, in pooled chunks, and counts them as one more sealed batch.
// Sealing under wmu, in the order the bytes join c.out, keeps the nonce
// order equal to the byte order on the wire.
func (c *Conn) sealLocked(ps [][]byte, typ byte) error {
	if c.werr != nil {
		return c.werr
	}
	total := 0
	for _, p := range ps {
		total += wireSize(len(p))
	}
	for _, p := range ps {
		for first := true; first || len(p) > 0; first = false {
			n := min(len(p), maxFrameBody)
			t := typ
			if n < len(p) {
				t = frameDataMore
			}
			need := hdrSize + 1 + n + tagSize
			cur := c.chunkFor(need, total)
			var err error
			if *cur, err = sealFrame(c.tx, *cur, t, p[:n]); err != nil {
				return c.failWrite(err)
			}
			total -= need
			p = p[n:]
		}
	}
	c.sealed++
	return nil
}

// chunkFor returns the chunk of c.out to seal a frame of need bytes into:
// the last one if it has room, else a new pooled buffer sized for what is
// left to seal (rest).
func (c *Conn) chunkFor(need, rest int) *[]byte {
	if k := len(c.out); k > 0 {
		if last := c.out[k-1]; cap(*last)-len(*last) >= need {
			return last
		}
	}
	bp := getBuf(min(rest, largeBufSize))
	*bp = (*bp)[:0]
	c.out = append(c.out, bp)
	return bp
}

// flushLocked writes everything sealed so far in one write (one writev
// when it spans chunks) and wakes the callers waiting for it. wmu is held
// on entry and exit but not during the write, so that other callers can
// seal the next batch meanwhile.
func (c *Conn) flushLocked() {
	c.writing = true
	batch, upTo := c.out, c.sealed
	c.out = c.spare[:0]
	c.wmu.Unlock()

	if c.writeTimeout > 0 {
		c.conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	var err error
	if len(batch) == 1 {
		_, err = c.conn.Write(*batch[0])
	} else {
		bufs := make(net.Buffers, len(batch))
		for i, b := range batch {
			bufs[i] = *b
		}
		_, err = bufs.WriteTo(c.conn)
	}
	if err == nil && c.writeTimeout > 0 {
		// Disarm the deadline's timer: left armed, it fires WriteTimeout
		// later on every connection that has gone quiet, waking an idle
		// server once per keepalive answered.
		c.conn.SetWriteDeadline(time.Time{})
	}
	for i, b := range batch {
		putBuf(b)
		batch[i] = nil
	}
	if err == nil {
		if ka := c.ka.Load(); ka != nil && !c.closed.Load() {
			ka.Reset(c.keepaliveDelay())
		}
	}

	c.wmu.Lock()
	c.writing = false
	c.spare = batch[:0]
	if err != nil {
		c.failWrite(err)
	} else {
		c.written = upTo
	}
	c.wdone.Broadcast()
}

// failWrite makes a write error sticky: after a partial write or a consumed
// nonce the stream can't be resumed, so the link is closed. wmu is held.
func (c *Conn) failWrite(err error) error {
	switch {
	case errors.Is(err, ErrNonceExhausted):
		err = fmt.Errorf("link: write: %w", err)
	case c.closed.Load() || errors.Is(err, net.ErrClosed):
		err = fmt.Errorf("link: write: %w", net.ErrClosed)
	default:
		err = fmt.Errorf("link: write: %w", err)
	}
	c.werr = err
	c.Close()
	return err
}

// sendControl sends a ping or pong unless a write is already under way: in
// that case the peer is about to receive bytes anyway, which is all a
// keepalive is for, and the reader must not block behind a slow writer (two
// peers each blocked writing while their readers wait to pong would
// deadlock until WriteTimeout). A ping with PongTimeout set also makes an
// answer due (pongDue) before it is written, so the answer cannot come
// before the expectation.
func (c *Conn) sendControl(typ byte) (sent bool) {
	if !c.wmu.TryLock() {
		return false
	}
	defer c.wmu.Unlock()
	if c.writing {
		return false
	}
	if c.werr != nil || c.closed.Load() {
		return true
	}
	if typ == framePing && c.pongTimeout > 0 {
		due := time.Now().Add(c.pongTimeout).UnixNano()
		// Keep an earlier expectation: an unanswered ping stays unanswered.
		if !c.pongDue.CompareAndSwap(0, due) {
			if d := c.pongDue.Load(); d != 0 {
				due = d
			}
		}
		// The reader may be blocked with a later deadline; pull it in (never
		// push it out). If it is between reads instead, armIdle picks up
		// pongDue.
		if by := c.readBy.Load(); by == 0 || due < by {
			c.conn.SetReadDeadline(time.Unix(0, due))
		}
	}
	var empty [1][]byte
	if c.sealLocked(empty[:], typ) == nil {
		// No write is under way, so nobody else will: write now (with
		// whatever else has been sealed meanwhile, if anything).
		c.flushLocked()
	}
	return true
}

// keepaliveDelay draws the wait before the next ping uniformly from 3/4 to
// 5/4 of the keepalive interval: on average the interval, and never a
// fixed period a censor could pick out of an idle connection's timing.
func (c *Conn) keepaliveDelay() time.Duration {
	return c.keepalive*3/4 + rand.N(c.keepalive/2+1)
}

// sendKeepalive runs on the keepalive timer (its own short-lived goroutine,
// only while firing).
func (c *Conn) sendKeepalive() {
	if c.closed.Load() {
		return
	}
	if !c.sendControl(framePing) && !c.closed.Load() {
		// A writer is active and re-arms the timer when done; re-arm here
		// too in case it finished between our firing and TryLock.
		if ka := c.ka.Load(); ka != nil {
			ka.Reset(c.keepaliveDelay())
		}
	}
}
