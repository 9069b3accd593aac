package client_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/store"
)

func TestOpenUninitialised(t *testing.T) {
	_, err := client.Open(testCtx(t), client.Options{Home: t.TempDir(), Unlocker: testKey})
	if !errors.Is(err, client.ErrNotInitialized) {
		t.Fatalf("Open of an empty home: %v", err)
	}
}

// A home has one engine: a second Open (or Init) of it, and a second Run,
// are refused; Run needs an account.
func TestOneEnginePerHome(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	opts := initHome(t, s.Invite, client.Options{})
	c := open(t, opts)
	if _, err := client.Open(testCtx(t), opts); !errors.Is(err, client.ErrHomeInUse) {
		t.Fatalf("second Open: %v", err)
	}
	if err := client.Init(testCtx(t), opts, s.Invite); !errors.Is(err, client.ErrHomeInUse) {
		t.Fatalf("Init of an open home: %v", err)
	}
	if err := c.Run(testCtx(t)); !errors.Is(err, client.ErrNotRegistered) {
		t.Fatalf("Run before Register: %v", err)
	}
	if _, err := c.Register(testCtx(t), "alice"); err != nil {
		t.Fatal(err)
	}
	runOnline(t, c)
	if err := c.Run(testCtx(t)); !errors.Is(err, client.ErrRunning) {
		t.Fatalf("second Run: %v", err)
	}
}

// Sync alone (no engine left running) sends, receives and follows
// receipts; a message the server refuses for good fails and leaves the
// outbox.
func TestSendAndSync(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice := open(t, initHome(t, s.Invite, client.Options{}))
	bob := newUser(t, s.Invite, "bob", client.Options{})
	if _, err := alice.Send(testCtx(t), "bob", "early"); !errors.Is(err, client.ErrNotRegistered) {
		t.Fatalf("send before register: %v", err)
	}
	if _, err := alice.Register(testCtx(t), "alice"); err != nil {
		t.Fatal(err)
	}
	m := send(t, alice, "bob", "hello")
	syncOK(t, alice)
	if got := message(t, alice, m.Seq); got.State != client.StateSent || got.ServerTime.IsZero() {
		t.Fatalf("after alice's sync: %+v", got)
	}
	bsub := subscribe(t, bob)
	syncOK(t, bob)
	if got := incoming(drain(bsub)); !slices.Equal(got, []string{"hello"}) {
		t.Fatalf("bob's sync showed %q", got)
	}
	// bob's ack commits after his sync returns; the receipt follows it.
	waitFor(t, "delivery receipt", func() bool {
		syncOK(t, alice)
		return message(t, alice, m.Seq).State == client.StateDelivered
	})
	if h := history(t, alice, "bob"); len(h) != 1 || h[0].Delivered.IsZero() {
		t.Fatalf("alice's history: %+v", h)
	}

	// A permanent refusal is reported and leaves nothing in the outbox.
	x := send(t, alice, "nobody", "x")
	syncOK(t, alice)
	if got := message(t, alice, x.Seq); got.State != client.StateFailed || got.ErrCode != "unknown_user" {
		t.Fatalf("message to an unknown user: %+v", got)
	}
	if out, err := alice.Outbox(testCtx(t)); err != nil || len(out) != 0 {
		t.Fatalf("outbox after a refusal: %+v %v", out, err)
	}
}

