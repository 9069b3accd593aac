package client_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"testing"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/transport/obfs"
	"github.com/magpie-im/magpie/transport/tlsws"
)

// transportEndpoints starts listeners for every transport on s and returns
// one endpoint per transport.
func transportEndpoints(tb testing.TB, s *servertest.Server) map[string]endpoints.Endpoint {
	tb.Helper()
	okey, err := obfs.GenerateServerKey()
	if err != nil {
		tb.Fatal(err)
	}
	oln, err := obfs.Listen("127.0.0.1:0", okey, obfs.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	go s.Serve(oln)
	var secret [32]byte
	rand.Read(secret[:])
	cert := selfSignedCert(tb)
	tln, err := tlsws.Listen("127.0.0.1:0", tlsws.ServerConfig{Certificate: cert, Secret: secret})
	if err != nil {
		tb.Fatal(err)
	}
	go s.Serve(tln)
	return map[string]endpoints.Endpoint{
		"tcp":  {Transport: "tcp", Address: s.Addr},
		"obfs": {Transport: "obfs", Address: oln.Addr().String(), Cert: okey.Cert()},
		"tls": {Transport: "tls", Address: tln.Addr().String(), SNI: "magpie.example", Secret: secret[:],
			Cert: base64.RawURLEncoding.EncodeToString(tlsws.SPKIPin(cert.Leaf))},
	}
}

// BenchmarkTransport measures each transport through a real server: a full
// connection (transport + Noise handshake + hello), a round trip (ping), and
// throughput (16 KiB echoed: SetBytes counts both directions).
func BenchmarkTransport(b *testing.B) {
	s := servertest.Start(b, server.Config{RequestRate: 1e9, RequestBurst: 1 << 30})
	eps := transportEndpoints(b, s)
	key := servertest.NewKey(b)
	ctx := context.Background()
	for _, name := range []string{"tcp", "obfs", "tls"} {
		e := eps[name]
		dial := func(b *testing.B) *client.Conn {
			c, _, err := client.DialEndpoints(ctx, s.Invite.ServerKey, []endpoints.Endpoint{e}, key, client.DialOptions{})
			if err != nil {
				b.Fatal(err)
			}
			return c
		}
		b.Run(name+"/connect", func(b *testing.B) {
			for b.Loop() {
				dial(b).Close()
			}
		})
		b.Run(name+"/roundtrip", func(b *testing.B) {
			c := dial(b)
			defer c.Close()
			for b.Loop() {
				if _, err := c.Ping(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/throughput", func(b *testing.B) {
			c := dial(b)
			defer c.Close()
			chunk := make([]byte, 16<<10)
			b.SetBytes(2 * int64(len(chunk)))
			for b.Loop() {
				if err := c.Echo(ctx, chunk); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
