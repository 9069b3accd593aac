package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/flynn/noise"
)

// prologue is mixed into the handshake hash (Noise rev. 34 §6) so a session
// can only be established by peers that agree on this protocol and version.
var prologue = []byte("magpie/link/1")

func newHandshake(key KeyPair, initiator bool, peer []byte) (*noise.HandshakeState, *x25519, error) {
	suite, dh := newSuite()
	static := key.dhKey()
	parsed, err := key.parsed()
	if err != nil {
		return nil, nil, err
	}
	// flynn/noise hands static.Private back to DH; the DH cache knows it by
	// that slice.
	dh.remember(0, static.Private, parsed)
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   suite,
		Random:        cryptoRand,
		Pattern:       noise.HandshakeIK, // §7.5: <- s ... -> e, es, s, ss  <- e, ee, se
		Initiator:     initiator,
		Prologue:      prologue,
		StaticKeypair: static,
		PeerStatic:    peer,
	})
	return hs, dh, err
}

// Client runs the initiator side of Noise IK over conn. hello travels
// encrypted in the first message (§7.5: after es and ss, so only the holder of
// serverKey can read it); the returned []byte is the server's reply payload.
// On error conn is closed. If the server never answers (which is what a
// server does when the client has the wrong server key) the error wraps
// ErrHandshakeTimeout.
func Client(conn net.Conn, key KeyPair, serverKey [32]byte, hello []byte, cfg Config) (*Conn, []byte, error) {
	cfg = cfg.withDefaults()
	c, reply, err := client(conn, key, serverKey, hello, cfg)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return c, reply, nil
}

func client(conn net.Conn, key KeyPair, serverKey [32]byte, hello []byte, cfg Config) (*Conn, []byte, error) {
	if len(hello) > cfg.MaxHelloSize {
		return nil, nil, fmt.Errorf("link: hello of %d bytes (max %d): %w", len(hello), cfg.MaxHelloSize, ErrMessageTooLarge)
	}
	if err := conn.SetDeadline(time.Now().Add(cfg.HandshakeTimeoutMax)); err != nil {
		return nil, nil, fmt.Errorf("link: handshake: %w", err)
	}
	hs, dh, err := newHandshake(key, true, serverKey[:])
	if err != nil {
		return nil, nil, fmt.Errorf("link: handshake: %w", err)
	}
	defer dh.forget()

	// The payload starts with the client's clock: see replay.go.
	payload := make([]byte, timestampSize+len(hello))
	putTimestamp(payload, clientNow())
	copy(payload[timestampSize:], hello)
	bp := getBuf(hdrSize + ikMsg1Overhead + len(payload))
	defer putBuf(bp)
	msg, _, _, err := hs.WriteMessage((*bp)[hdrSize:hdrSize], payload)
	if err != nil {
		return nil, nil, fmt.Errorf("link: handshake: %w", err)
	}
	frame := (*bp)[:hdrSize+len(msg)]
	binary.BigEndian.PutUint16(frame, uint16(len(msg)))
	if _, err := conn.Write(frame); err != nil {
		return nil, nil, fmt.Errorf("link: handshake write: %w", err)
	}

	var hdr [hdrSize]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		return nil, nil, noAnswer(err)
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n < ikMsg2Overhead || n > ikMsg2Overhead+cfg.MaxHelloSize {
		return nil, nil, fmt.Errorf("link: handshake reply of %d bytes: %w", n, ErrInvalidHandshake)
	}
	// The first message is already sent: reuse its buffer if the reply
	// fits. (Slicing it to n first would panic on a longer reply.)
	body := *bp
	if cap(body) < n {
		body = make([]byte, n)
	}
	body = body[:n]
	if _, err := io.ReadFull(conn, body); err != nil {
		return nil, nil, noAnswer(err)
	}
	reply, cs1, cs2, err := hs.ReadMessage(nil, body)
	if err != nil || cs1 == nil {
		return nil, nil, fmt.Errorf("link: handshake reply: %w", ErrInvalidHandshake)
	}
	// Clearing the deadline fails only on a dead conn; the first read or
	// write reports that.
	conn.SetDeadline(time.Time{})
	// Split (§5.2): the first CipherState is initiator→responder.
	return newConn(conn, newCipherState(cs1), newCipherState(cs2), serverKey, cfg), reply, nil
}

// noAnswer maps "server said nothing" outcomes to ErrHandshakeTimeout. A
// probe-resistant server that rejects us closes silently at a random time, so
// EOF and reset mean the same thing to the client as a timeout.
func noAnswer(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
		// Keep the cause too: a probe tells a reset (a censor) from silence.
		return fmt.Errorf("link: handshake: %w (%w)", ErrHandshakeTimeout, err)
	}
	return fmt.Errorf("link: handshake read: %w", err)
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout() && !errors.Is(err, net.ErrClosed)
}

