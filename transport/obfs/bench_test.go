package obfs

import (
	"context"
	"io"
	"net"
	"testing"
)

// BenchmarkThroughput sends 32 KiB writes client → server over TCP on
// 127.0.0.1 through the whole obfs stack.
func BenchmarkThroughput(b *testing.B) {
	key, err := GenerateServerKey()
	if err != nil {
		b.Fatal(err)
	}
	ln, err := Listen("127.0.0.1:0", key, Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	const chunk = 32 << 10
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	c, err := Dial(context.Background(), "tcp", ln.Addr().String(), key.Cert())
	if err != nil {
		b.Fatal(err)
	}
	msg := pattern(chunk, 1)
	b.SetBytes(chunk)
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
	c.(*conn).Conn.(*net.TCPConn).CloseWrite()
	if n := <-got; n != int64(b.N)*chunk {
		b.Fatalf("server got %d bytes, want %d", n, int64(b.N)*chunk)
	}
	b.StopTimer()
	c.Close()
}

// BenchmarkHandshake measures a full Dial + Accept over TCP on 127.0.0.1.
func BenchmarkHandshake(b *testing.B) {
	key, err := GenerateServerKey()
	if err != nil {
		b.Fatal(err)
	}
	ln, err := Listen("127.0.0.1:0", key, Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	cert := key.Cert()
	addr := ln.Addr().String()
	b.ResetTimer()
	for range b.N {
		c, err := Dial(context.Background(), "tcp", addr, cert)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	b.StopTimer()
	ln.Close()
	<-done
}

// BenchmarkEphemeralKey measures Elligator 2 key generation.
func BenchmarkEphemeralKey(b *testing.B) {
	for range b.N {
		if _, err := newEphemeralKey(cryptoReader{}); err != nil {
			b.Fatal(err)
		}
	}
}