// Messages written while the server cannot be reached wait in the outbox,
// across a restart, and go out in order once it can.
func TestOutboxSurvivesUnreachableServer(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	bob := newUser(t, s.Invite, "bob", client.Options{})
	opts := initHome(t, s.Invite, client.Options{})
	alice := open(t, opts)
	if _, err := alice.Register(testCtx(t), "alice"); err != nil {
		t.Fatal(err)
	}
	alice.Close()

	// Point alice at a dead address, as if the server were blocked.
	reopen := func(inv invite.Invite) *client.Client {
		t.Helper()
		if err := client.Init(testCtx(t), opts, inv); err != nil {
			t.Fatal(err)
		}
		return open(t, opts)
	}
	alice = reopen(invite.Invite{ServerKey: s.Invite.ServerKey, Addrs: []string{closedAddr(t)}})
	one, two := send(t, alice, "bob", "one"), send(t, alice, "bob", "two")
	if err := alice.Sync(testCtx(t)); !errors.Is(err, client.ErrOffline) {
		t.Fatalf("sync with a dead address: %v", err)
	}
	alice.Close()

	// A new invite: the outbox is still there, and goes out in order.
	alice = reopen(s.Invite)
	out, err := alice.Outbox(testCtx(t))
	if err != nil || len(out) != 2 || out[0].Seq != one.Seq || out[1].Seq != two.Seq {
		t.Fatalf("outbox after a restart: %+v %v", out, err)
	}
	syncOK(t, alice)
	for _, m := range []*client.Message{one, two} {
		if got := message(t, alice, m.Seq); got.State != client.StateSent {
			t.Fatalf("%q after sync: %s", got.Text, got.State)
		}
	}
	bsub := subscribe(t, bob)
	syncOK(t, bob)
	if got := incoming(drain(bsub)); !slices.Equal(got, []string{"one", "two"}) {
		t.Fatalf("bob got %q", got)
	}
}

// The ack of a stored message is lost with the connection: the server
// pushes the message again, and the app is not told twice.
func TestExactlyOnceToTheAppWhenAckIsLost(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice, _ := onlineUser(t, s.Invite, "alice", client.Options{})
	d := &faultDialer{}
	bob, bsub := onlineUser(t, s.Invite, "bob", client.Options{Dial: client.DialOptions{Dialer: d}})

	// bob's next write is the ack of this message: it dies with the
	// connection, and bob cannot reconnect until the test has looked.
	d.cutNextWrite.Store(true)
	release := d.hold()
	defer release()
	m := send(t, alice, "bob", "only once")
	waitMessage(t, bsub, "alice", "only once")
	waitEvent(t, bsub, "bob offline", isState(client.ConnOffline))
	if p := pending(t, s, "bob", time.Now()); len(p) != 1 || p[0].ClientID != m.ID {
		t.Fatalf("the server holds %d messages for bob after the lost ack, want the one", len(p))
	}

	release()
	waitEvent(t, bsub, "bob online", isState(client.ConnOnline))
	syncOK(t, bob) // the engine has received what was queued
	if got := incoming(drain(bsub)); len(got) != 0 {
		t.Fatalf("the app was shown %q again", got)
	}
	if h := history(t, bob, "alice"); len(h) != 1 || h[0].ID != m.ID {
		t.Fatalf("bob's history: %+v", h)
	}
	// And this time it was acknowledged.
	waitFor(t, "an empty queue for bob", func() bool { return len(pending(t, s, "bob", time.Now())) == 0 })
}

