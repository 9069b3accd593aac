// Package transporttest is the conformance test that every
// transport.Transport passes, as store/storetest is for stores: each
// transport's own tests then cover only what is particular to it (probe
// resistance, decoy site, packet shapes).
package transporttest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/magpie-im/magpie/transport"
)

// Run checks that server and client (the two configurations of one
// transport) are named name, that a client dials a server listening on
// loopback, that bytes written either way arrive intact (a short message
// and one large enough to span many frames, echoed by the server), and that
// a connection closed locally reads net.ErrClosed even after the peer hung
// up.
func Run(t *testing.T, server, client transport.Transport, name string) {
	t.Helper()
	for _, tr := range []transport.Transport{server, client} {
		if tr.Name() != name {
			t.Fatalf("Name() = %q, want %q", tr.Name(), name)
		}
	}
	ln, err := server.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	closedRead := make(chan error, 1)
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			closedRead <- err
			return
		}
		_, _ = io.Copy(c, c) // until the client hangs up
		c.Close()
		_, err = c.Read(make([]byte, 1))
		closedRead <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dialer().DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	large := make([]byte, 200<<10)
	for i := range large {
		large[i] = byte(i * 7)
	}
	for _, msg := range [][]byte{[]byte("hello through the transport"), large} {
		Echo(t, c, msg)
	}
	c.Close()
	<-done
	// The link's probe-resistant drain ends early, at shutdown, only when a
	// read on the connection it closed says net.ErrClosed, even after the
	// peer's EOF.
	if err := <-closedRead; !errors.Is(err, net.ErrClosed) {
		t.Errorf("a read after the peer hung up and a local Close = %v, want net.ErrClosed", err)
	}
}

// Echo writes msg on c and checks that the same bytes come back within
// 20 s (the peer echoes). The write runs concurrently, so a message larger
// than the transport's buffers cannot deadlock the test.
func Echo(t testing.TB, c net.Conn, msg []byte) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		errc <- err
	}()
	got := make([]byte, len(msg))
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read %d bytes: %v", len(msg), err)
	}
	_ = c.SetReadDeadline(time.Time{})
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo of %d bytes differs", len(msg))
	}
}
