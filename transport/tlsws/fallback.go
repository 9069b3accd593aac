package tlsws

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/cryptobyte"
)

// Routing a direct-mode connection.
//
// The server reads the ClientHello before it answers anything. If the
// ClientHello carries a valid, fresh authenticator (auth.go), Magpie
// completes the TLS handshake itself. Otherwise the connection goes to the
// fallback web server byte for byte: everything the client sent so far,
// then a two-way copy.
//
// With a fallback, the connection to it is opened as soon as the client's
// is accepted and the fallback's side is relayed from the start, so the
// fallback's own timers run from the moment the client connected: a
// client that sends nothing, or half a ClientHello, or anything else, sees
// exactly the fallback's reaction, when the fallback reacts. Only the
// client's bytes wait, until they are either a whole ClientHello (then
// judged) or cannot be one (then forwarded at once). How each side ends is
// passed on as it happened: a FIN as a FIN (half-close), a reset as a reset.
//
// maxHello bounds what is buffered while waiting: more than any real
// ClientHello.
const maxHello = 64 << 10

// Relay states.
const (
	undecided int32 = iota
	toFallback
	toMagpie
)

// route sends c (tracked) where it belongs.
func (l *listener) route(c net.Conn) {
	if l.fallback == "" {
		l.routeLocal(c)
		return
	}
	fb, err := net.DialTimeout("tcp", l.fallback, l.dialFB)
	if err != nil {
		// The site is down; so is this one.
		l.finish(c)
		return
	}
	if !l.track(fb) {
		l.finish(c)
		return
	}
	var state atomic.Int32
	fromFB := make(chan struct{})
	go func() {
		defer close(fromFB)
		buf := make([]byte, 32<<10)
		for {
			n, err := fb.Read(buf)
			if !state.CompareAndSwap(undecided, toFallback) && state.Load() != toFallback {
				return // Magpie has the client
			}
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					resetConn(fb)
					return
				}
			}
			if err != nil {
				if isReset(err) {
					resetConn(c)
				} else {
					closeWrite(c)
				}
				return
			}
		}
	}()

	var buf []byte
	var clientErr error
	tmp := make([]byte, 16<<10)
	for state.Load() == undecided {
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil {
			clientErr = err
			break
		}
		msg, done, err := helloMessage(buf)
		if err != nil || len(buf) > maxHello {
			break
		}
		if done {
			if l.acme && offersALPN(msg, acme.ALPNProto) {
				// A certificate authority's tls-alpn-01 challenge: this
				// server's to answer, not the fallback's.
				if state.CompareAndSwap(undecided, toMagpie) {
					fb.Close()
					<-fromFB
					l.finish(fb)
					l.toDecoy(c, buf)
					return
				}
			}
			if l.hello.check(msg) && state.CompareAndSwap(undecided, toMagpie) {
				fb.Close()
				<-fromFB
				l.finish(fb)
				l.toMagpie(c, buf)
				return
			}
			break
		}
	}
	state.CompareAndSwap(undecided, toFallback)
	l.clientToFallback(c, fb, buf, clientErr)
	<-fromFB
	l.finish(c)
	l.finish(fb)
}

// clientToFallback forwards what the client already sent (buf), then
// everything else it sends, to the fallback, and passes on how each end
// went as the fallback's own kernel would have shown it: the client's FIN
// or RST to the fallback, and a fallback that is gone (it reset, or closed
// and then got data) as an RST to the client.
func (l *listener) clientToFallback(c, fb net.Conn, buf []byte, clientErr error) {
	tmp := make([]byte, 32<<10)
	for {
		if len(buf) > 0 {
			if _, err := fb.Write(buf); err != nil {
				resetConn(c)
				return
			}
		}
		if clientErr != nil {
			break
		}
		n, err := c.Read(tmp)
		buf, clientErr = tmp[:n], err
	}
	switch {
	case errors.Is(clientErr, io.EOF):
		closeWrite(fb)
	case isReset(clientErr):
		resetConn(fb)
	}
}

// fallbackChoices returns the key exchange the fallback chooses when
// offered a post-quantum hybrid and X25519, and the ALPN protocol when
// offered h2 and http/1.1, as Chrome offers them; false if it could not be
// asked.
func fallbackChoices(addr string, timeout time.Duration) (tls.CurveID, string, bool) {
	raw, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return 0, "", false
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(timeout))
	c := tls.Client(raw, &tls.Config{
		InsecureSkipVerify: true, // only the key exchange is wanted
		NextProtos:         []string{"h2", "http/1.1"},
		CurvePreferences:   []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384},
	})
	if err := c.Handshake(); err != nil {
		return 0, "", false
	}
	st := c.ConnectionState()
	return st.CurveID, st.NegotiatedProtocol, true
}

