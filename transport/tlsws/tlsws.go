// Package tlsws is Magpie's TLS-shaped transport ("tls" in invites and
// endpoint lists): to an observer on the network it looks like a browser
// visiting an ordinary HTTPS website, and to anyone who connects without the
// server's secret it is that website, ideally a real one (Fallback).
//
// # Wire shape
//
// The client opens TCP, then TLS with today's Chrome ClientHello: a uTLS
// ClientHelloSpec parsed from a ClientHello captured from Chromium
// (testdata/chrome-156.clienthello, hello.go), with Chrome's cipher
// suites, extensions (permuted per connection, as Chrome does), GREASE,
// the post-quantum key share, ML-DSA signature algorithms and ALPN
// "h2","http/1.1"; its JA4 is the captured browser's. SNI is always sent:
// the endpoint's name, or an operator's cover name for an IP address.
// Go's own crypto/tls ClientHello is never used by the client.
//
// The certificate is really verified, in one of two ways:
//   - normal: system roots (or ClientConfig.RootCAs) and the SNI name, for a
//     server with a real domain and a CA-issued certificate;
//   - pinned: ClientConfig.PinSHA256 is the SHA-256 of the leaf
//     certificate's SubjectPublicKeyInfo (see SPKIPin), carried in the
//     invite. Chain and name are not checked; the pin is. This serves tests
//     and set-ups without a domain (a self-signed certificate).
//
// Inside TLS the client sends an HTTP/1.1 WebSocket upgrade (RFC 6455) to
// ServerConfig.Path (default "/ws"), and Magpie's byte stream then travels in
// binary WebSocket messages (one message per Write). The first records each
// way (the upgrade request, its 101 response, the first 8 messages) are
// padded to sizes drawn per connection (padding.go). The link's Noise
// session runs inside unchanged, so TLS is camouflage, not the security
// boundary.
//
// # Active probing
//
// In the direct modes the server reads the ClientHello before it answers
// anything. The client hides an authenticator in its session id (auth.go:
// an HMAC under the per-server secret over the whole ClientHello, with a
// masked timestamp; the client random is a replay-cache nonce). An
// authenticated ClientHello gets Magpie's TLS, with the key exchange and
// ALPN protocol the fallback picks for Chrome (h2, as a rule; HTTP/1.1 is
// spoken inside all the same, which TLS 1.3 hides). Every other
// connection, from its first byte, goes to ServerConfig.Fallback, a real
// web server with the same certificate, relayed byte for byte with its
// closes (FIN or RST) passed on as they happen (fallback.go): every
// reaction a prober sees is that server's, h2 included. Without a
// fallback it gets the decoy (by default GeneratedSite, a per-deployment
// generated site) over Go's TLS with h2 offered.
//
// The upgrade request must also carry a cookie authenticator:
// base64url(timestamp ‖ nonce ‖ HMAC-SHA256(secret, label ‖ timestamp ‖
// nonce ‖ path)), valid within ServerConfig.AuthWindow (default ±5
// minutes) and only once. Behind a proxy it is the only check; a request
// without it gets the decoy's answer for that path.
//
// # Server modes
//
//   - Direct TLS with ServerConfig.Certificate (the operator's certificate,
//     or a self-signed one pinned by clients).
//   - Direct TLS with ServerConfig.Autocert, an ACME (Let's Encrypt) manager
//     for the operator's domain. The listener answers TLS-ALPN-01 challenges
//     itself (even with a fallback); HTTP-01 needs Autocert.HTTPHandler(nil)
//     served on port 80 by the operator. This mode needs the public internet
//     and a domain, so it is wired but not covered by the tests.
//   - BehindProxy: plain HTTP on the given address (normally loopback) for an
//     HTTPS reverse proxy or CDN that terminates TLS and forwards WebSocket
//     upgrades over HTTP/1.1 (testdata/nginx.conf.tmpl is a tested nginx
//     configuration).
//
// docs/TRANSPORTS.md has the recommended deployment (a real domain, its
// ACME certificate, nginx beside Magpie as the fallback) and the
// comparison with nginx in every probe class.
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
