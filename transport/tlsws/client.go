package tlsws

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/coder/websocket"
	utls "github.com/refraction-networking/utls"

	"github.com/magpie-im/magpie/transport"
)

// HandshakeError is a failed TLS handshake (a bad certificate or pin, an
// alert, a reset mid-handshake): what network-measurement tools call
// tls_handshake_failed.
type HandshakeError struct{ Err error }

func (e *HandshakeError) Error() string { return "tlsws: TLS handshake: " + e.Err.Error() }
func (e *HandshakeError) Unwrap() error { return e.Err }

// ClientConfig configures Dial.
type ClientConfig struct {
	// ServerName is the SNI name and, without a pin, the name the
	// certificate is verified for. If empty, the host part of the dialled
	// address, which must then be a domain name: a ClientHello without SNI
	// (JA4 "t13i…") is not what a browser visiting a website sends, so for an
	// endpoint given as an IP address the operator sets a cover name
	// (endpoints.Endpoint.SNI, serve --tls-sni) and Dial refuses to go
	// without one.
	ServerName string
	// PinSHA256, if set, is the SHA-256 of the server certificate's
	// SubjectPublicKeyInfo (SPKIPin); the certificate must match it and its
	// chain and name are not checked. If nil, the certificate is verified
	// against RootCAs (the system roots if nil) and ServerName.
	PinSHA256 []byte
	// RootCAs replaces the system roots when PinSHA256 is nil.
	RootCAs *x509.CertPool
	// Secret is the server's authenticator key, from the invite.
	Secret [32]byte
	// Path is the WebSocket path; DefaultPath if empty.
	Path string
	// Host is the HTTP Host header, for domain fronting; ServerName (plus
	// the port if not 443) if empty.
	Host string
}

// userAgent matches the Chrome whose ClientHello the client sends
// (chromeHello; a test checks the version).
const userAgent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"

// ErrNoServerName is returned by Dial for an IP address without
// ClientConfig.ServerName.
var ErrNoServerName = errors.New("tlsws: no server name to send for an IP address; the operator sets a cover name (serve --tls-sni NAME)")

// Dial connects to a tlsws server at address ("host:port") and returns
// Magpie's byte stream over the WebSocket. ctx bounds the connection set-up
// only.
func Dial(ctx context.Context, network, address string, cfg ClientConfig) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("tlsws: %w", err)
	}
	sni := cfg.ServerName
	if sni == "" {
		sni = host
	}
	if net.ParseIP(sni) != nil {
		return nil, ErrNoServerName
	}
	hostHeader := cfg.Host
	if hostHeader == "" {
		hostHeader = sni
		if port != "443" {
			hostHeader = net.JoinHostPort(sni, port)
		}
	}
	path := cfg.Path
	if path == "" {
		path = DefaultPath
	}

	d := net.Dialer{KeepAliveConfig: transport.ClientKeepAlive}
	raw, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			raw.Close()
		}
	}()
	// The set-up below honours ctx through the connection's deadline.
	if dl, has := ctx.Deadline(); has {
		raw.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	tc := &utls.Config{ServerName: sni, RootCAs: cfg.RootCAs}
	if cfg.PinSHA256 != nil {
		pin := cfg.PinSHA256
		tc.InsecureSkipVerify = true // replaced by the pin check
		tc.VerifyConnection = func(cs utls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("tlsws: no server certificate")
			}
			if subtle.ConstantTimeCompare(SPKIPin(cs.PeerCertificates[0]), pin) != 1 {
				return errors.New("tlsws: server certificate does not match the pinned key")
			}
			return nil
		}
	}
	uc, err := chromeConn(raw, tc, &cfg.Secret, time.Now())
	if err != nil {
		return nil, err
	}
	if err := uc.HandshakeContext(ctx); err != nil {
		return nil, &HandshakeError{Err: err}
	}
	// A Magpie server that recognised the ClientHello picks the ALPN its
	// fallback site picks for Chrome (usually h2, which is what observers
	// would expect), and then speaks HTTP/1.1 all the same: the choice is
	// encrypted, and only the two ends know. A server that did not
	// recognise it and picked h2 is the fallback, which then refuses the
	// HTTP/1.1 request below.
	alpn := uc.ConnectionState().NegotiatedProtocol

	rt := &upgradeRoundTripper{conn: uc}
	h := http.Header{}
	h.Set("User-Agent", userAgent)
	h.Set("Origin", "https://"+hostHeader)
	h.Set("Cache-Control", "no-cache")
	h.Set("Pragma", "no-cache")
	h.Set("Accept-Language", "en-US,en;q=0.9")
	// The request is the first record after the handshake: a second cookie
	// of a length drawn for this connection pads it (see padding.go).
	h.Set("Cookie", authCookie+"="+makeAuth(&cfg.Secret, path, time.Now())+"; "+padCookie())
	ws, resp, err := websocket.Dial(ctx, "https://"+hostHeader+path, &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: rt},
		HTTPHeader:      h,
		Host:            hostHeader,
		CompressionMode: websocket.CompressionDisabled,
	})
	if resp != nil && resp.Body != nil && ws == nil {
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			// The decoy answered: the secret or path is wrong, the clock is
			// off by more than the window, or something in between is not
			// the Magpie server.
			return nil, fmt.Errorf("tlsws: server did not accept the connection (HTTP %d)", resp.StatusCode)
		}
		if alpn == "h2" {
			return nil, fmt.Errorf("tlsws: the server did not recognise this client (wrong secret, a clock more than 5 minutes off, or not this Magpie server), or a proxy in front of it has http2 on (WebSocket over HTTP/2 is not implemented): %w", err)
		}
		return nil, fmt.Errorf("tlsws: WebSocket upgrade: %w", err)
	}
	stop()
	raw.SetDeadline(time.Time{})
	if ctx.Err() != nil {
		ws.CloseNow()
		return nil, ctx.Err()
	}
	ok = true
	return newPadConn(newWSConn(ws, uc, raw.LocalAddr(), raw.RemoteAddr()), &clientSizes), nil
}

