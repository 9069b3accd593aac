package censor

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/magpie-im/magpie/link"
)

var httpGet = []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")

func TestForwardUntouched(t *testing.T) {
	srv := startServer(t, echo)
	c := newCensor(t, Config{})
	addr := startForward(t, c, srv.addr)
	conn := dial(t, addr)
	rng := rand.New(rand.NewPCG(7, 8))
	first := randBytes(rng, 700) // would be flagged if FET were on
	roundTrip(t, conn, first)
	roundTrip(t, conn, randBytes(rng, 100<<10))

	ev := nthEvent(t, c, 1)
	if ev.Verdict != VerdictForwarded || ev.Rule != RuleNone || ev.Listen != addr || ev.Upstream != srv.addr || ev.FirstLen != len(first) {
		t.Fatalf("event %+v", ev)
	}
	fps := c.FirstPacketsTo(addr)
	if len(fps) != 1 || !bytes.Equal(fps[0], first) {
		t.Fatalf("first packets %d, want the one sent", len(fps))
	}
	// Half-close is relayed: the client's FIN reaches the echo server,
	// which closes, and the client sees EOF.
	conn.(*net.TCPConn).CloseWrite()
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after CloseWrite: %d, %v; want EOF", n, err)
	}
	st := c.Stats()
	if st.Flows != 1 || st.Forwarded != 1 || st.BytesUp != int64(len(first)+100<<10) || st.BytesDown != st.BytesUp {
		t.Fatalf("stats %+v", st)
	}
}

