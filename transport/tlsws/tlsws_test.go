package tlsws

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	utls "github.com/refraction-networking/utls"
	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/transport/transporttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testName = "magpie.test"

// testCert is a key and certificate, with its PEM forms for nginx.
type testCert struct {
	tls     tls.Certificate
	x509    *x509.Certificate
	certPEM []byte
	keyPEM  []byte
}

// newCert makes a certificate for 127.0.0.1 and testName, self-signed if
// parent is nil, else signed by parent.
func newCert(t testing.TB, parent *testCert, isCA bool) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return newCertFor(t, parent, isCA, key)
}

// newCertFor is newCert with the given key.
func newCertFor(t testing.TB, parent *testCert, isCA bool, key crypto.Signer) *testCert {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: testName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if isCA {
		tmpl.Subject.CommonName = "Magpie Test CA"
		tmpl.IsCA = true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	} else {
		tmpl.DNSNames = []string{testName}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	signer, signerCert := any(key), tmpl
	if parent != nil {
		signer, signerCert = parent.tls.PrivateKey, parent.x509
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &testCert{
		tls:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert},
		x509:    cert,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

var (
	certOnce   sync.Once
	sharedCert *testCert
)

// cert returns a self-signed certificate shared by the tests.
func cert(t testing.TB) *testCert {
	certOnce.Do(func() { sharedCert = newCert(t, nil, false) })
	return sharedCert
}

func testSecret(b byte) (s [32]byte) {
	for i := range s {
		s[i] = b + byte(i)
	}
	return s
}

// acceptAll runs handle on every connection ln accepts, each in its own
// goroutine, until the test ends; then it closes ln and every connection
// (handle's end closes it too) and waits for the goroutines. handle may
// register more connections to close with the function it gets.
func acceptAll(t testing.TB, ln net.Listener, handle func(c net.Conn, track func(net.Conn))) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		open = append(open, c)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c, track)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// serve starts Listen with cfg and echoes every accepted connection until
// the test ends.
func serve(t testing.TB, cfg ServerConfig) net.Listener {
	t.Helper()
	ln, err := Listen("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	acceptAll(t, ln, func(c net.Conn, _ func(net.Conn)) { io.Copy(c, c) })
	return ln
}

// testSeed is the seed of the tests' generated decoy site.
var testSeed = [32]byte{7: 7}

func serverConfig(t testing.TB) ServerConfig {
	return ServerConfig{Certificate: &cert(t).tls, Secret: testSecret(1), Decoy: GeneratedSite(testSeed)}
}

func clientConfig(t testing.TB) ClientConfig {
	return ClientConfig{ServerName: testName, PinSHA256: SPKIPin(cert(t).x509), Secret: testSecret(1)}
}

func dial(t testing.TB, addr string, cfg ClientConfig) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestRoundTripSizes(t *testing.T) {
	ln := serve(t, serverConfig(t))
	c := dial(t, ln.Addr().String(), clientConfig(t))
	for _, n := range []int{1, 2, 125, 126, 127, 1000, 1400, 16383, 16384, 16385, 65535, 65536, 65537, 1 << 20, 3<<20 + 7} {
		transporttest.Echo(t, c, randBytes(n))
	}
	if _, ok := c.RemoteAddr().(*net.TCPAddr); !ok {
		t.Errorf("RemoteAddr = %v (%T), want the TCP address", c.RemoteAddr(), c.RemoteAddr())
	}
	if c.RemoteAddr().String() != ln.Addr().String() {
		t.Errorf("RemoteAddr = %v, want %v", c.RemoteAddr(), ln.Addr())
	}
}

func TestManyConnections(t *testing.T) {
	ln := serve(t, serverConfig(t))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := Dial(ctx, "tcp", ln.Addr().String(), clientConfig(t))
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			msg := randBytes(10000 + i)
			go c.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
				errs <- fmt.Errorf("echo: %v", err)
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
	tr := &Transport{Client: clientConfig(t), Server: serverConfig(t)}
	transporttest.Run(t, tr, tr, "tls")
}

func TestCloseGivesEOF(t *testing.T) {
	ln, err := Listen("127.0.0.1:0", serverConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c := dial(t, ln.Addr().String(), clientConfig(t))
	s := <-accepted
	if _, err := s.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "bye" {
		t.Fatalf("read %q, %v", buf, err)
	}
	// The listener closing leaves accepted connections alone.
	ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	echoOnce := make(chan error, 1)
	go func() {
		b := make([]byte, 2)
		_, err := io.ReadFull(s, b)
		if err == nil {
			_, err = s.Write(b)
		}
		echoOnce <- err
	}()
	c.Write([]byte("hi"))
	if _, err := io.ReadFull(c, buf[:2]); err != nil || string(buf[:2]) != "hi" {
		t.Fatalf("after listener Close: %q, %v", buf[:2], err)
	}
	if err := <-echoOnce; err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	go s.Close()
	if n, err := c.Read(buf); err != io.EOF {
		t.Fatalf("Read after peer Close = %d, %v; want EOF", n, err)
	}
	c.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("close took %v", d)
	}
}

func TestWrongPin(t *testing.T) {
	ln := serve(t, serverConfig(t))
	cfg := clientConfig(t)
	other := newCert(t, nil, false)
	cfg.PinSHA256 = SPKIPin(other.x509)
	_, err := Dial(context.Background(), "tcp", ln.Addr().String(), cfg)
	if err == nil || !strings.Contains(err.Error(), "pinned") {
		t.Fatalf("Dial with the wrong pin: %v", err)
	}
}

func TestCAVerification(t *testing.T) {
	ca := newCert(t, nil, true)
	leaf := newCert(t, ca, false)
	leaf.tls.Certificate = append(leaf.tls.Certificate, ca.x509.Raw)
	ln := serve(t, ServerConfig{Certificate: &leaf.tls, Secret: testSecret(1)})
	pool := x509.NewCertPool()
	pool.AddCert(ca.x509)

	good := ClientConfig{ServerName: testName, RootCAs: pool, Secret: testSecret(1)}
	transporttest.Echo(t, dial(t, ln.Addr().String(), good), []byte("verified by name"))

	// An IP address is never sent as SNI, and nothing goes without one.
	byIP := ClientConfig{RootCAs: pool, Secret: testSecret(1)}
	if _, err := Dial(context.Background(), "tcp", ln.Addr().String(), byIP); !errors.Is(err, ErrNoServerName) {
		t.Errorf("Dial to an IP address without a server name: %v", err)
	}

	wrongName := good
	wrongName.ServerName = "other.test"
	if _, err := Dial(context.Background(), "tcp", ln.Addr().String(), wrongName); err == nil {
		t.Error("Dial accepted a certificate for another name")
	}
	systemRoots := good
	systemRoots.RootCAs = nil
	if _, err := Dial(context.Background(), "tcp", ln.Addr().String(), systemRoots); err == nil {
		t.Error("Dial accepted a certificate from an unknown CA")
	}
}

func TestWrongSecretFailsDial(t *testing.T) {
	ln := serve(t, serverConfig(t))
	cfg := clientConfig(t)
	cfg.Secret = testSecret(2)
	_, err := Dial(context.Background(), "tcp", ln.Addr().String(), cfg)
	if err == nil || !strings.Contains(err.Error(), "did not recognise this client") {
		t.Fatalf("Dial with the wrong secret: %v", err)
	}
}

func TestDialContextCancel(t *testing.T) {
	// A server that accepts TCP and then says nothing.
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := tcp.Accept()
		if err != nil {
			return
		}
		io.Copy(io.Discard, c)
		c.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Dial(ctx, "tcp", tcp.Addr().String(), clientConfig(t)); err == nil {
		t.Fatal("Dial succeeded against a silent server")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Dial took %v to give up", d)
	}
	tcp.Close()
	<-done
}

func TestListenConfig(t *testing.T) {
	c := cert(t)
	for _, cfg := range []ServerConfig{
		{},
		{Certificate: &c.tls, BehindProxy: true},
	} {
		if ln, err := Listen("127.0.0.1:0", cfg); err == nil {
			ln.Close()
			t.Errorf("Listen(%+v) succeeded", cfg)
		}
	}
}

// httpsClient trusts the test certificate.
func httpsClient(t testing.TB) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(cert(t).x509)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: testName}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func decoyFile(t testing.TB, name string) []byte {
	f, ok := generateFiles(testSeed)[name]
	if !ok {
		t.Fatalf("no %s in the generated site", name)
	}
	return f.data
}

func TestBrowserGetsDecoy(t *testing.T) {
	ln := serve(t, serverConfig(t))
	checkDecoySite(t, httpsClient(t), "https://"+ln.Addr().String())
	// Paths that try to leave the site (nginx refuses these itself, so
	// this is checked on the direct server only).
	for _, p := range []string{"/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2fdecoy.go"} {
		got := upgradeRequest(t, ln.Addr().String(), p, "", "Upgrade", "Connection")
		if got.status != 404 {
			t.Errorf("GET %s: %d %q", p, got.status, got.body)
		}
	}
}

// checkDecoySite fetches the default decoy's pages the way a browser would.
func checkDecoySite(t *testing.T, hc *http.Client, base string) {
	t.Helper()
	for _, tc := range []struct {
		method, path string
		status       int
		body         []byte
		ctype        string
	}{
		{"GET", "/", 200, decoyFile(t, "index.html"), "text/html; charset=utf-8"},
		{"GET", "/about.html", 200, decoyFile(t, "about.html"), "text/html; charset=utf-8"},
		{"GET", "/style.css", 200, decoyFile(t, "style.css"), "text/css; charset=utf-8"},
		{"GET", "/ws", 404, nil, "text/html; charset=utf-8"},
		{"GET", "/wp-login.php", 404, nil, "text/html; charset=utf-8"},
		{"POST", "/", 405, nil, "text/html; charset=utf-8"},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, nil)
		req.Header.Set("User-Agent", userAgent)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
		}
		if tc.body != nil && !bytes.Equal(body, tc.body) {
			t.Errorf("%s %s: body differs from the decoy file", tc.method, tc.path)
		}
		if tc.status == 404 && !bytes.Contains(body, []byte(notFoundText)) {
			t.Errorf("%s %s: body %q", tc.method, tc.path, body)
		}
		if got := resp.Header.Get("Content-Type"); got != tc.ctype {
			t.Errorf("%s %s: Content-Type %q, want %q", tc.method, tc.path, got, tc.ctype)
		}
		if tc.status == 200 && resp.Header.Get("Last-Modified") == "" {
			t.Errorf("%s %s: no Last-Modified", tc.method, tc.path)
		}
	}
}

