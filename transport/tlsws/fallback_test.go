package tlsws

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	utls "github.com/refraction-networking/utls"

	"github.com/magpie-im/magpie/transport/transporttest"
)

// sealedHello returns a Magpie ClientHello record for secret at now, as the
// client would send it (never sent here).
func sealedHello(t *testing.T, secret [32]byte, now time.Time) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	uc, err := chromeConn(a, &utls.Config{ServerName: testName, InsecureSkipVerify: true}, &secret, now)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		uc.Handshake()
	}()
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	rec := readRecord(t, b)
	a.Close()
	<-done
	return rec
}

func readRecord(t *testing.T, r io.Reader) []byte {
	t.Helper()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(r, hdr); err != nil {
		t.Fatal(err)
	}
	rec := make([]byte, 5+int(hdr[3])<<8|int(hdr[4]))
	copy(rec, hdr)
	if _, err := io.ReadFull(r, rec[5:]); err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestHelloVerifier(t *testing.T) {
	secret := testSecret(1)
	now := time.Now()
	v := newHelloVerifier(secret, 0)
	good := sealedHello(t, secret, now)
	if !v.check(good[5:]) {
		t.Fatal("a fresh, valid ClientHello refused")
	}
	if v.check(good[5:]) {
		t.Fatal("a replayed ClientHello accepted")
	}
	for name, hello := range map[string][]byte{
		"wrong secret":   sealedHello(t, testSecret(2), now),
		"expired":        sealedHello(t, secret, now.Add(-DefaultAuthWindow-time.Minute)),
		"from future":    sealedHello(t, secret, now.Add(DefaultAuthWindow+time.Minute)),
		"key share":      flip(sealedHello(t, secret, now), len(good)/2),
		"random":         flip(sealedHello(t, secret, now), 5+4+2+7),
		"session id":     flip(sealedHello(t, secret, now), 5+helloSIDOffset+20),
		"masked time":    flip(sealedHello(t, secret, now), 5+helloSIDOffset),
		"last extension": flip(sealedHello(t, secret, now), len(good)-1),
	} {
		if v.check(hello[5:]) {
			t.Errorf("%s: accepted", name)
		}
	}
	// To anyone without the secret the session id is 32 random bytes: no
	// two ClientHellos share any of it, the timestamp included.
	a, b := sealedHello(t, secret, now), sealedHello(t, secret, now)
	sa := a[5+helloSIDOffset : 5+helloSIDOffset+helloSIDLen]
	sb := b[5+helloSIDOffset : 5+helloSIDOffset+helloSIDLen]
	if bytes.Equal(sa[:helloTSLen], sb[:helloTSLen]) {
		t.Errorf("the same masked timestamp twice: %x", sa[:helloTSLen])
	}
}

func flip(b []byte, i int) []byte {
	b[i] ^= 0x40
	return b
}

// recordingSite stands in for the fallback web server: it records every
// byte each connection sends and answers nothing.
type recordingSite struct {
	ln  net.Listener
	got chan []byte // what each connection sent, once it closed
}

func startRecordingSite(t *testing.T) *recordingSite {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &recordingSite{ln: ln, got: make(chan []byte, 64)}
	acceptAll(t, ln, func(c net.Conn, _ func(net.Conn)) {
		b, _ := io.ReadAll(c)
		s.got <- b
	})
	return s
}

// next returns what the next connection to close had sent.
func (s *recordingSite) next(t *testing.T) []byte {
	t.Helper()
	select {
	case b := <-s.got:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("the fallback saw no connection close")
		return nil
	}
}

// Whatever does not authenticate reaches the fallback byte for byte, a
// replay of a genuine ClientHello included; the genuine client's
// connection never sends the fallback a byte.
func TestUnauthenticatedGoesToFallbackByteForByte(t *testing.T) {
	site := startRecordingSite(t)
	cfg := serverConfig(t)
	cfg.Fallback = site.ln.Addr().String()
	cfg.FallbackDialTimeout = 500 * time.Millisecond
	ln := serve(t, cfg)
	// Listen asked the fallback which key exchange it picks (this one
	// never answers).
	if got := site.next(t); len(got) == 0 || got[0] != 22 {
		t.Fatalf("Listen's question to the fallback: % x", got[:min(len(got), 16)])
	}
	proxy, hellos := captureProxy(t, ln.Addr().String())

	transporttest.Echo(t, dial(t, proxy, clientConfig(t)), []byte("genuine"))
	if got := site.next(t); len(got) != 0 {
		t.Fatalf("the genuine connection sent the fallback %d bytes", len(got))
	}
	genuine := <-hellos

	send := func(b []byte) []byte {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(b)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
		c.Close()
		return site.next(t)
	}
	junk := randBytes(3000)
	for name, b := range map[string][]byte{
		"replay":       genuine,
		"wrong secret": sealedHello(t, testSecret(9), time.Now()),
		"modified":     flip(bytes.Clone(genuine), len(genuine)/2),
		"http":         []byte("GET / HTTP/1.1\r\nHost: " + testName + "\r\n\r\n"),
		"junk":         junk,
		"half a hello": genuine[:100],
	} {
		if got := send(b); !bytes.Equal(got, b) {
			t.Errorf("%s: the fallback got %d bytes, want the %d sent", name, len(got), len(b))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	// A client with the wrong secret meets the fallback too (which says
	// nothing here, so the handshake times out).
	bad := clientConfig(t)
	bad.Secret = testSecret(9)
	if _, err := Dial(ctx, "tcp", ln.Addr().String(), bad); err == nil {
		t.Fatal("a client with the wrong secret got through")
	}
}

// FuzzRouting: what the listener parses before it knows who is calling (a
// ClientHello from records, its ALPN, its authenticator) never panics on
// any bytes, and a whole ClientHello is found only inside the buffer.
func FuzzRouting(f *testing.F) {
	f.Add(chromeHello)
	f.Add(chromeHello[:100])
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	v := newHelloVerifier(testSecret(1), 0)
	f.Fuzz(func(t *testing.T, buf []byte) {
		msg, done, err := helloMessage(buf)
		if err != nil && done {
			t.Fatal("done with an error")
		}
		if !done {
			return
		}
		if len(msg) < 4 || len(msg) > len(buf) {
			t.Fatalf("a %d-byte message from %d bytes", len(msg), len(buf))
		}
		offersALPN(msg, "acme-tls/1")
		if v.check(msg) {
			t.Fatal("an authenticator forged by the fuzzer")
		}
	})
}
