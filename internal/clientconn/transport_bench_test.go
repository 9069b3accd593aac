package clientconn_test

import (
	"context"
	"testing"

	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/transport/obfs"
)

// BenchmarkTransport measures each transport through a real server: a full
// connection (transport + Noise handshake + hello), a round trip (ping), and
// throughput (16 KiB echoed: SetBytes counts both directions).
func BenchmarkTransport(b *testing.B) {
	s := servertest.Start(b, server.Config{RequestRate: 1e9, RequestBurst: 1 << 30})
	eps := s.TransportEndpoints(b, obfs.Config{})
	key := servertest.NewKey(b)
	ctx := context.Background()
	for _, name := range []string{"tcp", "obfs", "tls"} {
		e := eps[name]
		dial := func(b *testing.B) *clientconn.Conn {
			c, _, err := clientconn.DialEndpoints(ctx, s.Invite.ServerKey, []endpoints.Endpoint{e}, key, clientconn.DialOptions{})
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
