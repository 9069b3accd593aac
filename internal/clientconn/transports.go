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
	defaultTransports[tlsws.Name] = dialTLS
	defaultTransports[transport.Obfs] = func(ctx context.Context, e endpoints.Endpoint) (net.Conn, error) {
		return obfs.Dial(ctx, "tcp", e.Address, e.Cert)
	}
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
