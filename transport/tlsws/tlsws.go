// Package tlsws is Magpie's TLS-shaped transport ("tls" in invites and
// endpoint lists): to an observer on the network it looks like a browser
// visiting an ordinary HTTPS website, and to anyone who connects without the
// server's secret it is that website.
//
// # Wire shape
//
// The client opens TCP, then TLS with a current Chrome ClientHello produced
// by uTLS (github.com/refraction-networking/utls, HelloChrome_Auto): Chrome's
// cipher suites, extensions and their order, GREASE, the post-quantum key
// share, and ALPN "h2","http/1.1" exactly as Chrome offers it. Go's own
// crypto/tls ClientHello is distinctive and would be fingerprinted (JA3/JA4)
// at once, so it is never used by the client.
//
// The certificate is really verified, in one of two ways:
//   - normal: system roots (or ClientConfig.RootCAs) and the SNI name, for a
//     server with a real domain and a CA-issued certificate;
//   - pinned: ClientConfig.PinSHA256 is the SHA-256 of the leaf
//     certificate's SubjectPublicKeyInfo (see SPKIPin), carried in the
//     invite. Chain and name are not checked; the pin is. This serves tests
//     and set-ups without a domain (self-signed certificate on a bare IP).
//
// Inside TLS the client sends an HTTP/1.1 WebSocket upgrade (RFC 6455) to
// ServerConfig.Path (default "/ws"), and Magpie's byte stream then travels in
// binary WebSocket messages (one message per Write). The link's Noise
// session runs inside unchanged, so TLS is camouflage, not the security
// boundary.
//
// The server offers only "http/1.1" in ALPN, so it negotiates HTTP/1.1 with a
// browser's ClientHello. Many real sites pick h2 instead; a site that offers
// h2 to nobody is a little less common, but plenty of servers (nginx without
// "http2 on", many small hosts) do exactly this, so it is an ordinary shape,
// not a unique one. Behind a CDN or reverse proxy the proxy's own TLS and
// ALPN choices are what the censor sees. If a proxy nevertheless selects h2
// with the client, Dial fails with a clear error: WebSocket over HTTP/2
// (RFC 8441, extended CONNECT) is future work, and would let the server
// offer h2 like most large sites.
//
// # Active probing
//
// Every upgrade request must carry an authenticator: a cookie whose value is
// base64url(timestamp ‖ nonce ‖ HMAC-SHA256(secret, label ‖ timestamp ‖ nonce
// ‖ path)), with an 8-byte big-endian Unix time, a 16-byte random nonce and
// the 32-byte per-server secret from the invite. The server accepts it only
// within ServerConfig.AuthWindow (default ±5 minutes) of its own clock and
// only once: nonces are remembered for the whole window. Everything else,
// whether browsers, scanners, a censor's probes, replays, expired or forged
// authenticators, or requests that are not well-formed WebSocket upgrades,
// is handed to the decoy website (ServerConfig.Decoy, by default a small
// static site embedded in this package), which answers as it would answer
// any visitor. In particular an unauthenticated request to the WebSocket
// path gets the decoy's answer for that path (the default site's 404), byte
// for byte the same as a request that never tried to authenticate.
//
// # Server modes
//
//   - Direct TLS with ServerConfig.Certificate (self-signed for a bare IP,
//     pinned by clients; or any certificate).
//   - Direct TLS with ServerConfig.Autocert, an ACME (Let's Encrypt) manager
//     for the operator's domain. The listener answers TLS-ALPN-01 challenges
//     itself when it listens on port 443; HTTP-01 needs
//     Autocert.HTTPHandler(nil) served on port 80 by the operator. This mode
//     needs the public internet and a domain, so it is wired but not covered
//     by the tests.
//   - BehindProxy: plain HTTP on the given address (normally loopback) for an
//     HTTPS reverse proxy or CDN that terminates TLS and forwards WebSocket
//     upgrades (see testdata/nginx.conf.tmpl for a tested nginx
//     configuration). This gives the strongest disguise: the proxy's TLS
//     stack and HTTP behaviour are those of a real, common web server.
//
// In the direct modes the HTTP behaviour the decoy shows is Go net/http's
// (header casing, error pages for malformed requests, no Server header). A
// careful prober can tell "a Go web server" from nginx; it still cannot tell
// a Magpie server from any other site written in Go. Operators who want
// more put nginx in front (BehindProxy).
package tlsws

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"net"

	"github.com/magpie-im/magpie/transport"
)

// Name is this transport's name in invites and endpoint lists.
const Name = "tls"

// DefaultPath is the WebSocket path when ServerConfig.Path or
// ClientConfig.Path is empty.
const DefaultPath = "/ws"

// SPKIPin returns the SHA-256 of cert's SubjectPublicKeyInfo, the value a
// ClientConfig.PinSHA256 (and an invite) carries. It stays the same when a
// certificate is re-issued for the same key.
func SPKIPin(cert *x509.Certificate) []byte {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return sum[:]
}

// Transport is the TLS-shaped transport as a transport.Transport. Client is
// used by Dialer, Server by Listen.
type Transport struct {
	Client ClientConfig
	Server ServerConfig
}

var _ transport.Transport = (*Transport)(nil)

// Name returns "tls".
func (t *Transport) Name() string { return Name }

// Dialer returns a client that dials with t.Client.
func (t *Transport) Dialer() transport.Dialer { return dialer{cfg: t.Client} }

// Listen accepts connections on address with t.Server.
func (t *Transport) Listen(address string) (net.Listener, error) {
	return Listen(address, t.Server)
}

type dialer struct{ cfg ClientConfig }

func (d dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return Dial(ctx, network, address, d.cfg)
}
