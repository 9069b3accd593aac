package server_test

import (
	"errors"
	"fmt"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/wire"
	"google.golang.org/protobuf/proto"
	"io"
	"net"
	"strings"
	"syscall"
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

// waitTracked waits until the server tracks conns connections, handshaking
// of them mid-handshake: accepted in the order the test opened them.
func waitTracked(t *testing.T, s *servertest.Server, conns, handshaking int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, h := s.Server.Tracked()
		if c == conns && h == handshaking {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server tracks %d connections, %d mid-handshake; want %d and %d", c, h, conns, handshaking)
		}
		time.Sleep(time.Millisecond)
	}
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
	waitTracked(t, s, 3, 3)
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
	// Devices with an account do not count: any number may share a
	// network (a reverse proxy, a relay, a campus).
	for i := range 3 {
		c, err := dialFrom(t, s, fmt.Sprintf("127.0.9.%d", i+1))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Register(ctx(t), fmt.Sprintf("user%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if closedSoon(rawFrom(t, "127.0.9.200", s.Addr), 200*time.Millisecond) {
		t.Fatal("registered devices took up their network's share")
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

// The server's own cap: past it, a new connection takes the place of the
// one that has been mid-handshake longest; when every connection has
// finished its handshake, new ones are closed at once.
func TestConnectionsInAll(t *testing.T) {
	s := servertest.Start(t, server.Config{MaxConns: 2})
	oldest := rawFrom(t, "127.0.2.1", s.Addr)
	waitTracked(t, s, 1, 1) // accepted first
	newer := rawFrom(t, "127.0.3.1", s.Addr)
	waitTracked(t, s, 2, 2)
	c, err := dialFrom(t, s, "127.0.4.1")
	if err != nil {
		t.Fatalf("a client connecting to a server full of half-open sockets: %v", err)
	}
	if !closedSoon(oldest, time.Second) {
		t.Fatal("the oldest half-open socket was kept when the server was full")
	}
	if closedSoon(newer, 200*time.Millisecond) {
		t.Fatal("a newer half-open socket was closed too")
	}
	if _, err := c.Register(ctx(t), "alice"); err != nil {
		t.Fatal(err)
	}
	newer.Close()
	waitTracked(t, s, 1, 0) // alice's alone
	if _, err := dialFrom(t, s, "127.0.5.1"); err != nil {
		t.Fatal(err)
	}
	// Both places are held by finished handshakes now.
	if !closedSoon(rawFrom(t, "127.0.6.1", s.Addr), time.Second) {
		t.Fatal("a third connection to a server holding two finished ones was kept")
	}
}

// Sockets that never finish their handshake (half-open, slowloris) cannot
// lock honest clients out: when the places for handshakes are full, the
// one that has waited longest is closed, and an honest handshake, which
// takes a round trip, completes.
func TestOldestHandshakeMakesRoom(t *testing.T) {
	s := servertest.Start(t, server.Config{MaxHandshakes: 3})
	var held []net.Conn
	for i := range 3 {
		held = append(held, rawFrom(t, fmt.Sprintf("127.0.%d.1", 20+i), s.Addr))
		waitTracked(t, s, i+1, i+1) // accepted in this order
	}
	held[2].Write([]byte{0x16, 0x03}) // slowloris: a trickle of a first message
	for i := range 3 {
		c, err := dialFrom(t, s, "127.0.30.1")
		if err != nil {
			t.Fatalf("honest client %d while the handshake places are held: %v", i, err)
		}
		if _, err := c.Register(ctx(t), fmt.Sprintf("honest%d", i)); err != nil {
			t.Fatal(err)
		}
		if !closedSoon(held[i], time.Second) {
			t.Fatalf("socket %d, the oldest mid-handshake, was kept", i)
		}
		for _, later := range held[i+1:] {
			if closedSoon(later, 100*time.Millisecond) {
				t.Fatalf("a socket newer than the oldest was closed (client %d)", i)
			}
		}
		// The attacker fills the place again, once the evicted socket
		// has gone (the honest clients stay connected).
		waitTracked(t, s, 2+i+1, 2)
		held = append(held, rawFrom(t, fmt.Sprintf("127.0.%d.1", 23+i), s.Addr))
		waitTracked(t, s, 3+i+1, 3)
	}
}

// A device that does not register is not kept for long, pings or not; a
// registered one is.
func TestUnregisteredConnectionsEnd(t *testing.T) {
	s := servertest.Start(t, server.Config{RegisterTimeout: 300 * time.Millisecond})
	idle := s.Dial(t, servertest.NewKey(t))
	user := s.Register(t, "alice")
	select {
	case <-idle.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("an unregistered connection was kept 5 s with a 300 ms register timeout")
	}
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

// Requests are budgeted per account and per source network, not only per
// connection: reconnecting, or adding connections from the same network,
// does not multiply them; other accounts and networks are not slowed.
func TestRequestBudgets(t *testing.T) {
	limited := func(err error) bool {
		var se *clientconn.ServerError
		return errors.Is(err, clientconn.ErrRateLimited) && errors.As(err, &se) && se.RetryAfter > 0
	}
	t.Run("connection", func(t *testing.T) {
		s := servertest.Start(t, server.Config{RequestBurst: 5, RequestRate: 0.001})
		alice := s.Register(t, "alice")
		for i := range 4 { // the registration was the first
			if _, err := alice.Ping(ctx(t)); err != nil {
				t.Fatalf("ping %d: %v", i+1, err)
			}
		}
		if _, err := alice.Ping(ctx(t)); !limited(err) || !strings.Contains(err.Error(), "connection") {
			t.Fatalf("a request past the connection's budget: %v, want a rate limit naming the connection", err)
		}
		if _, err := s.Reconnect(t, alice).Ping(ctx(t)); err != nil {
			t.Fatalf("a new connection of the account: %v", err)
		}
	})
	t.Run("account", func(t *testing.T) {
		s := servertest.Start(t, server.Config{RequestBurst: 10, AccountRequestBurst: 15, AccountRequestRate: 0.001})
		alice := s.Register(t, "alice") // the registration spends no account budget
		bob := s.Register(t, "bob")
		for i := range 10 {
			if _, err := alice.Ping(ctx(t)); err != nil {
				t.Fatalf("ping %d: %v", i+1, err)
			}
		}
		again := s.Reconnect(t, alice) // a new connection's budget: 10; the account's: 5 left
		for i := range 5 {
			if _, err := again.Ping(ctx(t)); err != nil {
				t.Fatalf("ping %d on a new connection: %v", i+1, err)
			}
		}
		if _, err := again.Ping(ctx(t)); !limited(err) || !strings.Contains(err.Error(), "account") {
			t.Fatalf("a request past the account's budget: %v, want a rate limit naming the account", err)
		}
		if _, err := bob.Ping(ctx(t)); err != nil {
			t.Fatalf("another account: %v", err)
		}
	})
	t.Run("network", func(t *testing.T) {
		s := servertest.Start(t, server.Config{NetworkRequestBurst: 13, NetworkRequestRate: 0.001})
		// A device with an account, from the same network (its
		// registration is the network's first request).
		member, err := dialFrom(t, s, "127.0.5.9")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := member.Register(ctx(t), "member"); err != nil {
			t.Fatal(err)
		}
		var conns []*clientconn.Conn
		for _, src := range []string{"127.0.5.1", "127.0.5.2", "127.0.5.3"} {
			c, err := dialFrom(t, s, src)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		for i := range 12 {
			if _, err := conns[i%3].Ping(ctx(t)); err != nil {
				t.Fatalf("ping %d: %v", i+1, err)
			}
		}
		if _, err := conns[0].Ping(ctx(t)); !limited(err) || !strings.Contains(err.Error(), "network") {
			t.Fatalf("a request past the network's budget: %v, want a rate limit naming the network", err)
		}
		// Devices with an account answer to its budget instead: many may
		// share an address (a proxy, a relay).
		if _, err := member.Ping(ctx(t)); err != nil {
			t.Fatalf("an account's device on a network past its budget: %v", err)
		}
		other, err := dialFrom(t, s, "127.0.6.1")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.Ping(ctx(t)); err != nil {
			t.Fatalf("another network: %v", err)
		}
	})
}

// Output waiting to be written is budgeted across all connections: when a
// client that does not read pushes it over, that client (holding the
// most) is dropped, and one that reads is not.
func TestUnsentOutputBudget(t *testing.T) {
	// The kernel takes up to a few MiB of a socket's output before a write
	// blocks: send more than that (and let the router push it all).
	s := servertest.Start(t, server.Config{MaxUnsent: 256 << 10, MaxOutbox: 64 << 20})
	alice := s.Register(t, "alice")
	carol := s.Register(t, "carol")
	bob := s.Register(t, "bob")
	bob.Close()
	// bob again, as a client that never reads: a small socket buffer,
	// the handshake, then nothing.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		rc.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return err
	}}
	nc, err := d.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	hello, err := proto.Marshal(&wire.ClientHello{MinVersion: wire.Version, MaxVersion: wire.Version})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := link.Client(nc, bob.Key, s.Key.Public, hello, link.Config{}); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 16<<10)
	for i := range 600 { // ~10 MiB for bob
		if _, err := alice.Send(ctx(t), "bob", clientconn.NewMessageID(), payload); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	// Dropped: the server closes bob's socket (read what is buffered
	// until it ends).
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, nc); err != nil {
		t.Fatalf("a client that does not read kept its connection with the server's output over budget: %v", err)
	}
	mustSend(t, alice, "carol", clientconn.NewMessageID(), "still here")
	if e := servertest.NextEnvelope(t, carol.Conn, 5*time.Second); string(e.Payload) != "still here" {
		t.Fatalf("carol got %q", e.Payload)
	}
}
