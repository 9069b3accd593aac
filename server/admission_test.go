package server_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// rawFrom opens a TCP connection to addr from a loopback source address,
// sending nothing (a socket that never finishes its handshake).
func rawFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedSoon reports whether the server closes c within d.
func closedSoon(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// dialFrom is a servertest Dial from a loopback source address.
func dialFrom(t *testing.T, s *servertest.Server, src string) (*clientconn.Conn, error) {
	t.Helper()
	opts := s.DialOptions
	opts.Dialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := clientconn.Dial(ctx(t), s.Invite, servertest.NewKey(t), opts)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// One network cannot hold more than its share of connections: the next
// one from it is closed at once, while another network's clients still
// connect and register; a connection that ends frees its place.
func TestConnectionsPerNetwork(t *testing.T) {
	s := servertest.Start(t, server.Config{MaxConnsPerNetwork: 3})
	var held []net.Conn
	for _, src := range []string{"127.0.0.1", "127.0.0.7", "127.0.0.200"} { // one /24
		held = append(held, rawFrom(t, src, s.Addr))
	}
	time.Sleep(100 * time.Millisecond) // accepted
	if !closedSoon(rawFrom(t, "127.0.0.9", s.Addr), time.Second) {
		t.Fatal("a fourth connection from a network holding three was kept")
	}
	// (The three are closed later, at the handshake timeout.)
	if closedSoon(held[1], 200*time.Millisecond) {
		t.Fatal("a connection within the network's share was closed")
	}
	if _, err := dialFrom(t, s, "127.0.0.10"); err == nil {
		t.Fatal("a client from the full network connected")
	}
	c, err := dialFrom(t, s, "127.0.1.1")
	if err != nil {
		t.Fatalf("a client from another network: %v", err)
	}
	if _, err := c.Register(ctx(t), "honest"); err != nil {
		t.Fatalf("registering from another network: %v", err)
	}
	held[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := dialFrom(t, s, "127.0.0.11"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("no place freed after a connection ended: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The server's own cap: past it, connections are closed at once.
func TestConnectionsInAll(t *testing.T) {
	s := servertest.Start(t, server.Config{MaxConns: 2})
	rawFrom(t, "127.0.2.1", s.Addr)
	rawFrom(t, "127.0.3.1", s.Addr)
	time.Sleep(100 * time.Millisecond)
	if !closedSoon(rawFrom(t, "127.0.4.1", s.Addr), time.Second) {
		t.Fatal("a third connection to a server holding its two was kept")
	}
}

// A device that does not register is not kept for long, pings or not; a
// registered one is.
func TestUnregisteredConnectionsEnd(t *testing.T) {
	s := servertest.Start(t, server.Config{RegisterTimeout: 300 * time.Millisecond})
	idle := s.Dial(t, servertest.NewKey(t))
	user := s.Register(t, "alice")
	time.Sleep(time.Second)
	if _, err := idle.Ping(ctx(t)); err == nil {
		t.Fatal("an unregistered connection answered after the register timeout")
	}
	if _, err := user.Ping(ctx(t)); err != nil {
		t.Fatalf("a registered connection after the register timeout: %v", err)
	}
	if _, err := idle.Register(ctx(t), "late"); err == nil {
		t.Fatal("registered on a connection closed for not registering")
	}
}
