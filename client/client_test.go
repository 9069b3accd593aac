package client_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// testKey encrypts the clients' local state in tests.
var testKey = client.KeyUnlocker([32]byte{1, 2, 3})

// newClient initialises a home for inv and opens it.
func newClient(t *testing.T, inv invite.Invite, opts client.Options) *client.Client {
	t.Helper()
	home := t.TempDir()
	if err := client.Init(testCtx(t), home, inv, testKey); err != nil {
		t.Fatal(err)
	}
	opts.Unlocker = testKey
	c, err := client.Open(testCtx(t), home, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func register(t *testing.T, c *client.Client, name string) {
	t.Helper()
	if _, err := c.Register(testCtx(t), name); err != nil {
		t.Fatal(err)
	}
}

// collect runs Sync and returns the events it reported.
func collect(t *testing.T, c *client.Client) ([]client.Event, error) {
	t.Helper()
	var evs []client.Event
	err := c.Sync(testCtx(t), func(ev client.Event) { evs = append(evs, ev) })
	return evs, err
}

func texts(evs []client.Event) []string {
	var out []string
	for _, ev := range evs {
		if ev.Kind == client.EventMessage {
			out = append(out, ev.Peer.User+":"+ev.Text)
		}
	}
	return out
}

func TestOpenUninitialised(t *testing.T) {
	_, err := client.Open(testCtx(t), t.TempDir(), client.Options{Unlocker: testKey})
	if !errors.Is(err, client.ErrNotInitialized) {
		t.Fatalf("Open of an empty home: %v", err)
	}
}

func TestSendAndSync(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := newClient(t, s.Invite, client.Options{})
	bob := newClient(t, s.Invite, client.Options{})
	if _, err := alice.SendText(testCtx(t), "bob", "early"); !errors.Is(err, client.ErrNotRegistered) {
		t.Fatalf("send before register: %v", err)
	}
	register(t, alice, "alice")
	register(t, bob, "bob")
	sent, err := alice.SendText(testCtx(t), "bob", "hello")
	if err != nil || sent.Devices != 1 {
		t.Fatalf("send: %+v %v", sent, err)
	}
	evs, err := collect(t, bob)
	if err != nil || len(texts(evs)) != 1 || texts(evs)[0] != "alice:hello" {
		t.Fatalf("bob's sync: %v %+v", err, evs)
	}
	// bob's ack commits asynchronously; the receipt follows it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		evs, err = collect(t, alice)
		if err != nil || len(evs) > 1 || time.Now().After(deadline) {
			t.Fatalf("alice's receipt: %v %+v", err, evs)
		}
		if len(evs) == 1 {
			if evs[0].Kind != client.EventReceipt || evs[0].ID != sent.ID || evs[0].Peer.User != "bob" {
				t.Fatalf("alice's receipt: %+v", evs[0])
			}
			break
		}
	}
	hist, err := alice.History(testCtx(t), "bob", 10)
	if err != nil || len(hist) != 1 || hist[0].Delivered.IsZero() {
		t.Fatalf("history: %+v %v", hist, err)
	}
	// A permanent refusal is reported and leaves nothing in the outbox.
	if _, err := alice.SendText(testCtx(t), "nobody", "x"); !errors.Is(err, client.ErrUnknownUser) {
		t.Fatalf("unknown user: %v", err)
	}
	evs, err = collect(t, alice)
	if err != nil || len(evs) != 0 {
		t.Fatalf("refused message retried: %v %+v", err, evs)
	}
}

func TestOutboxSurvivesUnreachableServer(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	bob := newClient(t, s.Invite, client.Options{})
	register(t, bob, "bob")

	home := t.TempDir()
	if err := client.Init(testCtx(t), home, s.Invite, testKey); err != nil {
		t.Fatal(err)
	}
	alice, err := client.Open(testCtx(t), home, client.Options{Unlocker: testKey})
	if err != nil {
		t.Fatal(err)
	}
	register(t, alice, "alice")
	alice.Close()

	// Point alice at a dead address, as if the server were blocked.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	if err := client.Init(testCtx(t), home, invite.Invite{ServerKey: s.Invite.ServerKey, Addrs: []string{dead}}, testKey); err != nil {
		t.Fatal(err)
	}
	alice, err = client.Open(testCtx(t), home, client.Options{Unlocker: testKey})
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"one", "two"} {
		if _, err := alice.SendText(testCtx(t), "bob", text); err == nil {
			t.Fatal("send to a dead address succeeded")
		}
	}
	alice.Close()

	// A new invite: the outbox goes out, in order, on the next sync.
	if err := client.Init(testCtx(t), home, s.Invite, testKey); err != nil {
		t.Fatal(err)
	}
	alice, err = client.Open(testCtx(t), home, client.Options{Unlocker: testKey})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	evs, err := collect(t, alice)
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	for _, ev := range evs {
		if ev.Kind == client.EventSent {
			sent++
		}
	}
	if sent != 2 {
		t.Fatalf("outbox flush reported %d sent: %+v", sent, evs)
	}
	evs, err = collect(t, bob)
	if got := texts(evs); err != nil || len(got) != 2 || got[0] != "alice:one" || got[1] != "alice:two" {
		t.Fatalf("bob got %v (%v)", got, err)
	}
}

