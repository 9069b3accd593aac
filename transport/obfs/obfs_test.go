package obfs

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/transport/transporttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testProbeMin = 300 * time.Millisecond
	testProbeMax = 600 * time.Millisecond
)

type testServer struct {
	key  ServerKey
	cert string
	ln   net.Listener
	addr string
	wg   sync.WaitGroup
}

// startEcho runs an obfs echo server on 127.0.0.1.
func startEcho(t testing.TB, cfg Config) *testServer {
	t.Helper()
	key, err := GenerateServerKey()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ProbeMin == 0 {
		cfg.ProbeMin, cfg.ProbeMax = testProbeMin, testProbeMax
	}
	ln, err := Listen("127.0.0.1:0", key, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{key: key, cert: key.Cert(), ln: ln, addr: ln.Addr().String()}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

// recConn records what crosses the raw connection.
type recConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	reads  []byte
}

func (r *recConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.writes = append(r.writes, append([]byte(nil), p...))
	r.mu.Unlock()
	return r.Conn.Write(p)
}

func (r *recConn) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.mu.Lock()
	r.reads = append(r.reads, p[:n]...)
	r.mu.Unlock()
	return n, err
}

func dialRecorded(t testing.TB, s *testServer, cert string) (net.Conn, *recConn) {
	t.Helper()
	raw, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	rc := &recConn{Conn: raw}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Client(ctx, rc, cert)
	if err != nil {
		raw.Close()
		t.Fatal(err)
	}
	return c, rc
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func TestEchoSizes(t *testing.T) {
	s := startEcho(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, "tcp", s.addr, s.cert)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, n := range []int{1, 2, 31, 100, 1000, 1400, maxFramePay - 1, maxFramePay, maxFramePay + 1, 65535, 100_000, 1 << 20} {
		transporttest.Echo(t, c, pattern(n, byte(i)))
	}
	if n, err := c.Write(nil); n != 0 || err != nil {
		t.Fatalf("empty write: %d, %v", n, err)
	}
}

func TestConcurrentConnections(t *testing.T) {
	s := startEcho(t, Config{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := Dial(ctx, "tcp", s.addr, s.cert)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for j := range 10 {
				msg := pattern(100+j*997+i, byte(i*10+j))
				if _, err := c.Write(msg); err != nil {
					errs <- err
					return
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, msg) {
					errs <- errors.New("echo differs")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestTransportInterface(t *testing.T) {
	key, err := GenerateServerKey()
	if err != nil {
		t.Fatal(err)
	}
	srv := &Transport{Key: key, Config: Config{ProbeMin: testProbeMin, ProbeMax: testProbeMax}}
	transporttest.Run(t, srv, &Transport{Cert: key.Cert()}, "obfs")
}

// expectSilentClose checks that the server sends nothing on raw and
// closes it no earlier than ProbeMin and no later than ProbeMax (plus
// slack) after start.
func expectSilentClose(t *testing.T, raw net.Conn, start time.Time) {
	t.Helper()
	_ = raw.SetReadDeadline(start.Add(testProbeMax + 3*time.Second))
	buf := make([]byte, 4096)
	total := 0
	var err error
	for {
		var n int
		n, err = raw.Read(buf)
		total += n
		if err != nil {
			break
		}
	}
	elapsed := time.Since(start)
	if total != 0 {
		t.Fatalf("server sent %d bytes to a probe", total)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("server did not close within ProbeMax (+slack): %v", elapsed)
	}
	if elapsed < testProbeMin {
		t.Fatalf("server closed after %v, before ProbeMin %v", elapsed, testProbeMin)
	}
	if elapsed > testProbeMax+time.Second {
		t.Fatalf("server closed after %v, long after ProbeMax %v", elapsed, testProbeMax)
	}
}

func probe(t *testing.T, addr string, payload []byte) {
	t.Helper()
	start := time.Now()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if len(payload) > 0 {
		go func() { _, _ = raw.Write(payload) }()
	}
	expectSilentClose(t, raw, start)
}

func TestProbeRandomBytes(t *testing.T) {
	s := startEcho(t, Config{})
	for _, n := range []int{0, 1, 31, 32, 100, 1000, 5000, 70000} {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			probe(t, s.addr, pattern(n, byte(n)))
		})
	}
}

func TestWrongCert(t *testing.T) {
	s := startEcho(t, Config{})
	other, err := GenerateServerKey()
	if err != nil {
		t.Fatal(err)
	}
	// Right public key, wrong node ID, and a wholly wrong cert.
	half := ServerKey{NodeID: other.NodeID, Public: s.key.Public}
	for _, cert := range []string{other.Cert(), half.Cert()} {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := Dial(ctx, "tcp", s.addr, cert)
			elapsed := time.Since(start)
			if err == nil {
				c.Close()
				t.Fatal("handshake with a wrong cert succeeded")
			}
			if !errors.Is(err, ErrNoAnswer) {
				t.Fatalf("error %v, want ErrNoAnswer", err)
			}
			if elapsed < testProbeMin || elapsed > testProbeMax+time.Second {
				t.Fatalf("server closed after %v, want within [%v, %v]", elapsed, testProbeMin, testProbeMax)
			}
		})
	}
}

// captureHello returns the first packet of a real, successful handshake.
func captureHello(t *testing.T, s *testServer) []byte {
	t.Helper()
	c, rc := dialRecorded(t, s, s.cert)
	transporttest.Echo(t, c, []byte("original works"))
	c.Close()
	return rc.writes[0]
}

func TestTruncatedHello(t *testing.T) {
	s := startEcho(t, Config{})
	// Truncations of hellos the server has never seen.
	for _, cut := range []int{1, 48, 300, -1} {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			h := freshHello(t, s)
			n := cut
			if n < 0 || n >= len(h) {
				n = len(h) - 1
			}
			probe(t, s.addr, h[:n])
		})
	}
}

