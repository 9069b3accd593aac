package servertest_test

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/internal/servertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The relay passes bytes both ways unchanged, at full speed until it is
// throttled, and a throttled transfer takes at least as long as the rate
// allows.
func TestRelay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	defer func() { <-done }()
	go func() { // an echo server, for one connection
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	r := servertest.StartRelay(t, ln.Addr().String())
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo := func(n int) time.Duration {
		t.Helper()
		msg := bytes.Repeat([]byte("relay "), n/6)
		start := time.Now()
		go c.Write(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo of %d bytes through the relay: %v", len(msg), err)
		}
		return time.Since(start)
	}
	echo(1 << 20)
	// 96 KiB each way at 64 KiB/s, of which a 16 KiB burst is free: at
	// least 1.25 s.
	r.Throttle(64 << 10)
	if d := echo(96 << 10); d < 1200*time.Millisecond {
		t.Fatalf("96 KiB at 64 KiB/s took %v", d)
	}
	r.Throttle(0)
	echo(1 << 20)
}