// routeLocal, without a fallback: Magpie's TLS for an authenticated
// ClientHello, the decoy's for everything else.
func (l *listener) routeLocal(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(l.timeouts.header))
	var buf []byte
	tmp := make([]byte, 16<<10)
	for {
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil {
			if n == 0 && len(buf) == 0 {
				l.finish(c)
				return
			}
			break
		}
		msg, done, err := helloMessage(buf)
		if err != nil || len(buf) > maxHello {
			break
		}
		if done {
			if l.hello.check(msg) {
				c.SetReadDeadline(time.Time{})
				l.toMagpie(c, buf)
				return
			}
			break
		}
	}
	c.SetReadDeadline(time.Time{})
	l.toDecoy(c, buf)
}

// toMagpie completes the TLS handshake of a recognised client and hands
// the connection to the HTTP/1.1 server, as a plain net.Conn: HTTP/1.1 is
// spoken inside whatever ALPN protocol was picked (net/http would insist on
// h2 for a *tls.Conn that negotiated it).
func (l *listener) toMagpie(c net.Conn, buf []byte) {
	tc := tls.Server(&prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(buf), c)}, l.magpieTLS)
	c.SetDeadline(time.Now().Add(readHeaderTimeout))
	if err := tc.Handshake(); err != nil {
		l.finish(c)
		return
	}
	c.SetDeadline(time.Time{})
	l.untrack(c)
	l.magpieLn.give(innerConn{tc})
}

// innerConn is a TLS connection whose handshake is done, as net/http
// should see it: a plain connection.
type innerConn struct{ net.Conn }

func (l *listener) toDecoy(c net.Conn, buf []byte) {
	l.untrack(c)
	l.decoyLn.give(tls.Server(&prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(buf), c)}, l.decoyTLS))
}

// finish closes a tracked connection and forgets it.
func (l *listener) finish(c net.Conn) {
	c.Close()
	l.untrack(c)
}

// prefixConn reads what was already read from the connection first.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (p *prefixConn) Read(b []byte) (int, error) { return p.r.Read(b) }

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// resetConn closes c with an RST, as the kernel does for a socket closed
// with unread data.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// closeWrite sends a FIN and keeps reading.
func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
		return
	}
	c.Close()
}

// helloMessage reassembles the ClientHello handshake message (with its
// 4-byte header) from the TLS records at the start of buf. done is false
// with a nil error while buf may still become one; err is set as soon as it
// cannot.
func helloMessage(buf []byte) (msg []byte, done bool, err error) {
	errNot := errors.New("not a ClientHello")
	for {
		if len(msg) >= 4 {
			if msg[0] != 1 {
				return nil, false, errNot
			}
			n := 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
			if n > maxHello {
				return nil, false, errNot
			}
			if len(msg) >= n {
				return msg[:n], true, nil
			}
		}
		if len(buf) == 0 {
			return nil, false, nil
		}
		if buf[0] != 22 {
			return nil, false, errNot
		}
		if len(buf) < 5 {
			return nil, false, nil
		}
		if buf[1] != 3 {
			return nil, false, errNot
		}
		n := int(buf[3])<<8 | int(buf[4])
		if n == 0 || n > 1<<14 {
			return nil, false, errNot
		}
		if len(buf) < 5+n {
			return nil, false, nil
		}
		msg = append(msg, buf[5:5+n]...)
		buf = buf[5+n:]
	}
}

// offersALPN reports whether the ClientHello handshake message msg offers
// protocol proto and nothing else (a tls-alpn-01 validation does that).
func offersALPN(msg []byte, proto string) bool {
	s := cryptobyte.String(msg[4:])
	var random, sid, suites, comp, exts cryptobyte.String
	if !s.Skip(2) || !s.ReadBytes((*[]byte)(&random), 32) || !s.ReadUint8LengthPrefixed(&sid) ||
		!s.ReadUint16LengthPrefixed(&suites) || !s.ReadUint8LengthPrefixed(&comp) || !s.ReadUint16LengthPrefixed(&exts) {
		return false
	}
	for !exts.Empty() {
		var typ uint16
		var data, list, p cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return false
		}
		if typ != 16 {
			continue
		}
		if !data.ReadUint16LengthPrefixed(&list) || !list.ReadUint8LengthPrefixed(&p) {
			return false
		}
		return string(p) == proto && list.Empty()
	}
	return false
}