// The server stores alice's message but its answer is lost; by the time
// she retries, the server has forgotten the id (its memory of ids lasts the
// message TTL) and stores the resend, new ciphertext under the same id, as
// a new message. The ratchet decrypts it without complaint: only the
// client's own record of what it received keeps the app from seeing the
// message twice.
func TestExactlyOnceWhenTheServerForgotAResentID(t *testing.T) {
	t.Parallel()
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	s := servertest.Start(t, server.Config{Now: now})
	d := &faultDialer{}
	alice := newUser(t, s.Invite, "alice", client.Options{Dial: client.DialOptions{Dialer: d, StallTimeout: time.Second}})
	bob := newUser(t, s.Invite, "bob", client.Options{})
	asub, bsub := subscribe(t, alice), subscribe(t, bob)
	stopBob := runOnline(t, bob)
	runOnline(t, alice)
	// A first message sets up the session: the next send is one request.
	hello := send(t, alice, "bob", "hello")
	waitState(t, asub, hello.Seq, client.StateDelivered)

	// The server stores the next send, but alice hears nothing back: her
	// request stalls, and she cannot reconnect until the test says.
	release := d.hold()
	defer release()
	d.deafen()
	m := send(t, alice, "bob", "once only")
	waitMessage(t, bsub, "alice", "once only")
	waitFor(t, "bob's ack", func() bool { return len(pending(t, s, "bob", now())) == 0 })
	stopBob()
	waitEvent(t, asub, "alice's stalled connection to end", isState(client.ConnOffline))
	skew.Store(int64(31 * 24 * time.Hour)) // past the message TTL
	release()
	waitState(t, asub, m.Seq, client.StateSent)
	p := pending(t, s, "bob", now())
	if len(p) != 1 || p[0].ClientID != m.ID {
		t.Fatalf("the server holds %d messages for bob, want alice's resend", len(p))
	}

	drain(bsub)
	syncOK(t, bob)
	if got := incoming(drain(bsub)); len(got) != 0 {
		t.Fatalf("the resend was shown as %q", got)
	}
	if got := texts(history(t, bob, "alice")); !slices.Equal(got, []string{"hello", "once only"}) {
		t.Fatalf("bob's history: %q", got)
	}
	waitFor(t, "bob's ack of the resend", func() bool { return len(pending(t, s, "bob", now())) == 0 })
}

// Another connection of bob's device takes the server's attention from his
// engine's; the engine reconnects and goes on receiving.
func TestRunReconnectsWhenItsConnectionIsTaken(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice, bob, _, bsub := onlinePair(t, s.Invite)
	send(t, alice, "bob", "first")
	waitMessage(t, bsub, "alice", "first")

	s.Dial(t, client.DeviceKeyForTest(bob)).Close()
	waitEvent(t, bsub, "bob's engine knocked off", isState(client.ConnOffline))
	send(t, alice, "bob", "second")
	waitMessage(t, bsub, "alice", "second")
}

// Calls that need the server while Run runs use the engine's connection:
// none opens another (which would also knock the engine's off, as the
// server keeps one connection per device), and the engine stays online.
func TestCallsDuringRunShareItsConnection(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	_, bsub := onlineUser(t, s.Invite, "bob", client.Options{})
	p := newProxy(t, s.Addr)
	alice, _ := onlineUser(t, via(s, p.Addr()), "alice", client.Options{})
	before, status := p.accepted.Load(), alice.Status()

	u, err := alice.Lookup(testCtx(t), "bob")
	if err != nil || u.Name != "bob" || len(u.Devices) != 1 || !u.Devices[0].HasKeys {
		t.Fatalf("Lookup: %+v %v", u, err)
	}
	if sn, err := alice.SafetyNumber(testCtx(t), "bob"); err != nil || len(sn.Digits) != 60 {
		t.Fatalf("SafetyNumber: %+v %v", sn, err)
	}
	if err := alice.Typing(testCtx(t), "bob", true); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, bsub, "alice typing", func(ev client.Event) bool {
		return ev.Kind == client.EventTyping && ev.Peer == "alice" && ev.Typing
	})
	if n := p.accepted.Load() - before; n != 0 {
		t.Fatalf("calls during Run opened %d connections of their own", n)
	}
	if got := alice.Status(); got != status {
		t.Fatalf("the engine went from %+v to %+v", status, got)
	}
}

// fullStore is a Store whose writes fail, while full is set, as a full
// disk's do.
type fullStore struct {
	client.Store
	full atomic.Bool
}

func (f *fullStore) Update(ctx context.Context, fn func(client.Tx) error) error {
	if f.full.Load() {
		return fmt.Errorf("writing the test's store: %w", client.ErrStorageFull)
	}
	return f.Store.Update(ctx, fn)
}