// Server runs the responder side of Noise IK over conn. accept receives the
// client's authenticated static key and hello and returns the reply payload.
//
// Probe resistance (doc.go): if the first message has an impossible length,
// does not decrypt, or accept returns an error, or nothing arrives, Server
// sends nothing, reads and discards input until this connection's handshake
// deadline (drawn from [HandshakeTimeoutMin, HandshakeTimeoutMax] now), then
// closes conn and returns an error wrapping ErrInvalidHandshake. A successful
// handshake must also complete before that deadline. On any error conn is
// closed.
func Server(conn net.Conn, key KeyPair, cfg Config, accept func(peer [32]byte, hello []byte) (reply []byte, err error)) (*Conn, error) {
	cfg = cfg.withDefaults()
	deadline := time.Now().Add(handshakeWindow(cfg.HandshakeTimeoutMin, cfg.HandshakeTimeoutMax))
	if err := conn.SetDeadline(deadline); err != nil {
		conn.Close()
		return nil, fmt.Errorf("link: handshake: %w", err)
	}
	hs, dh, err := newHandshake(key, false, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("link: handshake: %w", err)
	}
	defer dh.forget()

	peer, payload, err := readFirst(conn, hs, cfg.MaxHelloSize+timestampSize)
	if err != nil || len(payload) < timestampSize {
		return nil, reject(conn, deadline)
	}
	if cfg.Replay != nil && !cfg.Replay.fresh(getTimestamp(payload), [32]byte(hs.PeerEphemeral())) {
		return nil, reject(conn, deadline)
	}
	hello := payload[timestampSize:]
	reply, err := accept(peer, hello)
	if err != nil || len(reply) > cfg.MaxHelloSize {
		return nil, reject(conn, deadline)
	}

	bp := getBuf(hdrSize + ikMsg2Overhead + len(reply))
	defer putBuf(bp)
	msg, cs1, cs2, err := hs.WriteMessage((*bp)[hdrSize:hdrSize], reply)
	if err != nil || cs1 == nil {
		// Only a local failure (e.g. randomness) can get here.
		conn.Close()
		return nil, fmt.Errorf("link: handshake: %v: %w", err, ErrInvalidHandshake)
	}
	frame := (*bp)[:hdrSize+len(msg)]
	binary.BigEndian.PutUint16(frame, uint16(len(msg)))
	// The write is still bounded by the handshake deadline.
	if _, err := conn.Write(frame); err != nil {
		conn.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = ErrHandshakeTimeout
		}
		return nil, fmt.Errorf("link: handshake write: %w", err)
	}
	conn.SetDeadline(time.Time{}) // as in client: a dead conn shows up on first use
	// Split (§5.2): the first CipherState is initiator→responder, our rx.
	return newConn(conn, newCipherState(cs2), newCipherState(cs1), peer, cfg), nil
}

// readFirst reads the length-prefixed IK first message from r and processes
// it. Every failure is reported the same way; the caller must not act on
// which one it was.
func readFirst(r io.Reader, hs *noise.HandshakeState, maxHello int) (peer [32]byte, hello []byte, err error) {
	var hdr [hdrSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return peer, nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n < ikMsg1Overhead || n > ikMsg1Overhead+maxHello {
		return peer, nil, ErrInvalidHandshake
	}
	bp := getBuf(n)
	defer putBuf(bp)
	msg := (*bp)[:n]
	if _, err := io.ReadFull(r, msg); err != nil {
		return peer, nil, err
	}
	// out=nil: hello must not alias the pooled buffer, accept may keep it.
	hello, _, _, err = hs.ReadMessage(nil, msg)
	if err != nil {
		return peer, nil, ErrInvalidHandshake
	}
	rs := hs.PeerStatic()
	if len(rs) != 32 {
		return peer, nil, ErrInvalidHandshake
	}
	copy(peer[:], rs)
	if hello == nil {
		hello = []byte{}
	}
	return peer, hello, nil
}

// reject is the probe response: say nothing, swallow input until deadline,
// close. The close time depends only on the deadline drawn at accept, never
// on what or how much the peer sent, nor on why the handshake failed.
func reject(conn net.Conn, deadline time.Time) error {
	drain(conn, deadline)
	conn.Close()
	return fmt.Errorf("link: handshake: %w", ErrInvalidHandshake)
}

func drain(conn net.Conn, deadline time.Time) {
	conn.SetReadDeadline(deadline)
	var buf [512]byte
	for {
		_, err := conn.Read(buf[:])
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed):
			// Deadline reached, or we were closed locally (shutdown).
			return
		default:
			// The peer hung up (EOF or reset): nothing left to read, but
			// closing now would reveal when it did, so wait out the window.
			// Poll rather than sleep once, so that a local Close (server
			// shutdown) still ends the wait promptly: Read then reports
			// net.ErrClosed.
			d := time.Until(deadline)
			if d <= 0 {
				return
			}
			time.Sleep(min(d, drainPoll))
		}
	}
}

// drainPoll is how often a drain whose peer has gone checks for a local
// close.
const drainPoll = 200 * time.Millisecond
