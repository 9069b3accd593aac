package link

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

func TestHandshakeHappyPath(t *testing.T) {
	for _, tc := range []struct {
		name         string
		hello, reply []byte
	}{
		{"payloads", []byte("hello from device"), []byte("welcome, device")},
		{"empty", nil, nil},
		{"max", pattern(4096, 1), pattern(4096, 2)},
		// The client reads the reply into its hello's pooled buffer when
		// that is large enough, else into a new one.
		{"small hello, largest reply", []byte("hi"), pattern(defaultMaxHelloSize, 3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := listen(t)
			ch := serve(ln, Config{}, tc.reply, nil)
			raw, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			cli, reply, err := Client(raw, testClientKey, testServerKey.Public, tc.hello, Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			res := <-ch
			if res.err != nil {
				t.Fatal(res.err)
			}
			defer res.conn.Close()
			if !bytes.Equal(reply, tc.reply) || !bytes.Equal(res.hello, tc.hello) {
				t.Fatalf("payloads: reply %q hello %q", reply, res.hello)
			}
			if res.peer != testClientKey.Public || res.conn.PeerKey() != testClientKey.Public {
				t.Fatal("server saw wrong client key")
			}
			if cli.PeerKey() != testServerKey.Public {
				t.Fatal("client peer key")
			}
			if cli.LocalAddr().String() != res.conn.RemoteAddr().String() {
				t.Fatal("addresses")
			}
			if err := cli.WriteMessage([]byte("ping?")); err != nil {
				t.Fatal(err)
			}
			got, err := res.conn.ReadMessage()
			if err != nil || string(got) != "ping?" {
				t.Fatalf("server read %q %v", got, err)
			}
			if err := res.conn.WriteMessage([]byte("pong!")); err != nil {
				t.Fatal(err)
			}
			got, err = cli.ReadMessage()
			if err != nil || string(got) != "pong!" {
				t.Fatalf("client read %q %v", got, err)
			}
		})
	}
}

func TestHelloTooLarge(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	_, _, err := Client(a, testClientKey, testServerKey.Public, make([]byte, 4097), Config{})
	if !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("got %v", err)
	}
}

// A client with the wrong server key gets silence, then the server closes
// inside its window; the client reports ErrHandshakeTimeout.
func TestWrongServerKey(t *testing.T) {
	const lo, hi = 150 * time.Millisecond, 300 * time.Millisecond
	wrong := fixedKey(50)
	t.Run("server closes first", func(t *testing.T) {
		t.Parallel()
		ln := listen(t)
		ch := serve(ln, Config{HandshakeTimeoutMin: lo, HandshakeTimeoutMax: hi}, nil, nil)
		// The server's window starts when it accepts, which can be before
		// Dial returns: start the client's clock before dialling, or the
		// client can see a little less than lo.
		start := time.Now()
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = Client(raw, testClientKey, wrong.Public, []byte("hi"), Config{HandshakeTimeoutMax: 5 * time.Second})
		elapsed := time.Since(start)
		if !errors.Is(err, ErrHandshakeTimeout) {
			t.Fatalf("client err %v", err)
		}
		res := <-ch
		if !errors.Is(res.err, ErrInvalidHandshake) {
			t.Fatalf("server err %v", res.err)
		}
		checkWindow(t, "server", res.elapsed, lo, hi)
		checkWindow(t, "client", elapsed, lo, hi)
	})
	t.Run("client gives up first", func(t *testing.T) {
		t.Parallel()
		ln := listen(t)
		ch := serve(ln, Config{HandshakeTimeoutMin: lo, HandshakeTimeoutMax: hi}, nil, nil)
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = Client(raw, testClientKey, wrong.Public, nil, Config{HandshakeTimeoutMax: 50 * time.Millisecond})
		if !errors.Is(err, ErrHandshakeTimeout) {
			t.Fatalf("client err %v", err)
		}
		res := <-ch
		if !errors.Is(res.err, ErrInvalidHandshake) {
			t.Fatalf("server err %v", res.err)
		}
		checkWindow(t, "server", res.elapsed, lo, hi)
	})
}

// slack absorbs scheduler latency (CI, -race); the lower bound has none.
const slack = 400 * time.Millisecond

func checkWindow(t *testing.T, who string, d, lo, hi time.Duration) {
	t.Helper()
	if d < lo || d > hi+slack {
		t.Errorf("%s closed after %v, want within [%v, %v+slack]", who, d, lo, hi)
	}
}