// chromeConn returns a uTLS client on raw whose ClientHello is the captured
// Chrome's, with the authenticator in its session id (auth.go).
func chromeConn(raw net.Conn, tc *utls.Config, secret *[32]byte, now time.Time) (*utls.UConn, error) {
	spec, err := chromeSpec()
	if err != nil {
		return nil, err
	}
	uc := utls.UClient(raw, tc, utls.HelloCustom)
	if err := uc.ApplyPreset(spec); err != nil {
		return nil, fmt.Errorf("tlsws: ClientHello: %w", err)
	}
	if err := uc.BuildHandshakeState(); err != nil {
		return nil, fmt.Errorf("tlsws: ClientHello: %w", err)
	}
	hello := uc.HandshakeState.Hello
	if !sealHello(secret, hello.Raw, now) {
		return nil, errors.New("tlsws: ClientHello has no 32-byte session id")
	}
	hello.SessionId = hello.Raw[helloSIDOffset : helloSIDOffset+helloSIDLen]
	return uc, nil
}

// upgradeRoundTripper sends one HTTP/1.1 request over an established TLS
// connection and hands the connection over in the body of a 101 response,
// as net/http's Transport does for protocol switches.
type upgradeRoundTripper struct {
	conn net.Conn
	used bool
}

// maxResponseHeader bounds what a server (or anything in between) can make
// the client read before the upgrade.
const maxResponseHeader = 64 << 10

func (t *upgradeRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.used {
		return nil, errors.New("tlsws: redirect or retry refused")
	}
	t.used = true
	var buf bytes.Buffer
	if err := req.Write(&buf); err != nil {
		return nil, err
	}
	if _, err := t.conn.Write(buf.Bytes()); err != nil {
		return nil, err
	}
	lr := &io.LimitedReader{R: t.conn, N: maxResponseHeader}
	br := bufio.NewReader(lr)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body.Close()
		resp.Body = http.NoBody
		return resp, nil
	}
	// Whatever the server sent after the 101 header is already in br.
	lr.N = 1<<63 - 1
	resp.Body = &upgradedBody{Reader: br, conn: t.conn}
	return resp, nil
}

type upgradedBody struct {
	io.Reader
	conn net.Conn
}

func (b *upgradedBody) Write(p []byte) (int, error) { return b.conn.Write(p) }
func (b *upgradedBody) Close() error                { return b.conn.Close() }