// rawResponse is what a request got back, Date aside.
type rawResponse struct {
	status int
	proto  string
	header http.Header
	body   []byte
}

// upgradeRequest sends a WebSocket upgrade for path over a fresh TLS
// connection to addr, with cookie (if not empty) and any extra headers, and
// returns the response.
func upgradeRequest(t *testing.T, addr, path, cookie string, drop ...string) rawResponse {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(cert(t).x509)
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: testName, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return upgradeOver(t, c, path, cookie, drop...)
}

// magpieRequest is upgradeRequest over a connection whose ClientHello is
// Magpie's, authenticated with secret: the server's second check, the
// cookie, decides.
func magpieRequest(t *testing.T, addr string, secret [32]byte, path, cookie string, drop ...string) rawResponse {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	tc := &utls.Config{ServerName: testName, InsecureSkipVerify: true}
	uc, err := chromeConn(raw, tc, &secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := uc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if p := uc.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q on an authenticated connection, want h2 as the site picks", p)
	}
	return upgradeOver(t, uc, path, cookie, drop...)
}

func upgradeOver(t *testing.T, c net.Conn, path, cookie string, drop ...string) rawResponse {
	t.Helper()
	h := http.Header{
		"Host":                  {testName},
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
		"User-Agent":            {userAgent},
		"Origin":                {"https://" + testName},
	}
	if cookie != "" {
		h.Set("Cookie", authCookie+"="+cookie)
	}
	for _, d := range drop {
		h.Del(d)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\n", path)
	h.Write(&b)
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, err = io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
	}
	resp.Body.Close()
	resp.Header.Del("Date")
	return rawResponse{resp.StatusCode, resp.Proto, resp.Header, body}
}

