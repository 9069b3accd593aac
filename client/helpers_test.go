package client_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/invite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// eventTimeout only turns a hang into a failure.
const eventTimeout = 20 * time.Second

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// testKey seals the clients' local state in tests.
var testKey = client.KeyUnlocker([32]byte{1, 2, 3})

// initHome prepares a new home for inv and returns its options.
func initHome(t testing.TB, inv invite.Invite, opts client.Options) client.Options {
	t.Helper()
	if opts.Home == "" {
		opts.Home = filepath.Join(t.TempDir(), "home")
	}
	if opts.Unlocker == nil {
		opts.Unlocker = testKey
	}
	if err := client.Init(testCtx(t), opts, inv); err != nil {
		t.Fatal(err)
	}
	return opts
}

// open opens a client; it is closed when the test ends.
func open(t testing.TB, opts client.Options) *client.Client {
	t.Helper()
	c, err := client.Open(testCtx(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newUser makes a client registered as name (not running).
func newUser(t testing.TB, inv invite.Invite, name string, opts client.Options) *client.Client {
	t.Helper()
	c := open(t, initHome(t, inv, opts))
	if _, err := c.Register(testCtx(t), name); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return c
}

// run runs c's engine until the test ends (or stop is called).
func run(t testing.TB, c *client.Client) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// asDevice stops c's engine (stop), runs fn on a connection of c's own
// device, and starts the engine again, returning its new stop. The engine
// stops first because, superseded by the connection, it would dial back
// in at once and take the device's place from it.
func asDevice(t testing.TB, s *servertest.Server, c *client.Client, stop func(), fn func(*clientconn.Conn)) (restarted func()) {
	t.Helper()
	stop()
	conn := s.Dial(t, client.DeviceKeyForTest(c))
	fn(conn)
	conn.Close()
	return runOnline(t, c)
}

// runOnline runs c and waits until it is online.
func runOnline(t testing.TB, c *client.Client) (stop func()) {
	t.Helper()
	sub := c.Subscribe()
	defer sub.Close()
	stop = run(t, c)
	waitEvent(t, sub, "online", func(ev client.Event) bool {
		return ev.Kind == client.EventState && ev.Status.State == client.ConnOnline
	})
	return stop
}

// waitEvent waits for an event that matches, failing the test after
// eventTimeout.
func waitEvent(t testing.TB, sub *client.Subscription, what string, match func(client.Event) bool) client.Event {
	t.Helper()
	timer := time.NewTimer(eventTimeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-sub.Events():
			if !ok {
				t.Fatalf("waiting for %s: subscription closed", what)
			}
			if match(ev) {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no %s within %v", what, eventTimeout)
		}
	}
}

// waitMessage waits for a new message from peer with text.
func waitMessage(t testing.TB, sub *client.Subscription, peer, text string) *client.Message {
	t.Helper()
	return waitEvent(t, sub, fmt.Sprintf("message %q from %s", text, peer), func(ev client.Event) bool {
		return ev.Kind == client.EventMessage && !ev.Message.Outgoing && ev.Message.Peer == peer && ev.Message.Text == text
	}).Message
}

// waitState waits until message seq reaches state.
func waitState(t testing.TB, sub *client.Subscription, seq uint64, state client.MessageState) *client.Message {
	t.Helper()
	return waitEvent(t, sub, fmt.Sprintf("message %d %s", seq, state), func(ev client.Event) bool {
		return ev.Kind == client.EventUpdate && ev.Message.Seq == seq && ev.Message.State == state
	}).Message
}

// startServer is servertest.Start with the defaults the client tests use.
func startServer(t testing.TB) *servertest.Server {
	t.Helper()
	return servertest.Start(t, servertestConfig())
}

// via is s's invite with addr (a proxy in front of s) as its only address.
func via(s *servertest.Server, addr string) invite.Invite {
	return invite.Invite{ServerKey: s.Invite.ServerKey, Addrs: []string{addr}}
}

// closedAddr is a loopback address where nothing listens (any more).
func closedAddr(t testing.TB) string {
	p := newProxy(t, "")
	p.ln.Close()
	return p.Addr()
}

// onlineUser is newUser, running until the test ends, with a subscription
// to its events from before it went online.
func onlineUser(t testing.TB, inv invite.Invite, name string, opts client.Options) (*client.Client, *client.Subscription) {
	t.Helper()
	c := newUser(t, inv, name, opts)
	sub := subscribe(t, c)
	runOnline(t, c)
	return c, sub
}

// subscribe subscribes to c's events until the test ends.
func subscribe(t testing.TB, c *client.Client) *client.Subscription {
	sub := c.Subscribe()
	t.Cleanup(sub.Close)
	return sub
}

// onlinePair registers alice and bob, runs their engines until the test
// ends, and returns them with subscriptions to their events from before
// they went online.
func onlinePair(t testing.TB, inv invite.Invite) (alice, bob *client.Client, asub, bsub *client.Subscription) {
	t.Helper()
	alice, asub = onlineUser(t, inv, "alice", client.Options{})
	bob, bsub = onlineUser(t, inv, "bob", client.Options{})
	return alice, bob, asub, bsub
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// send queues a text, failing the test if Send fails.
func send(t testing.TB, c *client.Client, to, text string, opts ...client.SendOption) *client.Message {
	t.Helper()
	m, err := c.Send(testCtx(t), to, text, opts...)
	if err != nil {
		t.Fatalf("send %q to %s: %v", text, to, err)
	}
	return m
}

// syncOK runs c.Sync, which must succeed.
func syncOK(t testing.TB, c *client.Client) {
	t.Helper()
	if err := c.Sync(testCtx(t)); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

// drain returns the events waiting in sub, without waiting for more.
func drain(sub *client.Subscription) []client.Event {
	var evs []client.Event
	for {
		select {
		case ev, ok := <-sub.Events():
			if !ok {
				return evs
			}
			evs = append(evs, ev)
		default:
			return evs
		}
	}
}

// incoming lists the texts of the messages that evs say arrived.
func incoming(evs []client.Event) []string {
	var out []string
	for _, ev := range evs {
		if ev.Kind == client.EventMessage && !ev.Message.Outgoing {
			out = append(out, ev.Message.Text)
		}
	}
	return out
}

// history returns c's whole conversation with peer, oldest first.
func history(t testing.TB, c *client.Client, peer string) []client.Message {
	t.Helper()
	msgs, _, err := c.History(testCtx(t), peer, client.HistoryQuery{Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// texts lists the messages' texts.
func texts(msgs []client.Message) []string {
	out := []string{}
	for _, m := range msgs {
		out = append(out, m.Text)
	}
	return out
}

// message reads message seq of c.
func message(t testing.TB, c *client.Client, seq uint64) *client.Message {
	t.Helper()
	m, err := c.Message(testCtx(t), seq)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// waitFor polls cond until it holds, failing the test after eventTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(eventTimeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, eventTimeout)
		}
	}
}

// isState matches the engine's change to state.
func isState(state client.ConnState) func(client.Event) bool {
	return func(ev client.Event) bool { return ev.Kind == client.EventState && ev.Status.State == state }
}
