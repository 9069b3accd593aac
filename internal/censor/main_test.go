package censor

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testServer is a real TCP server on loopback running handle per
// connection; it is stopped (listener and connections closed, goroutines
// waited for) when the test ends.
type testServer struct {
	addr     string
	accepted atomic.Int32
	received atomic.Int64 // for handlers that count
}

func startServer(t *testing.T, handle func(s *testServer, c net.Conn)) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{addr: ln.Addr().String()}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(s, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

// echo copies everything back, counting the bytes.
func echo(s *testServer, c net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		s.received.Add(int64(n))
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func newCensor(t *testing.T, cfg Config) *Censor {
	t.Helper()
	c := New(cfg)
	t.Cleanup(func() { c.Close() })
	return c
}

func startForward(t *testing.T, c *Censor, upstream string) string {
	t.Helper()
	addr, err := c.Forward("", upstream)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// roundTrip writes p and expects it echoed back.
func roundTrip(t *testing.T, conn net.Conn, p []byte) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write(p); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(p))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(got) != string(p) {
		t.Fatalf("echo differs")
	}
}

// expectReset expects the next read to fail with ECONNRESET.
func expectReset(t *testing.T, conn net.Conn) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := conn.Read(make([]byte, 1024))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read: got %d bytes, err %v; want ECONNRESET", n, err)
	}
}

// dialExpectReset dials addr and expects the connection to be reset, either
// already during connect (on loopback the RST can beat connect's return)
// or on the first read.
func dialExpectReset(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	expectReset(t, conn)
}

// expectSilence expects nothing at all (no data, no close) for d.
func expectSilence(t *testing.T, conn net.Conn, d time.Duration) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	n, err := conn.Read(make([]byte, 1024))
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: got %d bytes, err %v; want silence", n, err)
	}
}

// randBytes returns n bytes from a seeded generator.
func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// nthEvent waits for the n-th event and returns it.
func nthEvent(t *testing.T, c *Censor, n int) Event {
	t.Helper()
	ctx, cancel := contextWithTimeout(3 * time.Second)
	defer cancel()
	ev, err := c.WaitEvents(ctx, n)
	if err != nil {
		t.Fatalf("waiting for event %d: %v (have %+v)", n, err, ev)
	}
	return ev[n-1]
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
