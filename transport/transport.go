// Package transport carries Magpie's link (a Noise session between client
// and server) over the network in ways a censor cannot cheaply fingerprint
// or probe. Every transport turns an address into a net.Conn (client) or a
// net.Listener of net.Conns (server); the link runs over either unchanged,
// so the Noise session stays end to end whatever carries it. The shape
// follows the Pluggable Transports v3 Go API: Dial and Listen, configured
// per transport.
//
// Transports:
//   - tcp: plain TCP. Fast; for networks that do not censor. Its 2-byte
//     length prefixes and fixed handshake sizes are easy to fingerprint.
//   - obfs: looks like uniformly random bytes from the first byte on
//     (Elligator2-encoded keys, encrypted lengths, random padding), and
//     shapes its first packet so the Great Firewall's fully-encrypted-
//     traffic rules do not flag it (transport/obfs).
//   - tls: TLS 1.3 with a browser's ClientHello and a WebSocket inside; to
//     anyone without the per-server authenticator, an ordinary website
//     (transport/tlsws). Works behind an HTTPS reverse proxy or CDN.
//
// Relays (magpie relay) accept obfs and tls and forward the bytes to the
// server's tcp endpoint; the Noise session is end to end, so they can read
// nothing.
package transport

import (
	"context"
	"net"
	"time"
)

// ClientKeepAlive is the TCP keepalive a client sets on its socket, whatever
// the transport. The kernel sends the probes and the server's kernel answers
// them, so they keep NAT mappings open and notice a dead path without waking
// either process: an idle path is given up 55 s after its last packet (25 s,
// then 3 probes 10 s apart). Application pings (link.Config) are then rare,
// and check what TCP cannot: the server itself, through relays and proxies.
var ClientKeepAlive = net.KeepAliveConfig{
	Enable:   true,
	Idle:     25 * time.Second,
	Interval: 10 * time.Second,
	Count:    3,
}

// Dialer opens a client connection through a transport.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Transport is one way of carrying the link.
type Transport interface {
	// Name is the transport's name in invites and endpoint lists.
	Name() string
	// Dialer returns a client for this transport.
	Dialer() Dialer
	// Listen accepts connections through this transport on address.
	Listen(address string) (net.Listener, error)
}

// Names of the transports.
const (
	TCP  = "tcp"
	Obfs = "obfs"
	TLS  = "tls"
)