func sameResponse(a, b rawResponse) bool {
	return a.status == b.status && a.proto == b.proto && bytes.Equal(a.body, b.body) &&
		fmt.Sprint(a.header) == fmt.Sprint(b.header)
}

func TestInvalidAuthenticatorGetsDecoy(t *testing.T) {
	cfg := serverConfig(t)
	ln := serve(t, cfg)
	addr := ln.Addr().String()
	baseline := upgradeRequest(t, addr, "/ws", "")
	if baseline.status != 404 || !bytes.Contains(baseline.body, []byte(notFoundText)) {
		t.Fatalf("unauthenticated upgrade got %d %q", baseline.status, baseline.body)
	}
	// Same as a plain GET /ws a browser would make.
	resp, err := httpsClient(t).Get("https://" + addr + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != baseline.status || !bytes.Equal(plain, baseline.body) {
		t.Fatalf("GET /ws got %d %q, upgrade got %d %q", resp.StatusCode, plain, baseline.status, baseline.body)
	}

	secret := cfg.Secret
	other := testSecret(9)
	now := time.Now()
	valid := makeAuth(&secret, "/ws", now)
	// A valid cookie is not enough: the ClientHello must be Magpie's too.
	if got := upgradeRequest(t, addr, "/ws", makeAuth(&secret, "/ws", now)); !sameResponse(got, baseline) {
		t.Fatalf("a valid cookie over a foreign ClientHello got %d, want the decoy's", got.status)
	}
	if got := magpieRequest(t, addr, secret, "/ws", valid); got.status != http.StatusSwitchingProtocols {
		t.Fatalf("a valid authenticator got %d, want 101", got.status)
	}
	garbage := strings.Repeat("A", len(valid))
	flipped := []byte(makeAuth(&secret, "/ws", now))
	flipped[len(flipped)-5] ^= 1
	for name, tc := range map[string]struct {
		cookie string
		drop   []string
	}{
		"wrong secret":  {cookie: makeAuth(&other, "/ws", now)},
		"expired":       {cookie: makeAuth(&secret, "/ws", now.Add(-DefaultAuthWindow-time.Minute))},
		"from future":   {cookie: makeAuth(&secret, "/ws", now.Add(DefaultAuthWindow+time.Minute))},
		"replayed":      {cookie: valid},
		"other path":    {cookie: makeAuth(&secret, "/other", now)},
		"garbage":       {cookie: garbage},
		"truncated":     {cookie: valid[:len(valid)-4]},
		"tampered MAC":  {cookie: string(flipped)},
		"empty":         {cookie: "x"},
		"no upgrade":    {cookie: makeAuth(&secret, "/ws", now), drop: []string{"Upgrade"}},
		"no key":        {cookie: makeAuth(&secret, "/ws", now), drop: []string{"Sec-Websocket-Key"}},
		"no version":    {cookie: makeAuth(&secret, "/ws", now), drop: []string{"Sec-Websocket-Version"}},
		"no connection": {cookie: makeAuth(&secret, "/ws", now), drop: []string{"Connection"}},
	} {
		if got := magpieRequest(t, addr, secret, "/ws", tc.cookie, tc.drop...); !sameResponse(got, baseline) {
			t.Errorf("%s: got %d %v %q, want the decoy's %d %v %q", name,
				got.status, got.header, got.body, baseline.status, baseline.header, baseline.body)
		}
	}
	// Requests that were refused above did not spend their nonces, but a
	// valid one for a wrong path never works on /ws.
	if got := magpieRequest(t, addr, secret, "/other", makeAuth(&secret, "/other", now)); got.status != 404 {
		t.Errorf("authenticated upgrade to a path that is not the WebSocket path: %d", got.status)
	}
}

func TestCustomDecoyAndPath(t *testing.T) {
	decoy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Site", "custom")
		fmt.Fprintf(w, "custom site at %s", r.URL.Path)
	})
	cfg := serverConfig(t)
	cfg.Decoy = decoy
	cfg.Path = "/api/v2/stream"
	ln := serve(t, cfg)
	got := upgradeRequest(t, ln.Addr().String(), "/api/v2/stream", "")
	if got.status != 200 || string(got.body) != "custom site at /api/v2/stream" || got.header.Get("X-Site") != "custom" {
		t.Fatalf("custom decoy: %d %v %q", got.status, got.header, got.body)
	}
	cc := clientConfig(t)
	if _, err := Dial(context.Background(), "tcp", ln.Addr().String(), cc); err == nil {
		t.Fatal("Dial to the default path succeeded on a server with another path")
	}
	cc.Path = cfg.Path
	transporttest.Echo(t, dial(t, ln.Addr().String(), cc), []byte("custom path"))
}

