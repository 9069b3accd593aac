package link

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/magpie-im/magpie/internal/gatedconn"
)

// gatedPair is linkPair with the client's transport wrapped in a
// gatedconn.Conn.
func gatedPair(t *testing.T) (cli, srv *Conn, g *gatedconn.Conn) {
	t.Helper()
	cli, srv = wrappedPair(t, Config{}, Config{}, func(raw net.Conn) net.Conn {
		g = gatedconn.New(raw)
		return g
	})
	return cli, srv, g
}

// A message written while the link is idle goes out at once, in one write.
func TestSingleWriteGoesOutAtOnce(t *testing.T) {
	cli, srv, g := gatedPair(t)
	before := g.Writes()
	if err := cli.WriteMessage([]byte("alone")); err != nil {
		t.Fatal(err)
	}
	// WriteMessage returned, so its bytes were handed to the transport
	// (not left for a later write or a timer).
	if n := g.Writes() - before; n != 1 {
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
	before := g.Writes()

	release := g.HoldNext()
	errs := make(chan error, waiting+1)
	go func() { errs <- cli.WriteMessage([]byte("first")) }()
	<-g.Entered // the first write is in the transport, blocked

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
	release()
	for range waiting + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := g.Writes() - before; n != 2 {
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