// cutDialer dials normally but, once armed, kills the connection on the
// next write: the write (an ack) never reaches the server.
type cutDialer struct {
	armed atomic.Bool
}

func (d *cutDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &cutConn{Conn: c, d: d}, nil
}

type cutConn struct {
	net.Conn
	d *cutDialer
}

func (c *cutConn) Write(b []byte) (int, error) {
	if c.d.armed.Swap(false) {
		c.Conn.Close()
		return 0, net.ErrClosed
	}
	return c.Conn.Write(b)
}

func TestExactlyOnceToTheAppWhenAckIsLost(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := newClient(t, s.Invite, client.Options{})
	register(t, alice, "alice")
	cut := &cutDialer{}
	bob := newClient(t, s.Invite, client.Options{Dial: client.DialOptions{Dialer: cut}})
	register(t, bob, "bob")
	if _, err := alice.SendText(testCtx(t), "bob", "only once"); err != nil {
		t.Fatal(err)
	}
	// The app sees the message; the ack that follows is lost.
	var shown []string
	err := bob.Sync(testCtx(t), func(ev client.Event) {
		if ev.Kind == client.EventMessage {
			shown = append(shown, ev.Text)
			cut.armed.Store(true)
		}
	})
	if err == nil {
		t.Fatal("sync reported success although its ack was lost")
	}
	// The server redelivers; the app is not told twice.
	if err := bob.Sync(testCtx(t), func(ev client.Event) {
		if ev.Kind == client.EventMessage {
			shown = append(shown, ev.Text)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if len(shown) != 1 {
		t.Fatalf("app shown %v", shown)
	}
	// And this time it was acknowledged: the queue is empty.
	if evs, err := collect(t, bob); err != nil || len(texts(evs)) != 0 {
		t.Fatalf("third sync: %+v %v", evs, err)
	}
}

func TestListenReconnects(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := newClient(t, s.Invite, client.Options{})
	register(t, alice, "alice")
	bob := newClient(t, s.Invite, client.Options{})
	register(t, bob, "bob")

	var mu sync.Mutex
	var got []string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- bob.Listen(ctx, func(ev client.Event) {
			if ev.Kind == client.EventMessage {
				mu.Lock()
				got = append(got, ev.Text)
				mu.Unlock()
			}
		})
	}()
	waitText := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			n := len(got)
			last := ""
			if n > 0 {
				last = got[n-1]
			}
			mu.Unlock()
			if last == want {
				return
			}
		}
		t.Fatalf("listen never showed %q (got %v)", want, got)
	}
	if _, err := alice.SendText(testCtx(t), "bob", "first"); err != nil {
		t.Fatal(err)
	}
	waitText("first")
	// Knock bob off: another connection of his device supersedes the
	// listener's, which then reconnects (and supersedes it back).
	extra, err := bob.Dial(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	extra.Close()
	if _, err := alice.SendText(testCtx(t), "bob", "second"); err != nil {
		t.Fatal(err)
	}
	waitText("second")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Listen returned %v after cancel", err)
	}
}