// freshHello builds a valid first message without sending it.
func freshHello(t *testing.T, s *testServer) []byte {
	t.Helper()
	eph, err := newEphemeralKey(cryptoReader{})
	if err != nil {
		t.Fatal(err)
	}
	hk := newHandshakeKey(s.key.NodeID, s.key.Public)
	return buildClientHello(newRand(), hk, eph, epochHour(time.Now()), 0)
}

func TestReplay(t *testing.T) {
	s := startEcho(t, Config{})
	hello := captureHello(t, s)
	t.Run("exact", func(t *testing.T) {
		t.Parallel()
		probe(t, s.addr, hello)
	})
	for _, pos := range []int{0, 10, len(hello) / 2, len(hello) - 17, len(hello) - 1} {
		t.Run("flipped", func(t *testing.T) {
			t.Parallel()
			h := append([]byte(nil), hello...)
			h[pos] ^= 0x01
			probe(t, s.addr, h)
		})
	}
	t.Run("extended", func(t *testing.T) {
		t.Parallel()
		probe(t, s.addr, append(append([]byte(nil), hello...), 0))
	})
	// A fresh valid hello still works: the server is not stuck.
	t.Run("fresh", func(t *testing.T) {
		t.Parallel()
		c, _ := dialRecorded(t, s, s.cert)
		transporttest.Echo(t, c, []byte("still fine"))
		c.Close()
	})
}

// TestFreshHelloAccepted is the control for the probes: an unsent valid
// hello, written raw, gets an answer.
func TestFreshHelloAccepted(t *testing.T) {
	s := startEcho(t, Config{})
	raw, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write(freshHello(t, s)); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, serverFixed)
	if _, err := io.ReadFull(raw, buf); err != nil {
		t.Fatalf("no answer to a valid hello: %v", err)
	}
}

func TestStaleTimestamp(t *testing.T) {
	s := startEcho(t, Config{})
	for _, tc := range []struct {
		name   string
		offset time.Duration
		ok     bool
	}{
		{"hour-1", -time.Hour, true},
		{"hour+1", time.Hour, true},
		{"hour-2", -2 * time.Hour, false},
		{"hour+2", 2 * time.Hour, false},
		{"day-old", -24 * time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			raw, err := net.Dial("tcp", s.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// Align to the middle of an hour so hour boundaries cannot
			// make the case flaky: shift the client's clock by whole hours.
			c, err := clientHandshake(ctx, raw, s.cert, time.Now().Add(tc.offset), -1)
			if tc.ok {
				if err != nil {
					t.Fatalf("clock %v: %v", tc.offset, err)
				}
				transporttest.Echo(t, c, []byte("skewed but fine"))
				return
			}
			if err == nil {
				t.Fatal("stale hello accepted")
			}
			if !errors.Is(err, ErrNoAnswer) {
				t.Fatal(err)
			}
			if e := time.Since(start); e < testProbeMin {
				t.Fatalf("closed after %v", e)
			}
		})
	}
}

// TestServerClock moves the server's clock (mock) instead of the client's.
func TestServerClock(t *testing.T) {
	s := startEcho(t, Config{Now: func() time.Time { return time.Now().Add(3 * time.Hour) }})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, "tcp", s.addr, s.cert)
	if err == nil {
		c.Close()
		t.Fatal("hello from 3 hours ago accepted")
	}
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatal(err)
	}
}