func newFullStore(t *testing.T) *fullStore {
	st, err := client.NewSQLiteStore(filepath.Join(t.TempDir(), client.StoreFileName))
	if err != nil {
		t.Fatal(err)
	}
	return &fullStore{Store: st}
}

// While bob's disk is full nothing is acknowledged (the server keeps every
// message) and the engine says why it is not receiving; once it has space
// again each message arrives, once.
func TestNothingAcknowledgedWhileStorageFails(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice, asub := onlineUser(t, s.Invite, "alice", client.Options{})
	st := newFullStore(t)
	bob, bsub := onlineUser(t, s.Invite, "bob", client.Options{Store: st})

	st.full.Store(true)
	var sent []*client.Message
	for i := range 3 {
		sent = append(sent, send(t, alice, "bob", fmt.Sprintf("while full %d", i)))
	}
	for _, m := range sent {
		waitState(t, asub, m.Seq, client.StateSent)
	}
	waitEvent(t, bsub, "storage full", isState(client.ConnStorageFull))
	p := pending(t, s, "bob", time.Now())
	if len(p) != len(sent) {
		t.Fatalf("the server holds %d of the %d messages sent while bob's disk was full", len(p), len(sent))
	}
	for i, m := range sent {
		if p[i].ClientID != m.ID {
			t.Fatalf("the server's queue for bob: %d is not %q", i, m.Text)
		}
		if got := message(t, alice, m.Seq); got.State != client.StateSent {
			t.Fatalf("%q is %s while bob's disk is full", got.Text, got.State)
		}
	}
	if got := incoming(drain(bsub)); len(got) != 0 {
		t.Fatalf("bob's app was shown %q, which could not be stored", got)
	}

	st.full.Store(false)
	for _, m := range sent {
		waitState(t, asub, m.Seq, client.StateDelivered)
	}
	syncOK(t, bob)
	want := []string{"while full 0", "while full 1", "while full 2"}
	if got := incoming(drain(bsub)); !slices.Equal(got, want) {
		t.Fatalf("bob's app was shown %q", got)
	}
	if got := texts(history(t, bob, "alice")); !slices.Equal(got, want) {
		t.Fatalf("bob's history: %q", got)
	}
}

// Offline, sending with the same id, or the same text while the first is
// still queued, gives back the queued message instead of queueing another;
// once the server is back the peer gets each message once.
func TestOfflineSendsAreIdempotent(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	bob, _ := onlineUser(t, s.Invite, "bob", client.Options{})
	p := newProxy(t, s.Addr)
	alice := newUser(t, via(s, p.Addr()), "alice", client.Options{})
	asub := subscribe(t, alice)
	p.down.Store(true)
	run(t, alice)
	waitEvent(t, asub, "alice offline", isState(client.ConnOffline))

	id := client.NewMessageID()
	first := send(t, alice, "bob", "same id", client.WithID(id))
	if again := send(t, alice, "bob", "a retry after a crash", client.WithID(id)); again.Seq != first.Seq || again.Text != "same id" || first.ID != id {
		t.Fatalf("the same id queued %+v, then %+v", first, again)
	}
	typed := send(t, alice, "bob", "typed twice")
	if again := send(t, alice, "bob", "typed twice"); again.Seq != typed.Seq {
		t.Fatalf("the same text while queued: %d, then %d", typed.Seq, again.Seq)
	}
	if out, err := alice.Outbox(testCtx(t)); err != nil || len(out) != 2 {
		t.Fatalf("outbox: %+v %v", out, err)
	}

	p.down.Store(false)
	waitState(t, asub, typed.Seq, client.StateDelivered)
	syncOK(t, bob)
	if got := texts(history(t, bob, "alice")); !slices.Equal(got, []string{"same id", "typed twice"}) {
		t.Fatalf("bob got %q", got)
	}
	// Sent, the id still names that message.
	if again := send(t, alice, "bob", "same id", client.WithID(id)); again.Seq != first.Seq || again.State == client.StateQueued {
		t.Fatalf("the same id after sending: %+v", again)
	}
}