func TestDecoyDir(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/index.html", []byte("<p>my site</p>"), 0o644)
	os.Mkdir(dir+"/sub", 0o755)
	cfg := serverConfig(t)
	cfg.Decoy = DecoyDir(dir)
	ln := serve(t, cfg)
	hc := httpsClient(t)
	for path, want := range map[string]int{"/": 200, "/index.html": 200, "/sub": 404, "/sub/": 404, "/ws": 404} {
		resp, err := hc.Get("https://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d %q, want %d", path, resp.StatusCode, body, want)
		}
		if want == 200 && string(body) != "<p>my site</p>" {
			t.Errorf("%s: %q", path, body)
		}
	}
}

// A visitor offering h2 gets h2, as from most websites, and so does Magpie's
// client, recognised by its ClientHello, which then speaks HTTP/1.1 inside
// (magpieRequest checks).
func TestDecoyNegotiatesH2(t *testing.T) {
	ln := serve(t, serverConfig(t))
	pool := x509.NewCertPool()
	pool.AddCert(cert(t).x509)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: testName}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.TLS.Version != tls.VersionTLS13 {
		t.Errorf("%s over TLS %x, want HTTP/2 over TLS 1.3", resp.Proto, resp.TLS.Version)
	}
	if !bytes.Equal(body, decoyFile(t, "index.html")) {
		t.Errorf("GET / over h2: %q", body)
	}
}

func TestVerifier(t *testing.T) {
	secret := testSecret(3)
	v := newVerifier(secret, 0)
	now := time.Unix(1_800_000_000, 0)
	v.now = func() time.Time { return now }
	a := makeAuth(&secret, "/ws", now.Add(-DefaultAuthWindow))
	if !v.check(a, "/ws") {
		t.Fatal("authenticator at the edge of the window refused")
	}
	if v.check(a, "/ws") {
		t.Fatal("replay accepted")
	}
	// Still refused after the entry could have been swept: the timestamp
	// is then out of the window.
	now = now.Add(time.Second)
	if v.check(a, "/ws") {
		t.Fatal("replay accepted after the window")
	}
	now = now.Add(DefaultAuthWindow)
	v.check(makeAuth(&secret, "/ws", now), "/ws") // triggers a sweep
	if len(v.seen) != 1 {
		t.Fatalf("%d nonces remembered after a sweep, want 1", len(v.seen))
	}
	if v.check(makeAuth(&secret, "/ws", now.Add(DefaultAuthWindow+time.Second)), "/ws") {
		t.Fatal("authenticator from the future accepted")
	}
}
