// Package servertest runs a real Magpie server (SQLite store in a temporary
// directory, TCP on loopback) for tests, in the spirit of net/http/httptest.
package servertest

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/store/pebblestore"
)

// Server is a running test server.
type Server struct {
	*server.Server
	Store  *pebblestore.Store // the server's default store
	Invite invite.Invite
	Addr   string
	Dir    string
	Key    link.KeyPair
	// DialOptions are used by Dial, Register and Reconnect.
	DialOptions clientconn.DialOptions

	ln   net.Listener
	done chan error
	once sync.Once
}

// Start starts a server with cfg (Key and Store are filled in), listening on
// 127.0.0.1:0. It is shut down when the test ends.
func Start(t testing.TB, cfg server.Config) *Server {
	t.Helper()
	dir := t.TempDir()
	st, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := link.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Key, cfg.Store = key, st
	if cfg.Link.HandshakeTimeoutMax == 0 {
		cfg.Link.HandshakeTimeoutMin, cfg.Link.HandshakeTimeoutMax = 2*time.Second, 3*time.Second
	}
	if cfg.SignupBurst == 0 {
		cfg.SignupBurst = 1000 // tests register many users from one address
	}
	if cfg.MaxConnsPerNetwork == 0 {
		cfg.MaxConnsPerNetwork = 100_000 // and connect them from it
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{
		Server: srv, Store: st, Dir: dir, ln: ln, Addr: ln.Addr().String(), Key: key,
		Invite: invite.Invite{ServerKey: key.Public, Addrs: []string{ln.Addr().String()}},
		done:   make(chan error, 1),
	}
	go func() { s.done <- srv.Serve(ln) }()
	t.Cleanup(s.Stop)
	return s
}

// AddListener makes the server also accept on a new loopback address (as
// a second endpoint) and returns it.
func (s *Server) AddListener(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	return ln.Addr().String()
}

// Stop shuts the server down and closes its store; it is safe to call twice.
func (s *Server) Stop() {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		if err := <-s.done; err != nil && !errors.Is(err, server.ErrServerClosed) {
			panic(err)
		}
		s.Store.Close()
	})
}

// ReopenStore opens the (stopped) server's database again, to inspect what
// it kept; it is closed when the test ends.
func (s *Server) ReopenStore(t testing.TB) *pebblestore.Store {
	t.Helper()
	st, err := pebblestore.Open(s.Dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// NewKey returns a fresh device key.
func NewKey(t testing.TB) link.KeyPair {
	t.Helper()
	k, err := link.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Dial connects a device with key; the connection is closed when the test
// ends.
func (s *Server) Dial(t testing.TB, key link.KeyPair) *clientconn.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := clientconn.Dial(ctx, s.Invite, key, s.DialOptions)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// User is a registered device with an open connection.
type User struct {
	Name string
	Key  link.KeyPair
	*clientconn.Conn
}

// Register creates user name with a fresh key and returns its connection.
func (s *Server) Register(t testing.TB, name string) *User {
	t.Helper()
	key := NewKey(t)
	c := s.Dial(t, key)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Register(ctx, name); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return &User{Name: name, Key: key, Conn: c}
}

// Reconnect opens a new connection for u (the old one is superseded).
func (s *Server) Reconnect(t testing.TB, u *User) *User {
	t.Helper()
	return &User{Name: u.Name, Key: u.Key, Conn: s.Dial(t, u.Key)}
}

// NextPush waits for the next push, failing the test after timeout.
func NextPush(t testing.TB, c *clientconn.Conn, timeout time.Duration) clientconn.Push {
	t.Helper()
	select {
	case p, ok := <-c.Pushes():
		if !ok {
			t.Fatalf("connection closed while waiting for a push: %v", c.Err())
		}
		return p
	case <-time.After(timeout):
		t.Fatalf("no push within %v", timeout)
	}
	panic("unreachable")
}

// NextEnvelope skips receipts and drained markers until an envelope
// arrives.
func NextEnvelope(t testing.TB, c *clientconn.Conn, timeout time.Duration) *clientconn.Envelope {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p := NextPush(t, c, time.Until(deadline))
		if p.Envelope != nil {
			return p.Envelope
		}
	}
}

// ExpectNoPush checks that nothing but a drained marker arrives for d.
func ExpectNoPush(t testing.TB, c *clientconn.Conn, d time.Duration) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case p, ok := <-c.Pushes():
			if !ok {
				t.Fatalf("connection closed: %v", c.Err())
			}
			if !p.Drained {
				t.Fatalf("unexpected push %+v", p)
			}
		case <-timer.C:
			return
		}
	}
}