func TestBlockAddr(t *testing.T) {
	srv := startServer(t, echo)
	other := startServer(t, echo)
	c := newCensor(t, Config{BlockAddrs: []string{srv.addr}})
	blocked := startForward(t, c, srv.addr)
	open := startForward(t, c, other.addr)

	// Reset: the upstream is blocked.
	dialExpectReset(t, blocked)
	if ev := nthEvent(t, c, 1); ev.Verdict != VerdictReset || ev.Rule != RuleBlockAddr {
		t.Fatalf("event %+v", ev)
	}
	roundTrip(t, dial(t, open), httpGet)

	// Black hole: the forward's own address is blocked, by IP:port.
	c.SetConfig(Config{BlockAddrs: []string{open}, BlockAction: ActionBlackhole})
	conn := dial(t, open)
	if _, err := conn.Write(httpGet); err != nil {
		t.Fatal(err)
	}
	expectSilence(t, conn, 300*time.Millisecond)
	if ev := nthEvent(t, c, 3); ev.Verdict != VerdictBlackholed || ev.Rule != RuleBlockAddr {
		t.Fatalf("event %+v", ev)
	}

	// A bare IP blocks every port.
	c.SetConfig(Config{BlockAddrs: []string{"127.0.0.1"}})
	dialExpectReset(t, open)

	c.SetConfig(Config{})
	c.Block(open)
	dialExpectReset(t, open)
	c.Unblock(open)
	roundTrip(t, dial(t, open), httpGet)

	if n := srv.accepted.Load(); n != 0 {
		t.Fatalf("blocked upstream saw %d connections", n)
	}
	st := c.Stats()
	if st.ByRule[RuleBlockAddr] != 4 || st.Reset != 3 || st.Blackholed != 1 || st.Forwarded != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFETBlackholeAndExpiry(t *testing.T) {
	srv := startServer(t, echo)
	const window = 700 * time.Millisecond
	c := newCensor(t, Config{FET: true, BlackholeFor: window})
	a := startForward(t, c, srv.addr)
	b := startForward(t, c, srv.addr)
	rng := rand.New(rand.NewPCG(9, 10))

	// Random first packet: black-holed, nothing reaches the server.
	conn := dial(t, a)
	if _, err := conn.Write(randBytes(rng, 300)); err != nil {
		t.Fatal(err)
	}
	expectSilence(t, conn, 200*time.Millisecond)
	ev := nthEvent(t, c, 1)
	if ev.Verdict != VerdictBlackholed || ev.Rule != RuleFET || !strings.HasPrefix(ev.Detail, "not exempt") {
		t.Fatalf("event %+v", ev)
	}
	bh := c.Blackholes()
	if len(bh) != 1 || bh[0].Server.String() != a || bh[0].Client.String() != "127.0.0.1" {
		t.Fatalf("black-hole table %+v", bh)
	}

	// Within the window even an exempt first packet on the same 3-tuple is
	// black-holed.
	conn = dial(t, a)
	conn.Write(httpGet)
	expectSilence(t, conn, 200*time.Millisecond)
	if ev := nthEvent(t, c, 2); ev.Verdict != VerdictBlackholed || ev.Rule != RuleBlackholeTable {
		t.Fatalf("event %+v", ev)
	}
	// Another server port is not affected, and exempt traffic passes.
	conn = dial(t, b)
	roundTrip(t, conn, httpGet)
	roundTrip(t, dial(t, b), cat([]byte("ABCDEF"), filler(300))) // Ex2
	if n := srv.received.Load(); n != int64(len(httpGet)+306) {
		t.Fatalf("server received %d bytes; the black-holed flows must deliver none", n)
	}

	// After the window the 3-tuple works again.
	time.Sleep(time.Until(bh[0].Expires) + 20*time.Millisecond)
	roundTrip(t, dial(t, a), httpGet)
	if len(c.Blackholes()) != 0 {
		t.Fatal("expired entry still listed")
	}
	st := c.Stats()
	if st.ByRule[RuleFET] != 1 || st.ByRule[RuleBlackholeTable] != 1 || st.Forwarded != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFETProbability(t *testing.T) {
	c := New(Config{FET: true, FETProbability: 0.26, Seed: 11})
	defer c.Close()
	hits := 0
	for range 10000 {
		if c.drawFET() {
			hits++
		}
	}
	if hits < 2300 || hits > 2900 {
		t.Fatalf("%d of 10000 draws, want about 2600", hits)
	}

	// A connection the draw spares is forwarded and says so.
	srv := startServer(t, echo)
	c2 := newCensor(t, Config{FET: true, FETProbability: 1e-12})
	roundTrip(t, dial(t, startForward(t, c2, srv.addr)), randBytes(rand.New(rand.NewPCG(1, 1)), 500))
	if ev := nthEvent(t, c2, 1); ev.Verdict != VerdictForwarded || !strings.Contains(ev.Detail, "probability") {
		t.Fatalf("event %+v", ev)
	}
}

// linkServer runs the real link responder (with a fixed handshake deadline)
// and answers every hello with "welcome".
func linkServer(t *testing.T, deadline time.Duration) (*testServer, link.KeyPair) {
	t.Helper()
	key, err := link.GenerateKey(crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg := link.Config{HandshakeTimeoutMin: deadline, HandshakeTimeoutMax: deadline}
	srv := startServer(t, func(_ *testServer, conn net.Conn) {
		lc, err := link.Server(conn, key, cfg, func([32]byte, []byte) ([]byte, error) { return []byte("welcome"), nil })
		if err == nil {
			lc.Close()
		}
	})
	return srv, key
}

func linkDial(t *testing.T, addr string, server link.KeyPair) error {
	t.Helper()
	key, err := link.GenerateKey(crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, addr)
	lc, reply, err := link.Client(conn, key, server.Public, []byte("hello"), link.Config{HandshakeTimeoutMax: 3 * time.Second})
	if err != nil {
		return err
	}
	lc.Close()
	if string(reply) != "welcome" {
		t.Fatalf("reply %q", reply)
	}
	return nil
}

// The plain tcp transport's real first message is caught by rule 3 (reset)
// and, separately, by rule 2.
func TestRealLinkFingerprinted(t *testing.T) {
	srv, key := linkServer(t, 2*time.Second)
	c := newCensor(t, Config{})
	addr := startForward(t, c, srv.addr)
	if err := linkDial(t, addr, key); err != nil {
		t.Fatalf("without rules: %v", err)
	}
	first := c.FirstPacketsTo(addr)[0]
	if !LooksLikeMagpieTCP(first) {
		t.Fatalf("link's first packet (%d bytes) not fingerprinted", len(first))
	}
	if exempt, why := FETExempt(first); exempt {
		t.Fatalf("link's first packet exempt from FET: %s", why)
	}

	// link reports a reset as ErrHandshakeTimeout ("no answer"); it comes
	// at once, long before the client's 3 s handshake timeout.
	c.SetConfig(Config{TCPFingerprint: true})
	start := time.Now()
	err := linkDial(t, addr, key)
	if !errors.Is(err, link.ErrHandshakeTimeout) || time.Since(start) > time.Second {
		t.Fatalf("with the fingerprint rule: %v after %v, want an immediate reset", err, time.Since(start))
	}
	if ev := nthEvent(t, c, 2); ev.Verdict != VerdictReset || ev.Rule != RuleTCPFingerprint {
		t.Fatalf("event %+v", ev)
	}

	c.SetConfig(Config{FET: true, BlackholeFor: time.Minute})
	start = time.Now()
	key2, _ := link.GenerateKey(crand.Reader)
	conn := dial(t, addr)
	_, _, err = link.Client(conn, key2, key.Public, nil, link.Config{HandshakeTimeoutMax: 300 * time.Millisecond})
	if !errors.Is(err, link.ErrHandshakeTimeout) || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("with FET: %v after %v, want a handshake timeout", err, time.Since(start))
	}
	if ev := nthEvent(t, c, 3); ev.Verdict != VerdictBlackholed || ev.Rule != RuleFET {
		t.Fatalf("event %+v", ev)
	}
}

// tlsServer is a TLS echo server with a certificate for the given names.
func tlsServer(t *testing.T, names ...string) (*testServer, *x509.CertPool) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}}}
	srv := startServer(t, func(s *testServer, conn net.Conn) {
		tc := tls.Server(conn, cfg)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if tc.Handshake() != nil {
			return
		}
		echo(s, tc)
	})
	return srv, pool
}

