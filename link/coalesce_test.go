package link

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// gatedConn counts Write calls and, while hold is set, makes each write
// wait for it to be closed: a kernel send buffer that is full.
type gatedConn struct {
	net.Conn
	mu      sync.Mutex
	writes  int
	hold    chan struct{}
	entered chan struct{} // one value per write that began waiting on hold
}

func (g *gatedConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	g.writes++
	hold := g.hold
	g.mu.Unlock()
	if hold != nil {
		g.entered <- struct{}{}
		<-hold
	}
	return g.Conn.Write(p)
}

func (g *gatedConn) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.writes
}

// gatedPair is linkPair with the client's transport wrapped in a gatedConn.
func gatedPair(t *testing.T) (cli, srv *Conn, g *gatedConn) {
	t.Helper()
	cli, srv = wrappedPair(t, Config{}, Config{}, func(raw net.Conn) net.Conn {
		g = &gatedConn{Conn: raw, entered: make(chan struct{}, 1)}
		return g
	})
	return cli, srv, g
}

// A message written while the link is idle goes out at once, in one write.
func TestSingleWriteGoesOutAtOnce(t *testing.T) {
	cli, srv, g := gatedPair(t)
	before := g.count()
	if err := cli.WriteMessage([]byte("alone")); err != nil {
		t.Fatal(err)
	}
	// WriteMessage returned, so its bytes were handed to the transport
	// (not left for a later write or a timer).
	if n := g.count() - before; n != 1 {
		t.Fatalf("%d writes for one message, want 1", n)
	}
	if m, err := srv.ReadMessage(); err != nil || string(m) != "alone" {
		t.Fatalf("%q %v", m, err)
	}
}

// Messages written while another write is stuck in the transport go out
// together in one write once it returns, each still its own frame.
func TestConcurrentWritesCoalesce(t *testing.T) {
	cli, srv, g := gatedPair(t)
	const waiting = 8
	before := g.count()

	hold := make(chan struct{})
	g.mu.Lock()
	g.hold = hold
	g.mu.Unlock()
	errs := make(chan error, waiting+1)
	go func() { errs <- cli.WriteMessage([]byte("first")) }()
	<-g.entered // the first write is in the transport, blocked
	g.mu.Lock()
	g.hold = nil // later writes pass straight through
	g.mu.Unlock()

	want := map[string]bool{}
	for i := range waiting {
		m := fmt.Sprintf("queued %d", i)
		want[m] = true
		go func() { errs <- cli.WriteMessage([]byte(m)) }()
	}
	// Wait until all of them are sealed and waiting for the writer.
	for deadline := time.Now().Add(10 * time.Second); ; {
		cli.wmu.Lock()
		ahead := cli.sealed - cli.written
		cli.wmu.Unlock()
		if ahead == waiting+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d batches sealed", ahead)
		}
		time.Sleep(time.Millisecond)
	}
	close(hold)
	for range waiting + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := g.count() - before; n != 2 {
		t.Fatalf("%d writes, want 2: the blocked one, then all %d waiting messages in one", n, waiting)
	}
	if m, err := srv.ReadMessage(); err != nil || string(m) != "first" {
		t.Fatalf("first message %q %v", m, err)
	}
	for range waiting {
		m, err := srv.ReadMessage()
		if err != nil || !want[string(m)] {
			t.Fatalf("%q %v", m, err)
		}
		delete(want, string(m))
	}
	// And the link still works one message at a time.
	if err := cli.WriteMessage(bytes.Repeat([]byte("z"), 100)); err != nil {
		t.Fatal(err)
	}
	if m, err := srv.ReadMessage(); err != nil || len(m) != 100 {
		t.Fatalf("%d %v", len(m), err)
	}
}
