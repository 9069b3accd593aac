package censor

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

func newPath(t *testing.T, upstream string) *Path {
	t.Helper()
	p, err := NewPath(upstream)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// echoWithin echoes n bytes through c, within d.
func echoWithin(c net.Conn, n int, d time.Duration) error {
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(make([]byte, n))
		errc <- err
	}()
	if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
		return err
	}
	return <-errc
}

// Each action reaches the flows already open, not only new ones.
func TestPathActsOnOpenFlows(t *testing.T) {
	t.Parallel()
	s := startServer(t, echo)
	p := newPath(t, s.addr)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := echoWithin(c, 100, 5*time.Second); err != nil {
			t.Fatalf("forwarding: %v", err)
		}
		return c
	}

	c := dial()
	p.Set(PathBlackhole, 0)
	if err := echoWithin(c, 100, 300*time.Millisecond); !errors.Is(err, syscall.ETIMEDOUT) && !isTimeout(err) {
		t.Fatalf("black hole: an open flow still answers (%v)", err)
	}

	// Dropping what the client sends: the server's bytes still arrive.
	p.Set(PathForward, 0)
	pushing := startServer(t, func(s *testServer, c net.Conn) {
		buf := make([]byte, 64)
		for {
			if _, err := c.Write([]byte("push")); err != nil {
				return
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			n, err := c.Read(buf)
			s.received.Add(int64(n))
			if err != nil && !isTimeout(err) {
				return
			}
		}
	})
	q := newPath(t, pushing.addr)
	qc, err := net.Dial("tcp", q.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer qc.Close()
	q.Set(PathDropUp, 0)
	qc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(qc, make([]byte, 8)); err != nil {
		t.Fatalf("drop-up: the server's bytes do not arrive: %v", err)
	}
	qc.Write([]byte("lost"))
	time.Sleep(200 * time.Millisecond)
	if n := pushing.received.Load(); n != 0 {
		t.Fatalf("drop-up: %d bytes from the client reached the server", n)
	}

	c = dial()
	p.Set(PathReset, 0)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reset: an open flow reads %v, want a reset", err)
	}
	nc, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := echoWithin(nc, 100, 5*time.Second); !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("reset: a new flow gets %v, want a reset", err)
	}
	if p.Flows() != 3 {
		t.Fatalf("%d flows counted, want 3", p.Flows())
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A policed flow passes what fits the rate at once, and stalls on what
// does not, for longer than the rate alone would take: TCP's
// retransmission timeouts.
func TestPathThrottlePolices(t *testing.T) {
	t.Parallel()
	s := startServer(t, echo)
	p := newPath(t, s.addr)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p.Set(PathThrottle, 20<<10)
	start := time.Now()
	if err := echoWithin(c, 1000, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Fatalf("1000 bytes within the burst took %v", d)
	}
	// 16 KiB each way: at the rate alone 0.8 s; policed, segments beyond
	// the 2 KB bucket wait out timeouts of at least 200 ms.
	start = time.Now()
	if err := echoWithin(c, 16<<10, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	t.Logf("16 KiB echoed through a 20 KiB/s policer in %v", d.Round(time.Millisecond))
	if d < time.Second {
		t.Fatalf("16 KiB through a 20 KiB/s policer in %v: not policed", d)
	}
	// Forwarding again, the same flow is fast.
	p.Set(PathForward, 0)
	start = time.Now()
	if err := echoWithin(c, 16<<10, 5*time.Second); err != nil || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("after the throttle: %v in %v", err, time.Since(start))
	}
}
