package tlsws

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ServerConfig configures Listen. Exactly one of Certificate, Autocert and
// BehindProxy selects the mode.
type ServerConfig struct {
	// Certificate is served for TLS (direct mode).
	Certificate *tls.Certificate
	// Autocert obtains certificates by ACME for the operator's domain
	// (direct mode). TLS-ALPN-01 challenges are answered on this listener;
	// for HTTP-01 serve Autocert.HTTPHandler(nil) on port 80.
	Autocert *autocert.Manager
	// BehindProxy serves plain HTTP for a reverse proxy or CDN that
	// terminates TLS and forwards WebSocket upgrades. Listen on loopback or a
	// private network only.
	BehindProxy bool
	// Secret is the per-server authenticator key, carried in invites.
	Secret [32]byte
	// Path is the WebSocket path; DefaultPath if empty.
	Path string
	// Fallback (direct modes) is the host:port of a real HTTPS web server,
	// serving the same certificate, that gets every connection whose
	// ClientHello does not authenticate, byte for byte from its first byte
	// (see fallback.go). Then every reaction a prober can see is that
	// server's. If empty, such connections get Decoy over Go's TLS and HTTP.
	// Listen makes one TLS connection to it first, to learn the key
	// exchange it picks (genuine clients get the same).
	Fallback string
	// Decoy answers every request that is not an authenticated WebSocket
	// upgrade (without a Fallback, and behind a proxy); if nil, the site
	// generated from SiteSeed (GeneratedSite).
	Decoy http.Handler
	// SiteSeed is this deployment's seed (kept by the operator, as serve
	// keeps it in its data directory): it makes the generated decoy site
	// and the decoy web server's timeouts this deployment's own. If nil, a
	// random one, new on every Listen.
	SiteSeed *[32]byte
	// AuthWindow is the accepted clock difference; DefaultAuthWindow if 0.
	AuthWindow time.Duration
	// FallbackDialTimeout bounds the connection to Fallback (default 5 s).
	FallbackDialTimeout time.Duration
}

// Limits on what a visitor can make the server hold.
const (
	readHeaderTimeout = 20 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 32 << 10
)

// Listen serves on address and returns a listener whose Accept yields the
// byte streams of authenticated clients. Closing the listener stops the
// web server and every connection being relayed to the fallback;
// connections already accepted stay open.
//
// In the direct modes, a connection is authenticated by its ClientHello
// (auth.go) and then by the upgrade request's cookie; in BehindProxy mode,
// where the proxy terminates TLS, by the cookie alone.
func Listen(address string, cfg ServerConfig) (net.Listener, error) {
	modes := 0
	for _, on := range []bool{cfg.Certificate != nil, cfg.Autocert != nil, cfg.BehindProxy} {
		if on {
			modes++
		}
	}
	if modes != 1 {
		return nil, errors.New("tlsws: set exactly one of Certificate, Autocert and BehindProxy")
	}
	if cfg.BehindProxy && cfg.Fallback != "" {
		return nil, errors.New("tlsws: Fallback is for the direct modes; behind a proxy, the proxy serves the site")
	}
	path := cfg.Path
	if path == "" {
		path = DefaultPath
	}
	seed := cfg.SiteSeed
	if seed == nil {
		r := randomSeed()
		seed = &r
	}
	decoy := cfg.Decoy
	if decoy == nil {
		decoy = GeneratedSite(*seed)
	}

	tcp, err := net.Listen("tcp", address)
	if err != nil {
		return nil, err
	}
	l := &listener{
		tcp:      tcp,
		path:     path,
		decoy:    decoy,
		verify:   newVerifier(cfg.Secret, cfg.AuthWindow),
		hello:    newHelloVerifier(cfg.Secret, cfg.AuthWindow),
		fallback: cfg.Fallback,
		dialFB:   cfg.FallbackDialTimeout,
		timeouts: siteTimeouts(*seed),
		conns:    make(chan net.Conn),
		closed:   make(chan struct{}),
		relays:   map[net.Conn]bool{},
	}
	if l.dialFB <= 0 {
		l.dialFB = 5 * time.Second
	}
	l.srv = &http.Server{
		Handler:           l,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// Scanners cause endless TLS and protocol errors; they are not news.
		ErrorLog: log.New(io.Discard, "", 0),
		// Authenticated clients speak HTTP/1.1 whatever ALPN protocol was
		// picked (toMagpie).
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	if cfg.BehindProxy {
		l.serve(l.srv, tcp)
		return l, nil
	}

	// Authenticated connections: Magpie's TLS, no session tickets (their
	// records would come first after the handshake, with fixed sizes; see
	// padding.go). It picks the ALPN protocol the site would pick, h2 for
	// Chrome, so that the encrypted extensions have the site's size; HTTP/1.1
	// is spoken inside whatever was picked (the client knows it was
	// recognised, and nobody else sees inside).
	l.magpieTLS = &tls.Config{NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12, SessionTicketsDisabled: true}
	// Everything else without a fallback: the decoy over TLS with h2
	// offered, as most sites do.
	l.decoyTLS = &tls.Config{NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}
	if cfg.Certificate != nil {
		l.magpieTLS.Certificates = []tls.Certificate{*cfg.Certificate}
		l.decoyTLS.Certificates = l.magpieTLS.Certificates
	} else {
		l.magpieTLS.GetCertificate = cfg.Autocert.GetCertificate
		l.decoyTLS = cfg.Autocert.TLSConfig()
		l.decoyTLS.NextProtos = []string{"h2", "http/1.1", acme.ALPNProto}
		l.decoyTLS.MinVersion = tls.VersionTLS12
		l.acme = true
	}
	if cfg.Fallback != "" {
		// The key exchange is visible in the ServerHello (and a post-quantum
		// key share makes it a kilobyte longer), the ALPN choice in the size
		// of the encrypted extensions: pick what the fallback picks for a
		// browser, so that genuine connections look like its own.
		if g, alpn, ok := fallbackChoices(cfg.Fallback, l.dialFB); ok {
			l.magpieTLS.CurvePreferences = []tls.CurveID{g}
			l.decoyTLS.CurvePreferences = []tls.CurveID{g}
			l.magpieTLS.NextProtos = nil
			if alpn != "" {
				l.magpieTLS.NextProtos = []string{alpn}
			}
		}
	}
	l.magpieLn = newChanListener(tcp.Addr())
	l.decoyLn = newChanListener(tcp.Addr())
	l.decoySrv = &http.Server{
		Handler:           decoy,
		ReadHeaderTimeout: l.timeouts.header,
		IdleTimeout:       l.timeouts.idle,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	l.decoySrv.Protocols = new(http.Protocols)
	l.decoySrv.Protocols.SetHTTP1(true)
	l.decoySrv.Protocols.SetHTTP2(true)
	l.serve(l.srv, l.magpieLn)
	l.serve(l.decoySrv, l.decoyLn)
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

type listener struct {
	tcp      net.Listener
	srv      *http.Server // authenticated clients (and, behind a proxy, everyone)
	decoySrv *http.Server // direct mode without a fallback: everyone else
	path     string
	decoy    http.Handler
	verify   *verifier
	hello    *helloVerifier
	fallback string
	dialFB   time.Duration
	acme     bool
	timeouts timeouts // the decoy web server's

	magpieTLS, decoyTLS *tls.Config
	magpieLn, decoyLn   *chanListener

	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup // accept loop, routing and relays, servers

	mu       sync.Mutex
	shutdown bool
	handlers sync.WaitGroup
	relays   map[net.Conn]bool // connections being routed or relayed
}

func (l *listener) serve(srv *http.Server, ln net.Listener) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		srv.Serve(ln)
	}()
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *listener) Addr() net.Addr { return l.tcp.Addr() }

func (l *listener) Close() error {
	err := net.ErrClosed
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.shutdown = true
		for c := range l.relays {
			c.Close()
		}
		l.mu.Unlock()
		close(l.closed)
		err = l.tcp.Close()
		l.srv.Close()
		if l.decoySrv != nil {
			l.decoySrv.Close()
		}
		l.wg.Wait()
		l.handlers.Wait()
	})
	return err
}

