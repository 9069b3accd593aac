//go:build linux

package netpoll

import (
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return s.(*net.TCPConn), c.(*net.TCPConn)
}

func raw(t *testing.T, c *net.TCPConn) syscall.RawConn {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

func newPoller(t *testing.T) *Poller {
	t.Helper()
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func waitFired(t *testing.T, fired <-chan struct{}, want bool) {
	t.Helper()
	select {
	case <-fired:
		if !want {
			t.Fatal("ready was called")
		}
	case <-time.After(300 * time.Millisecond):
		if want {
			t.Fatal("ready was not called")
		}
	}
}

func TestReadyWhenBytesArrive(t *testing.T) {
	p := newPoller(t)
	s, c := pair(t)
	fired := make(chan struct{}, 2)
	w, err := p.Wait(raw(t, s), time.Time{}, func(expired bool) { fired <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	if p.Parked() != 1 {
		t.Fatalf("Parked = %d, want 1", p.Parked())
	}
	waitFired(t, fired, false) // nothing sent yet
	c.Write([]byte("x"))
	waitFired(t, fired, true)
	if w.Cancel() {
		t.Error("Cancel won after ready was called")
	}
	if p.Parked() != 0 {
		t.Errorf("Parked = %d after ready, want 0", p.Parked())
	}
	waitFired(t, fired, false) // one-shot: not again
	// The byte is still there for the reader.
	b := make([]byte, 1)
	if n, err := s.Read(b); n != 1 || b[0] != 'x' {
		t.Fatalf("read %d %q %v", n, b, err)
	}
	// Parking the same connection again re-arms it.
	if _, err := p.Wait(raw(t, s), time.Time{}, func(expired bool) { fired <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	waitFired(t, fired, false)
	c.Write([]byte("y"))
	waitFired(t, fired, true)
}

func TestReadyForBytesAlreadyThere(t *testing.T) {
	p := newPoller(t)
	s, c := pair(t)
	c.Write([]byte("early"))
	time.Sleep(20 * time.Millisecond)
	fired := make(chan struct{}, 1)
	if _, err := p.Wait(raw(t, s), time.Time{}, func(expired bool) { fired <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	waitFired(t, fired, true)
}

func TestReadyOnHangup(t *testing.T) {
	p := newPoller(t)
	s, c := pair(t)
	fired := make(chan struct{}, 1)
	if _, err := p.Wait(raw(t, s), time.Time{}, func(expired bool) { fired <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitFired(t, fired, true)
}

func TestCancelWins(t *testing.T) {
	p := newPoller(t)
	s, c := pair(t)
	fired := make(chan struct{}, 1)
	w, err := p.Wait(raw(t, s), time.Time{}, func(expired bool) { fired <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	if !w.Cancel() {
		t.Fatal("Cancel lost with nothing sent")
	}
	if w.Cancel() {
		t.Error("second Cancel won")
	}
	c.Write([]byte("x"))
	waitFired(t, fired, false)
}

// A descriptor number is reused as soon as it is closed; a cancelled and
// closed connection must leave nothing behind that fires for (or disarms)
// the next connection that gets its number.
func TestDescriptorReuse(t *testing.T) {
	p := newPoller(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for i := range 20 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		fired := make(chan struct{}, 1)
		w, err := p.Wait(raw(t, s.(*net.TCPConn)), time.Time{}, func(expired bool) { fired <- struct{}{} })
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if i%2 == 0 {
			c.Write([]byte("x"))
			waitFired(t, fired, true)
		} else if !w.Cancel() {
			t.Fatalf("connection %d: Cancel lost", i)
		}
		s.Close()
		c.Close()
	}
	if p.Parked() != 0 {
		t.Errorf("Parked = %d, want 0", p.Parked())
	}
}

func TestWaitAfterClose(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := pair(t)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(raw(t, s), time.Time{}, func(bool) {}); err != ErrClosed {
		t.Fatalf("Wait after Close: %v, want ErrClosed", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestWaitReadable(t *testing.T) {
	s, c := pair(t)
	rc := raw(t, s)
	start := time.Now()
	ok, err := WaitReadable(s, rc, 50*time.Millisecond)
	if ok || err != nil {
		t.Fatalf("nothing sent: got %v, %v", ok, err)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("returned after %v, before the 50ms wait", d)
	}
	// The deadline is cleared: a plain read does not time out at once.
	go func() { time.Sleep(20 * time.Millisecond); c.Write([]byte("ab")) }()
	ok, err = WaitReadable(s, rc, 5*time.Second)
	if !ok || err != nil {
		t.Fatalf("after a write: got %v, %v", ok, err)
	}
	b := make([]byte, 2)
	if n, err := s.Read(b); n != 2 || string(b) != "ab" {
		t.Fatalf("the peek consumed bytes: read %d %q %v", n, b, err)
	}
	c.Close()
	ok, err = WaitReadable(s, rc, 5*time.Second)
	if !ok || err != nil {
		t.Fatalf("after hang-up: got %v, %v; want readable, so the read sees EOF", ok, err)
	}
}

func TestDeadline(t *testing.T) {
	p := newPoller(t)
	s, c := pair(t)
	got := make(chan bool, 2)
	start := time.Now()
	if _, err := p.Wait(raw(t, s), start.Add(200*time.Millisecond), func(expired bool) { got <- expired }); err != nil {
		t.Fatal(err)
	}
	select {
	case expired := <-got:
		if !expired {
			t.Fatal("ready(false) with nothing sent")
		}
		if d := time.Since(start); d < 200*time.Millisecond || d > 200*time.Millisecond+3*sweepEvery {
			t.Errorf("expired after %v, want 200ms to 200ms + %v", d, 3*sweepEvery)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the deadline never expired")
	}
	if p.Parked() != 0 {
		t.Errorf("Parked = %d after expiry", p.Parked())
	}
	// Expiry disarmed the descriptor: bytes now wake nobody.
	c.Write([]byte("late"))
	select {
	case <-got:
		t.Fatal("ready called again after expiry")
	case <-time.After(300 * time.Millisecond):
	}
	// Bytes before the deadline win over it.
	if _, err := p.Wait(raw(t, s), time.Now().Add(time.Hour), func(expired bool) { got <- expired }); err != nil {
		t.Fatal(err)
	}
	select {
	case expired := <-got:
		if expired {
			t.Fatal("expired with bytes waiting")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not woken")
	}
}

func TestWaitReadablePeekOnly(t *testing.T) {
	s, c := pair(t)
	rc := raw(t, s)
	if ok, err := WaitReadable(s, rc, 0); ok || err != nil {
		t.Fatalf("nothing sent: %v, %v", ok, err)
	}
	c.Write([]byte("z"))
	time.Sleep(20 * time.Millisecond)
	if ok, err := WaitReadable(s, rc, 0); !ok || err != nil {
		t.Fatalf("after a write: %v, %v", ok, err)
	}
}

// goroutineID is the running goroutine's number, from its stack header
// ("goroutine 42 [running]:").
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	f := strings.Fields(string(buf))
	if len(f) < 2 {
		return ""
	}
	return f[1]
}

// TestReadersAreReused: a wake after an earlier one has finished runs in
// the same goroutine, whose stack has already grown, instead of a new one.
func TestReadersAreReused(t *testing.T) {
	p := newPoller(t)
	s, c := pair(t)
	wake := func() string {
		id := make(chan string, 1)
		if _, err := p.Wait(raw(t, s), time.Time{}, func(bool) { id <- goroutineID() }); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		got := <-id
		var one [1]byte
		if _, err := s.Read(one[:]); err != nil {
			t.Fatal(err)
		}
		// Let the reader go idle before the next wake.
		deadline := time.Now().Add(5 * time.Second)
		for p.idleReaders.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		return got
	}
	a, b := wake(), wake()
	if a == "" || a != b {
		t.Fatalf("two wakes in a row ran in goroutines %q and %q, want one reused", a, b)
	}
}

// TestManyReadyAtOnce: more descriptors become ready together than one
// epoll_wait returns (256), and every one is woken.
func TestManyReadyAtOnce(t *testing.T) {
	p := newPoller(t)
	const n = 600
	var wg sync.WaitGroup
	clients := make([]*net.TCPConn, n)
	for i := range n {
		s, c := pair(t)
		clients[i] = c
		wg.Add(1)
		if _, err := p.Wait(raw(t, s), time.Time{}, func(bool) { wg.Done() }); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range clients {
		if _, err := c.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%d of %d ready descriptors still parked", p.Parked(), n)
	}
}