// TestProbeResistance sends junk and truncated handshakes. For every input
// the server must send zero bytes and close no earlier than its minimum
// deadline and no later than its maximum (plus scheduling slack).
func TestProbeResistance(t *testing.T) {
	const lo, hi = 150 * time.Millisecond, 300 * time.Millisecond
	cfg := Config{HandshakeTimeoutMin: lo, HandshakeTimeoutMax: hi}
	real := firstMessage(t, testClientKey, testServerKey.Public, []byte("hello"))
	wrongKey := firstMessage(t, testClientKey, fixedKey(50).Public, []byte("hello"))
	flipped := bytes.Clone(real)
	flipped[40] ^= 1
	lenFrame := func(n, have int) []byte {
		b := make([]byte, 2+have)
		rand.Read(b[2:])
		b[0], b[1] = byte(n>>8), byte(n)
		return b
	}

	type probeCase struct {
		name       string
		send       []byte
		closeWrite bool  // half-close after sending (server sees EOF)
		acceptErr  error // accept rejects a genuine client
	}
	var cases []probeCase
	for _, n := range []int{0, 1, 2, 95, 96, 97, 500, 4096, 70000} {
		b := make([]byte, n)
		rand.Read(b)
		cases = append(cases, probeCase{name: "random" + itoa(n), send: b})
	}
	for _, n := range []int{1, 2, 10, 97, len(real) - 1} {
		cases = append(cases, probeCase{name: "truncated" + itoa(n), send: real[:n]})
	}
	cases = append(cases,
		probeCase{name: "truncated-eof", send: real[:len(real)-1], closeWrite: true},
		probeCase{name: "random-eof", send: lenFrame(500, 500), closeWrite: true},
		probeCase{name: "silent-eof", closeWrite: true},
		probeCase{name: "len0", send: lenFrame(0, 0)},
		probeCase{name: "len95", send: lenFrame(95, 95)},
		probeCase{name: "len96-garbage", send: lenFrame(96, 96)},
		probeCase{name: "oversized", send: lenFrame(96+4096+1, 96+4096+1)},
		probeCase{name: "oversized-ffff", send: lenFrame(0xffff, 0xffff)},
		probeCase{name: "bitflip", send: flipped},
		probeCase{name: "wrong-server-key", send: wrongKey},
		probeCase{name: "accept-rejects", send: real, acceptErr: errors.New("unknown device")},
		probeCase{name: "accept-rejects-eof", send: real, acceptErr: errors.New("unknown device"), closeWrite: true},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ln := listen(t)
			ch := serve(ln, cfg, []byte("must not be sent"), tc.acceptErr)
			// The clock starts before the dial: the server's wait starts
			// at its accept, which on a loaded box can come before Dial
			// returns here, and the probe's wait must not look shorter
			// than the server's.
			start := time.Now()
			raw, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				raw.Write(tc.send)
				if tc.closeWrite {
					raw.(*net.TCPConn).CloseWrite()
				}
			}()
			n, _ := io.Copy(io.Discard, raw) // until FIN (or RST)
			elapsed := time.Since(start)
			wg.Wait()
			res := <-ch
			if n != 0 {
				t.Errorf("server sent %d bytes to a probe", n)
			}
			if !errors.Is(res.err, ErrInvalidHandshake) {
				t.Errorf("server err %v, want ErrInvalidHandshake", res.err)
			}
			checkWindow(t, "server", res.elapsed, lo, hi)
			checkWindow(t, "client-observed", elapsed, lo, hi)
		})
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// The server's handshake deadline also bounds a genuine but slow client.
func TestServerHandshakeDeadlineBoundsSlowClient(t *testing.T) {
	ln := listen(t)
	ch := serve(ln, Config{HandshakeTimeoutMin: 100 * time.Millisecond, HandshakeTimeoutMax: 150 * time.Millisecond}, nil, nil)
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	real := firstMessage(t, testClientKey, testServerKey.Public, nil)
	raw.Write(real[:10])
	res := <-ch
	if !errors.Is(res.err, ErrInvalidHandshake) {
		t.Fatalf("server err %v", res.err)
	}
	raw.Write(real[10:]) // too late
	if n, _ := io.Copy(io.Discard, raw); n != 0 {
		t.Fatalf("got %d bytes", n)
	}
}

func TestClientRejectsBadReply(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply []byte
	}{
		{"short", []byte{0, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"garbage", append([]byte{0, 60}, make([]byte, 60)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			go func() {
				io.ReadFull(b, make([]byte, 2+96+timestampSize))
				b.Write(tc.reply)
				b.Close()
			}()
			_, _, err := Client(a, testClientKey, testServerKey.Public, nil, Config{})
			if !errors.Is(err, ErrInvalidHandshake) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func TestLowOrderPointRejected(t *testing.T) {
	dh := new(x25519)
	var zero [32]byte
	if _, err := dh.DH(testServerKey.dhKey().Private, zero[:]); err == nil {
		t.Fatal("DH with the all-zero point succeeded")
	}
	// A point of order 8 (u-coordinate from the well-known Curve25519
	// small-order list).
	smallOrder := [32]byte{0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00}
	if _, err := dh.DH(testServerKey.dhKey().Private, smallOrder[:]); err == nil {
		t.Fatal("DH with a small-order point succeeded")
	}
}

func TestKeys(t *testing.T) {
	a, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := KeyPairFromPrivate(a.Private)
	if err != nil || b.Private != a.Private || b.Public != a.Public {
		t.Fatal("KeyPairFromPrivate disagrees with GenerateKey")
	}
	if _, err := GenerateKey(bytes.NewReader(nil)); err == nil {
		t.Fatal("short randomness accepted")
	}
}