// track registers c to be closed by Close; false if the listener is
// already closed (c is then closed).
func (l *listener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shutdown {
		c.Close()
		return false
	}
	l.relays[c] = true
	return true
}

func (l *listener) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.relays, c)
	l.mu.Unlock()
}

func (l *listener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.tcp.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return
		}
		if !l.track(c) {
			continue
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.route(c)
		}()
	}
}

func (l *listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	if l.shutdown {
		l.mu.Unlock()
		l.decoy.ServeHTTP(w, r)
		return
	}
	l.handlers.Add(1)
	l.mu.Unlock()
	defer l.handlers.Done()

	if !l.authorized(r) {
		l.decoy.ServeHTTP(w, r)
		return
	}
	// The 101 response is the server's first record after the handshake:
	// padded to a size drawn for this connection (padding.go).
	w.Header().Set("Set-Cookie", padSetCookie())
	hw := &hijackWriter{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, &websocket.AcceptOptions{
		// Origin checks protect browsers' cookies; this endpoint is
		// authenticated by the HMAC alone.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		// Only a holder of the secret can get here, with a malformed
		// upgrade that authorized() did not catch.
		if hw.raw != nil {
			hw.raw.Close()
		}
		return
	}
	c := newPadConn(newWSConn(ws, hw.raw, hw.raw.LocalAddr(), hw.raw.RemoteAddr()), &serverSizes)
	select {
	case l.conns <- c:
	case <-l.closed:
		ws.CloseNow()
	}
}

// authorized reports whether r is a well-formed WebSocket upgrade to the
// WebSocket path carrying a fresh, valid authenticator. Everything checked
// here is checked before the nonce is spent, and anything else goes to the
// decoy.
func (l *listener) authorized(r *http.Request) bool {
	if r.Method != http.MethodGet || r.URL.Path != l.path || !r.ProtoAtLeast(1, 1) {
		return false
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") ||
		!headerHasToken(r.Header, "Upgrade", "websocket") ||
		r.Header.Get("Sec-WebSocket-Version") != "13" ||
		r.Header.Get("Sec-WebSocket-Key") == "" {
		return false
	}
	ck, err := r.Cookie(authCookie)
	if err != nil {
		return false
	}
	return l.verify.check(ck.Value, r.URL.Path)
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// hijackWriter records the hijacked connection and clears the deadlines the
// HTTP server may have left on it.
type hijackWriter struct {
	http.ResponseWriter
	raw net.Conn
}

func (h *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	c.SetDeadline(time.Time{})
	h.raw = c
	return c, brw, nil
}

func (h *hijackWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// chanListener hands connections routed by the accept loop to an
// http.Server.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (c *chanListener) Accept() (net.Conn, error) {
	select {
	case conn := <-c.ch:
		return conn, nil
	case <-c.done:
		return nil, net.ErrClosed
	}
}

// give hands conn to the server; false (conn closed) if it stopped.
func (c *chanListener) give(conn net.Conn) bool {
	select {
	case c.ch <- conn:
		return true
	case <-c.done:
		conn.Close()
		return false
	}
}

func (c *chanListener) Close() error {
	c.closed.Do(func() { close(c.done) })
	return nil
}

func (c *chanListener) Addr() net.Addr { return c.addr }
