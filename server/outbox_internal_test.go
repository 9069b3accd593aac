package server

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"testing"

	"github.com/magpie-im/magpie/internal/gatedconn"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/wire"
)

// outboxConn returns a server-side conn, with only what enqueue and flush
// use, whose link writes through a gatedconn.Conn, and the client's end.
func outboxConn(t *testing.T) (*conn, *gatedconn.Conn, *link.Conn) {
	t.Helper()
	srvKey, err := link.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cliKey, err := link.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	g := gatedconn.New(b)
	done := make(chan error, 1)
	var lc *link.Conn
	go func() {
		var err error
		lc, err = link.Server(g, srvKey, link.Config{}, func([32]byte, []byte) ([]byte, error) { return nil, nil })
		done <- err
	}()
	cli, _, err := link.Client(a, cliKey, srvKey.Public, nil, link.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{MaxOutbox: 8 << 20, MaxUnsent: 1 << 30}, log: slog.New(slog.DiscardHandler)}
	c := &conn{s: s, nc: g, lc: lc}
	c.idle.L = &c.mu
	t.Cleanup(func() { cli.Close(); lc.Close(); c.waitWriter() })
	return c, g, cli
}

// waitWriter waits until no writer goroutine runs.
func (c *conn) waitWriter() {
	c.mu.Lock()
	for c.writing {
		c.idle.Wait()
	}
	c.mu.Unlock()
}

func pingAnswer(i int) *wire.ServerFrame {
	return &wire.ServerFrame{Body: &wire.ServerFrame_Response{Response: &wire.Response{
		Id: uint64(i), Body: &wire.Response_Ping{Ping: &wire.PingResponse{}}}}}
}

// readIDs reads n frames on the client's end and returns their ids, or
// why it could not.
func readIDs(cli *link.Conn, n int) string {
	var ids []uint64
	for range n {
		m, err := cli.ReadMessage()
		if err != nil {
			return err.Error()
		}
		f, err := wire.DecodeServerFrame(m)
		if err != nil {
			return err.Error()
		}
		ids = append(ids, f.GetResponse().GetId())
	}
	return fmt.Sprint(ids)
}

// Frames queued for a client while its connection's write is blocked go
// out in one write when it returns; a frame queued on an idle connection
// goes out by itself, in one write.
func TestOutboxCoalescesWhileWriting(t *testing.T) {
	c, g, cli := outboxConn(t)
	reads := make(chan string, 1)

	before := g.Writes()
	go func() { reads <- readIDs(cli, 1) }()
	if !c.enqueue(pingAnswer(0)) {
		t.Fatal("enqueue refused")
	}
	if ids := <-reads; ids != "[0]" {
		t.Fatalf("got %v", ids)
	}
	c.waitWriter()
	if n := g.Writes() - before; n != 1 {
		t.Fatalf("one frame on an idle connection: %d writes", n)
	}

	before = g.Writes()
	release := g.HoldNext()
	c.enqueue(pingAnswer(1))
	<-g.Entered // the writer is stuck in the write of frame 1
	for i := 2; i <= 9; i++ {
		c.enqueue(pingAnswer(i))
	}
	go func() { reads <- readIDs(cli, 9) }()
	release()
	if ids := <-reads; ids != "[1 2 3 4 5 6 7 8 9]" {
		t.Fatalf("got %v", ids)
	}
	c.waitWriter()
	if n := g.Writes() - before; n != 2 {
		t.Fatalf("%d writes, want 2: frame 1, then the 8 queued behind it in one", n)
	}
}