func TestSNIBlocking(t *testing.T) {
	srv, pool := tlsServer(t, "ok.example", "blocked.example", "www.banned.example")
	// Rules 2 and 3 are on as well: TLS must pass both.
	c := newCensor(t, Config{BlockSNI: []string{"blocked.example", ".banned.example"}, FET: true, TCPFingerprint: true})
	addr := startForward(t, c, srv.addr)

	tlsDial := func(name string) (*tls.Conn, error) {
		raw := dial(t, addr)
		tc := tls.Client(raw, &tls.Config{ServerName: name, RootCAs: pool})
		tc.SetDeadline(time.Now().Add(3 * time.Second))
		return tc, tc.Handshake()
	}
	tc, err := tlsDial("ok.example")
	if err != nil {
		t.Fatalf("ok.example: %v", err)
	}
	roundTrip(t, tc, []byte("through the censor"))
	if ev := nthEvent(t, c, 1); ev.Verdict != VerdictForwarded || !strings.Contains(ev.Detail, "ex") {
		t.Fatalf("event %+v", ev)
	}

	for i, name := range []string{"blocked.example", "www.banned.example"} {
		if _, err := tlsDial(name); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("%s: %v, want a reset", name, err)
		}
		if ev := nthEvent(t, c, 2+i); ev.Verdict != VerdictReset || ev.Rule != RuleSNI || !strings.Contains(ev.Detail, name) {
			t.Fatalf("event %+v", ev)
		}
	}

	// A ClientHello that arrives in pieces: a few bytes first, then the
	// rest as several records.
	ch := splitRecords(captureClientHello(t, "blocked.example"), 50)
	conn := dial(t, addr)
	conn.Write(ch[:3])
	time.Sleep(50 * time.Millisecond)
	conn.Write(ch[3:100])
	time.Sleep(50 * time.Millisecond)
	conn.Write(ch[100:])
	expectReset(t, conn)
	if ev := nthEvent(t, c, 4); ev.Rule != RuleSNI {
		t.Fatalf("event %+v", ev)
	}
	if got := c.Stats().ByRule[RuleSNI]; got != 3 {
		t.Fatalf("%d SNI blocks, want 3", got)
	}
}

// Throttling at 50 KB/s: 100 KB takes about 2 s in each direction (the two
// flows run at once, so the test takes about 2 s).
func TestThrottle(t *testing.T) {
	const size, bps = 100 << 10, 50 << 10
	payload := randBytes(rand.New(rand.NewPCG(12, 13)), size)
	sinkDone := make(chan time.Time, 1)
	sink := startServer(t, func(s *testServer, conn net.Conn) {
		got := make([]byte, size)
		if _, err := io.ReadFull(conn, got); err == nil && bytes.Equal(got, payload) {
			sinkDone <- time.Now()
		}
	})
	source := startServer(t, func(s *testServer, conn net.Conn) {
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			conn.Write(payload)
		}
	})
	c := newCensor(t, Config{ThrottleBytesPerSec: bps})
	up := dial(t, startForward(t, c, sink.addr))
	down := dial(t, startForward(t, c, source.addr))

	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := up.Write(payload)
		errc <- err
	}()
	down.Write([]byte{1})
	down.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(down)
	downTime := time.Since(start)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("download: %d bytes, %v", len(got), err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	var upTime time.Duration
	select {
	case at := <-sinkDone:
		upTime = at.Sub(start)
	case <-time.After(10 * time.Second):
		t.Fatal("upload never completed")
	}
	// 100 KiB at 50 KiB/s minus the initial burst is about 1.9 s.
	for name, d := range map[string]time.Duration{"upload": upTime, "download": downTime} {
		if d < 1500*time.Millisecond || d > 6*time.Second {
			t.Errorf("%s of %d bytes at %d B/s took %v", name, size, bps, d)
		}
	}
}

func TestUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	c := newCensor(t, Config{})
	dialExpectReset(t, startForward(t, c, dead))
	if ev := nthEvent(t, c, 1); ev.Verdict != VerdictUpstreamFailed {
		t.Fatalf("event %+v", ev)
	}
}

// Close ends every flow, black-holed and relayed alike, and leaks nothing
// (goleak in TestMain).
func TestCloseEndsFlows(t *testing.T) {
	srv := startServer(t, echo)
	c := New(Config{FET: true})
	addr := startForward(t, c, srv.addr)
	relayed := dial(t, addr)
	roundTrip(t, relayed, httpGet)
	holed := dial(t, addr)
	holed.Write(randBytes(rand.New(rand.NewPCG(1, 2)), 400))
	silent := dial(t, addr) // still waiting for its first packet
	nthEvent(t, c, 2)
	c.Close()
	for _, conn := range []net.Conn{relayed, holed, silent} {
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("flow still open after Close: %v", err)
		}
	}
	if _, err := c.Forward("", srv.addr); err == nil {
		t.Fatal("Forward after Close succeeded")
	}
}
