package clientconn

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"

	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/transport"
	"github.com/magpie-im/magpie/transport/obfs"
	"github.com/magpie-im/magpie/transport/tlsws"
)

// The censorship-resistant transports this client speaks; tcp is built in
// (dialTransport).
func init() {
	defaultTransports[tlsws.Name] = func(ctx context.Context, e endpoints.Endpoint, _ tcpDialer) (net.Conn, error) {
		return dialTLS(ctx, e)
	}
	defaultTransports[transport.Obfs] = dialObfs
}

// dialObfs reaches an obfs endpoint over a connection from d, so that the
// client's TCP settings (keepalive, source address) apply to it too.
func dialObfs(ctx context.Context, e endpoints.Endpoint, d tcpDialer) (net.Conn, error) {
	if _, _, err := obfs.ParseCert(e.Cert); err != nil {
		return nil, fmt.Errorf("obfs endpoint %s: %w", e.Address, err)
	}
	raw, err := d.DialContext(ctx, "tcp", e.Address)
	if err != nil {
		return nil, err
	}
	c, err := obfs.Client(ctx, raw, e.Cert)
	if err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// dialTLS reaches a tls endpoint: TLS with a browser's ClientHello, a
// WebSocket inside, and the per-server authenticator from the endpoint list.
func dialTLS(ctx context.Context, e endpoints.Endpoint) (net.Conn, error) {
	cfg := tlsws.ClientConfig{ServerName: e.SNI, Path: e.Path, Host: e.Front}
	if len(e.Secret) != len(cfg.Secret) {
		return nil, fmt.Errorf("tls endpoint %s has no valid authenticator secret", e.Address)
	}
	copy(cfg.Secret[:], e.Secret)
	if e.Cert != "" {
		pin, err := base64.RawURLEncoding.DecodeString(e.Cert)
		if err != nil {
			return nil, fmt.Errorf("tls endpoint %s: bad certificate pin: %w", e.Address, err)
		}
		cfg.PinSHA256 = pin
	}
	return tlsws.Dial(ctx, "tcp", e.Address, cfg)
}