func TestWireIsNotPlaintext(t *testing.T) {
	s := startEcho(t, Config{})
	c, rc := dialRecorded(t, s, s.cert)
	defer c.Close()
	msg := bytes.Repeat([]byte("MAGPIE plaintext marker 0123456789 "), 300)
	transporttest.Echo(t, c, msg)
	rc.mu.Lock()
	var sent []byte
	for _, w := range rc.writes {
		sent = append(sent, w...)
	}
	got := rc.reads
	rc.mu.Unlock()
	if len(sent) < len(msg) || len(got) < len(msg) {
		t.Fatalf("recorded %d/%d bytes", len(sent), len(got))
	}
	for off := 0; off+12 <= 70; off += 7 {
		needle := msg[off : off+12]
		if bytes.Contains(sent, needle) || bytes.Contains(got, needle) {
			t.Fatalf("plaintext %q visible on the wire", needle)
		}
	}
}

func TestRecordSizesVary(t *testing.T) {
	s := startEcho(t, Config{})
	c, rc := dialRecorded(t, s, s.cert)
	defer c.Close()
	msg := pattern(1024, 9)
	for range 100 {
		transporttest.Echo(t, c, msg)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	sizes := map[int]int{}
	for _, w := range rc.writes[1:] { // after the first packet
		sizes[len(w)]++
	}
	if len(rc.writes) != 101 {
		t.Fatalf("%d writes", len(rc.writes))
	}
	if len(sizes) < 10 {
		t.Fatalf("only %d distinct on-wire write sizes for 100 equal writes: %v", len(sizes), sizes)
	}
}

func TestServerKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "obfs.key")
	k1, err := LoadOrCreateServerKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	k2, err := LoadOrCreateServerKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if k1 != k2 {
		t.Fatal("reloaded key differs")
	}
	id, pub, err := ParseCert(k1.Cert())
	if err != nil || id != k1.NodeID || pub != k1.Public {
		t.Fatal("cert round trip")
	}
	if len(k1.Cert()) != 70 {
		t.Fatalf("cert length %d", len(k1.Cert()))
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateServerKey(path); err == nil {
		t.Fatal("garbage key file accepted")
	}
	if _, _, err := ParseCert("not a cert"); err == nil {
		t.Fatal("bad cert accepted")
	}
}

func TestListenerCloseUnblocks(t *testing.T) {
	key, _ := GenerateServerKey()
	ln, err := Listen("127.0.0.1:0", key, Config{ProbeMin: time.Hour, ProbeMax: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// A silent client is held for an hour; Close must not wait for it.
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	time.Sleep(50 * time.Millisecond)
	errc := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		errc <- err
	}()
	start := time.Now()
	ln.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("Close waited for a held connection")
	}
}

// After the peer hung up, a connection closed here reads net.ErrClosed, as
// a net.Conn does, not the peer's EOF again: the link's probe-resistant
// drain waits for exactly that to end early when the server shuts down (it
// used to hold shutdown up to the end of its 10-30 s window).
func TestReadAfterCloseIsErrClosed(t *testing.T) {
	key, err := GenerateServerKey()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen("127.0.0.1:0", key, Config{ProbeMin: testProbeMin, ProbeMax: testProbeMax})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, err := Dial(ctx, "tcp", ln.Addr().String(), key.Cert())
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	client.Close()
	buf := make([]byte, 16)
	if _, err := server.Read(buf); !errors.Is(err, io.EOF) {
		t.Fatalf("read after the peer hung up: %v, want EOF", err)
	}
	server.Close()
	if _, err := server.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after a local close: %v, want net.ErrClosed", err)
	}
}

// Someone in the middle who knows the cert (it is in the invite) can make a
// reply that looks right, marked and MACed, but cannot prove the server's
// private key: the client refuses it. The genuine server's reply to the
// same client passes (every other test).
func TestClientRefusesReplyWithoutKeyProof(t *testing.T) {
	key, err := GenerateServerKey()
	if err != nil {
		t.Fatal(err)
	}
	hk := newHandshakeKey(key.NodeID, key.Public)
	for _, auth := range [][authLen]byte{{}, {1, 2, 3}} {
		client, mitm := net.Pipe()
		go func() {
			defer mitm.Close()
			buf := make([]byte, 8192)
			if _, err := mitm.Read(buf); err != nil { // the client's hello
				return
			}
			eph, err := newEphemeralKey(crand.Reader)
			if err != nil {
				return
			}
			mitm.Write(buildServerReply(newRand(), hk, eph, &auth, epochHour(time.Now())))
			io.Copy(io.Discard, mitm)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := clientHandshake(ctx, client, key.Cert(), time.Now(), -1)
		cancel()
		client.Close()
		if err == nil {
			c.Close()
			t.Fatal("the client accepted a reply from someone without the server's key")
		}
		if !strings.Contains(err.Error(), "prove its key") {
			t.Fatalf("error %v, want the server's key proof to fail", err)
		}
	}
}
