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
	// Decoy answers every request that is not an authenticated WebSocket
	// upgrade; DefaultDecoy() if nil.
	Decoy http.Handler
	// AuthWindow is the accepted clock difference; DefaultAuthWindow if 0.
	AuthWindow time.Duration
}

// Limits on what a visitor can make the server hold.
const (
	readHeaderTimeout = 20 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 32 << 10
)

// Listen serves the decoy website on address and returns a listener whose
// Accept yields the byte streams of authenticated WebSocket clients.
// Closing the listener stops the web server; connections already accepted
// stay open.
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
	var tlsCfg *tls.Config
	switch {
	case cfg.Certificate != nil:
		tlsCfg = &tls.Config{
			Certificates: []tls.Certificate{*cfg.Certificate},
			NextProtos:   []string{"http/1.1"},
			MinVersion:   tls.VersionTLS12,
		}
	case cfg.Autocert != nil:
		tlsCfg = cfg.Autocert.TLSConfig()
		// No h2: see the package comment. Keep the ACME challenge protocol.
		tlsCfg.NextProtos = []string{"http/1.1", acme.ALPNProto}
		tlsCfg.MinVersion = tls.VersionTLS12
	}
	path := cfg.Path
	if path == "" {
		path = DefaultPath
	}
	decoy := cfg.Decoy
	if decoy == nil {
		decoy = DefaultDecoy()
	}

	tcp, err := net.Listen("tcp", address)
	if err != nil {
		return nil, err
	}
	l := &listener{
		tcp:    tcp,
		path:   path,
		decoy:  decoy,
		verify: newVerifier(cfg.Secret, cfg.AuthWindow),
		conns:  make(chan net.Conn),
		closed: make(chan struct{}),
		served: make(chan struct{}),
	}
	l.srv = &http.Server{
		Handler:           l,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// Scanners cause endless TLS and protocol errors; they are not news.
		ErrorLog: log.New(io.Discard, "", 0),
		// h2 is never negotiated (NextProtos above); make that explicit.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	inner := tcp
	if tlsCfg != nil {
		inner = tls.NewListener(tcp, tlsCfg)
	}
	go func() {
		defer close(l.served)
		l.srv.Serve(inner)
	}()
	return l, nil
}

type listener struct {
	tcp    net.Listener
	srv    *http.Server
	path   string
	decoy  http.Handler
	verify *verifier

	conns     chan net.Conn
	closed    chan struct{}
	served    chan struct{}
	closeOnce sync.Once

	mu       sync.Mutex
	shutdown bool
	handlers sync.WaitGroup
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
		l.mu.Unlock()
		close(l.closed)
		err = l.srv.Close()
		<-l.served
		l.handlers.Wait()
	})
	return err
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
	c := newWSConn(ws, hw.raw, hw.raw.LocalAddr(), hw.raw.RemoteAddr())
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