// A queued message cancelled before the engine connects never leaves; a
// sent one cannot be cancelled.
func TestCancelledMessageIsNeverSent(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice := newUser(t, s.Invite, "alice", client.Options{})
	bob := newUser(t, s.Invite, "bob", client.Options{})
	keep := send(t, alice, "bob", "keep")
	drop := send(t, alice, "bob", "cancel me")
	if err := alice.Cancel(testCtx(t), drop.Seq); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Message(testCtx(t), drop.Seq); !errors.Is(err, client.ErrNoMessage) {
		t.Fatalf("a cancelled message is still there: %v", err)
	}
	after := send(t, alice, "bob", "after")
	if out, err := alice.Outbox(testCtx(t)); err != nil || len(out) != 2 || out[0].Seq != keep.Seq || out[1].Seq != after.Seq {
		t.Fatalf("outbox after Cancel: %+v %v", out, err)
	}
	syncOK(t, alice)
	bsub := subscribe(t, bob)
	syncOK(t, bob)
	if got := incoming(drain(bsub)); !slices.Equal(got, []string{"keep", "after"}) {
		t.Fatalf("bob got %q", got)
	}
	if err := alice.Cancel(testCtx(t), keep.Seq); !errors.Is(err, client.ErrAlreadySent) {
		t.Fatalf("Cancel of a sent message: %v", err)
	}
	received := history(t, bob, "alice")[0]
	if err := bob.Cancel(testCtx(t), received.Seq); !errors.Is(err, client.ErrAlreadySent) {
		t.Fatalf("Cancel of a received message: %v", err)
	}
	if got := texts(history(t, alice, "bob")); !slices.Equal(got, []string{"keep", "after"}) {
		t.Fatalf("alice's history: %q", got)
	}
}

// bob's queue on the server is full: alice's later messages to bob wait
// behind the refused one, untried, while hers to carol go through; when
// bob's queue has room they follow, in order.
func TestFullQueueHoldsBackOnlyItsRecipient(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t, server.Config{QueueLimit: 3, SenderShare: -1}) // one sender fills the queue
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	alice := newUser(t, s.Invite, "alice", client.Options{Now: clock})
	bob := newUser(t, s.Invite, "bob", client.Options{})
	_, csub := onlineUser(t, s.Invite, "carol", client.Options{})
	// Queued before alice's engine starts, so that its first pass over the
	// outbox meets bob's full queue.
	var toBob []*client.Message
	for i := range 5 {
		toBob = append(toBob, send(t, alice, "bob", fmt.Sprintf("to bob %d", i)))
	}
	send(t, alice, "carol", "to carol")
	run(t, alice)
	waitMessage(t, csub, "alice", "to carol")
	for i, m := range toBob {
		got := message(t, alice, m.Seq)
		switch {
		case i < 3 && got.State != client.StateSent:
			t.Fatalf("%q: %s, want sent", got.Text, got.State)
		case i == 3 && (got.State != client.StateQueued || got.Err == ""):
			t.Fatalf("%q, refused by bob's full queue: %s %q", got.Text, got.State, got.Err)
		case i == 4 && (got.State != client.StateQueued || got.Err != ""):
			t.Fatalf("%q was tried before the one ahead of it went: %s %q", got.Text, got.State, got.Err)
		}
	}

	bsub := subscribe(t, bob)
	run(t, bob)
	waitMessage(t, bsub, "alice", "to bob 2")
	waitFor(t, "room in bob's queue", func() bool { return len(pending(t, s, "bob", time.Now())) == 0 })
	// The server said to try again in a minute: a minute later, another
	// message (which wakes the outbox) goes out after the held ones.
	skew.Store(int64(61 * time.Second))
	send(t, alice, "bob", "to bob 5")
	waitMessage(t, bsub, "alice", "to bob 5")
	syncOK(t, bob)
	want := []string{"to bob 0", "to bob 1", "to bob 2", "to bob 3", "to bob 4", "to bob 5"}
	if got := texts(history(t, bob, "alice")); !slices.Equal(got, want) {
		t.Fatalf("bob got %q", got)
	}
}

