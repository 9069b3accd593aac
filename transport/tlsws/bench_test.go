package tlsws

import (
	"context"
	"io"
	"net"
	"testing"
)

// BenchmarkThroughput sends 64 KiB writes one way over one connection on
// loopback (direct TLS mode); the server reads and discards.
func BenchmarkThroughput(b *testing.B) {
	ln, err := Listen("127.0.0.1:0", serverConfig(b))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	const size = 64 << 10
	total := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			total <- 0
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		total <- n
	}()
	c, err := Dial(context.Background(), "tcp", ln.Addr().String(), clientConfig(b))
	if err != nil {
		b.Fatal(err)
	}
	buf := randBytes(size)
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close() // waits for the close handshake, so everything was read
	b.StopTimer()
	if n := <-total; n != int64(b.N)*size {
		b.Fatalf("server read %d bytes, want %d", n, int64(b.N)*size)
	}
}

// BenchmarkConnect is one connection set-up: TCP, TLS 1.3 with a Chrome
// ClientHello, the authenticated WebSocket upgrade, and Close.
func BenchmarkConnect(b *testing.B) {
	ln, err := Listen("127.0.0.1:0", serverConfig(b))
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				io.Copy(io.Discard, c)
				c.Close()
			}(c)
		}
	}()
	cfg := clientConfig(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := Dial(context.Background(), "tcp", ln.Addr().String(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	b.StopTimer()
	ln.Close()
	<-done
}