// With read receipts off, MarkRead tells the sender nothing: the message
// stays delivered. Turned back on, the next one is reported read.
func TestNoReadReceiptsWhenTurnedOff(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice, bob, asub, bsub := onlinePair(t, s.Invite)
	if err := bob.SetReadReceipts(testCtx(t), false); err != nil || bob.ReadReceipts() {
		t.Fatalf("SetReadReceipts(false): %v, now %v", err, bob.ReadReceipts())
	}
	readAndReply := func(text string) *client.Message {
		t.Helper()
		m := send(t, alice, "bob", text)
		waitMessage(t, bsub, "alice", text)
		waitState(t, asub, m.Seq, client.StateDelivered)
		if n, err := bob.MarkRead(testCtx(t), "alice"); err != nil || n != 1 {
			t.Fatalf("MarkRead = %d, %v", n, err)
		}
		// bob's outbox keeps his order to alice: a receipt queued by
		// MarkRead reaches her before this reply.
		send(t, bob, "alice", "re: "+text)
		waitMessage(t, asub, "bob", "re: "+text)
		return message(t, alice, m.Seq)
	}
	if m := readAndReply("unreported"); m.State != client.StateDelivered || !m.Read.IsZero() {
		t.Fatalf("with read receipts off, alice's message became %s (read at %v)", m.State, m.Read)
	}
	if convs, err := bob.Conversations(testCtx(t)); err != nil || len(convs) != 1 || convs[0].Unread != 0 {
		t.Fatalf("bob's conversations after MarkRead: %+v %v", convs, err)
	}
	if err := bob.SetReadReceipts(testCtx(t), true); err != nil {
		t.Fatal(err)
	}
	if m := readAndReply("reported"); m.State != client.StateRead {
		t.Fatalf("with read receipts on, alice's message is %s", m.State)
	}
}

// A read receipt counts only for messages sent to whoever sends it: carol
// cannot mark read what alice sent bob.
func TestOnlyTheRecipientCanMarkRead(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice := newUser(t, s.Invite, "alice", client.Options{})
	newUser(t, s.Invite, "bob", client.Options{})
	carol := newUser(t, s.Invite, "carol", client.Options{})
	asub, csub := subscribe(t, alice), subscribe(t, carol)
	runOnline(t, alice)
	runOnline(t, carol)
	toBob, toCarol := send(t, alice, "bob", "for bob"), send(t, alice, "carol", "for carol")
	waitState(t, asub, toBob.Seq, client.StateSent)
	waitMessage(t, csub, "alice", "for carol")
	waitState(t, asub, toCarol.Seq, client.StateDelivered)

	if err := client.QueueReadReceiptForTest(testCtx(t), carol, "alice", toBob.ID, toCarol.ID); err != nil {
		t.Fatal(err)
	}
	waitState(t, asub, toCarol.Seq, client.StateRead)
	if m := message(t, alice, toBob.Seq); m.State != client.StateSent || !m.Read.IsZero() {
		t.Fatalf("carol's receipt made alice's message to bob %s", m.State)
	}
}

// pending lists the messages the server holds for user's first device
// (at the server's time now).
func pending(t testing.TB, s *servertest.Server, user string, now time.Time) []store.Message {
	t.Helper()
	items, err := s.Store.Pending(testCtx(t), store.DeviceAddr{User: user, Device: 1}, 0, 1000, now)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []store.Message
	for _, it := range items {
		if it.Kind == store.KindMessage {
			msgs = append(msgs, it)
		}
	}
	return msgs
}
