package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const wait = 10 * time.Second

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func mustSend(t *testing.T, from *servertest.User, to string, id clientconn.MessageID, payload string) clientconn.SendResult {
	t.Helper()
	r, err := from.Send(ctx(t), to, id, []byte(payload))
	if err != nil {
		t.Fatalf("%s → %s: %v", from.Name, to, err)
	}
	return r
}

func TestOnlineDeliveryAndReceipt(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := s.Register(t, "alice")
	bob := s.Register(t, "bob")

	id := clientconn.NewMessageID()
	r := mustSend(t, alice, "bob", id, "hi bob")
	if r.Devices != 1 || r.Duplicate {
		t.Fatalf("send result %+v", r)
	}
	env := servertest.NextEnvelope(t, bob.Conn, wait)
	if string(env.Payload) != "hi bob" || env.ID != id || env.From != (clientconn.DeviceAddr{User: "alice", Device: 1}) || env.Seq == 0 {
		t.Fatalf("envelope %+v", env)
	}
	if !env.ServerTime.Equal(r.ServerTime) {
		t.Fatalf("server time %v, ack said %v", env.ServerTime, r.ServerTime)
	}
	if err := bob.Ack(env.Seq); err != nil {
		t.Fatal(err)
	}
	// The receipt reaches the sender, naming the delivering device.
	var rc *clientconn.Receipt
	for rc == nil {
		rc = servertest.NextPush(t, alice.Conn, wait).Receipt
	}
	if rc.ID != id || rc.Recipient != (clientconn.DeviceAddr{User: "bob", Device: 1}) {
		t.Fatalf("receipt %+v", rc)
	}
	if err := alice.Ack(rc.Seq); err != nil {
		t.Fatal(err)
	}
	// Acknowledged items are gone: new connections get nothing.
	bob2 := s.Reconnect(t, bob)
	servertest.ExpectNoPush(t, bob2.Conn, 300*time.Millisecond)
	alice2 := s.Reconnect(t, alice)
	servertest.ExpectNoPush(t, alice2.Conn, 300*time.Millisecond)
}

func TestOfflineDeliveryInOrder(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := s.Register(t, "alice")
	carol := s.Register(t, "carol")
	bob := s.Register(t, "bob")
	bob.Close() // offline

	for i := range 5 {
		mustSend(t, alice, "bob", clientconn.NewMessageID(), fmt.Sprintf("a%d", i))
		mustSend(t, carol, "bob", clientconn.NewMessageID(), fmt.Sprintf("c%d", i))
	}
	bob = s.Reconnect(t, bob)
	var fromA, fromC []string
	for len(fromA)+len(fromC) < 10 {
		p := servertest.NextPush(t, bob.Conn, wait)
		if p.Drained {
			t.Fatalf("drained after %d messages", len(fromA)+len(fromC))
		}
		if p.Envelope == nil {
			continue
		}
		if p.Envelope.From.User == "alice" {
			fromA = append(fromA, string(p.Envelope.Payload))
		} else {
			fromC = append(fromC, string(p.Envelope.Payload))
		}
	}
	if fmt.Sprint(fromA) != "[a0 a1 a2 a3 a4]" || fmt.Sprint(fromC) != "[c0 c1 c2 c3 c4]" {
		t.Fatalf("order per sender: %v %v", fromA, fromC)
	}
	if p := servertest.NextPush(t, bob.Conn, wait); !p.Drained {
		t.Fatalf("want drained marker, got %+v", p)
	}
}

func TestThousandMessagesInOrder(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := s.Register(t, "alice")
	bob := s.Register(t, "bob")
	const n = 1000
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := alice.Send(context.Background(), "bob", clientconn.NewMessageID(), fmt.Appendf(nil, "%d", i)); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	var seqs []uint64
	for i := 0; i < n; {
		p := servertest.NextPush(t, bob.Conn, wait)
		if p.Envelope == nil {
			continue
		}
		if got := string(p.Envelope.Payload); got != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q", i, got)
		}
		seqs = append(seqs, p.Envelope.Seq)
		// Acknowledge in batches, as a client does, keeping the window open.
		if len(seqs) == 64 {
			if err := bob.Ack(seqs...); err != nil {
				t.Fatal(err)
			}
			seqs = seqs[:0]
		}
		i++
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestDuplicateSuppressed(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := s.Register(t, "alice")
	bob := s.Register(t, "bob")
	id := clientconn.NewMessageID()
	first := mustSend(t, alice, "bob", id, "once")
	// The resend after a (simulated) lost ack, on a new connection.
	alice = s.Reconnect(t, alice)
	again := mustSend(t, alice, "bob", id, "once")
	if first.Duplicate || !again.Duplicate || !again.ServerTime.Equal(first.ServerTime) {
		t.Fatalf("first %+v, again %+v", first, again)
	}
	env := servertest.NextEnvelope(t, bob.Conn, wait)
	if env.ID != id {
		t.Fatalf("got %+v", env)
	}
	servertest.ExpectNoPush(t, bob.Conn, 300*time.Millisecond)
	// The same id from another sender is a different message.
	carol := s.Register(t, "carol")
	if r := mustSend(t, carol, "bob", id, "carol's"); r.Duplicate {
		t.Fatal("id collision across senders treated as duplicate")
	}
}

func TestSendErrors(t *testing.T) {
	s := servertest.Start(t, server.Config{QueueLimit: 3, SenderShare: -1}) // one sender fills the queue
	alice := s.Register(t, "alice")
	bob := s.Register(t, "bob")
	bob.Close()

	_, err := alice.Send(ctx(t), "nobody", clientconn.NewMessageID(), []byte("x"))
	if !errors.Is(err, clientconn.ErrUnknownUser) {
		t.Fatalf("unknown recipient: %v", err)
	}
	_, err = alice.Send(ctx(t), "not a name!", clientconn.NewMessageID(), []byte("x"))
	if !errors.Is(err, clientconn.ErrUnknownUser) {
		t.Fatalf("invalid recipient: %v", err)
	}
	_, err = alice.Send(ctx(t), "bob", clientconn.NewMessageID(), make([]byte, 300<<10))
	if !errors.Is(err, clientconn.ErrTooLarge) {
		t.Fatalf("oversized payload: %v", err)
	}

	for i := range 3 {
		mustSend(t, alice, "bob", clientconn.NewMessageID(), fmt.Sprint(i))
	}
	_, err = alice.Send(ctx(t), "bob", clientconn.NewMessageID(), []byte("overflow"))
	var se *clientconn.ServerError
	if !errors.Is(err, clientconn.ErrQueueFull) || !errors.As(err, &se) || se.RetryAfter == 0 || !se.Temporary() {
		t.Fatalf("queue full: %v", err)
	}
	// Draining the queue makes room again.
	bob = s.Reconnect(t, bob)
	for range 3 {
		env := servertest.NextEnvelope(t, bob.Conn, wait)
		if err := bob.Ack(env.Seq); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(wait)
	for {
		_, err := alice.Send(ctx(t), "bob", clientconn.NewMessageID(), []byte("room now"))
		if err == nil {
			break
		}
		if !errors.Is(err, clientconn.ErrQueueFull) || time.Now().After(deadline) {
			t.Fatalf("after drain: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // acks commit asynchronously
	}
	// The connection survived every error.
	if _, err := alice.Ping(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

func TestRegistration(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	s.Register(t, "alice")

	key := servertest.NewKey(t)
	c := s.Dial(t, key)
	if _, ok := c.Device(); ok {
		t.Fatal("fresh key reported as registered")
	}
	if _, err := c.Send(ctx(t), "alice", clientconn.NewMessageID(), nil); !errors.Is(err, clientconn.ErrUnauthenticated) {
		t.Fatalf("send before register: %v", err)
	}
	if _, err := c.Lookup(ctx(t), "alice"); !errors.Is(err, clientconn.ErrUnauthenticated) {
		t.Fatalf("lookup before register: %v", err)
	}
	if _, err := c.Register(ctx(t), "ALICE"); !errors.Is(err, clientconn.ErrUsernameTaken) {
		t.Fatalf("taken (case-insensitive): %v", err)
	}
	for _, bad := range []string{"", "ab", "9lives", "a b", "admin", string(make([]byte, 100))} {
		if _, err := c.Register(ctx(t), bad); !errors.Is(err, clientconn.ErrUsernameInvalid) {
			t.Fatalf("register %q: %v", bad, err)
		}
	}
	d, err := c.Register(ctx(t), "Dave_2")
	if err != nil || d != (clientconn.DeviceAddr{User: "dave_2", Device: 1}) {
		t.Fatalf("register: %+v %v", d, err)
	}
	if _, err := c.Register(ctx(t), "another"); !errors.Is(err, clientconn.ErrAlreadyRegistered) {
		t.Fatalf("second register: %v", err)
	}
	u, err := c.Lookup(ctx(t), "Alice")
	if err != nil || u.Name != "alice" || len(u.Devices) != 1 || u.Devices[0].Device != 1 {
		t.Fatalf("lookup: %+v %v", u, err)
	}
	if _, err := c.Lookup(ctx(t), "zed"); !errors.Is(err, clientconn.ErrUnknownUser) {
		t.Fatalf("lookup unknown: %v", err)
	}
	// A new connection with the same key is recognised in the handshake.
	if d, ok := s.Dial(t, key).Device(); !ok || d.User != "dave_2" {
		t.Fatalf("reconnect: %+v %v", d, ok)
	}
}

func TestSignupRateLimit(t *testing.T) {
	s := servertest.Start(t, server.Config{SignupBurst: 2, SignupRate: 0.001})
	s.Register(t, "one")
	s.Register(t, "two")
	c := s.Dial(t, servertest.NewKey(t))
	_, err := c.Register(ctx(t), "three")
	var se *clientconn.ServerError
	if !errors.Is(err, clientconn.ErrRateLimited) || !errors.As(err, &se) || se.RetryAfter == 0 {
		t.Fatalf("third sign-up: %v", err)
	}
}

func TestMultiDeviceFanOut(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := s.Register(t, "alice")
	bob1 := s.Register(t, "bob")
	key2 := servertest.NewKey(t)
	if _, err := s.Store.AddDevice(ctx(t), "bob", key2.Public, time.Now()); err != nil {
		t.Fatal(err)
	}
	bob2 := s.Dial(t, key2)
	if d, ok := bob2.Device(); !ok || d.Device != 2 {
		t.Fatalf("second device: %+v %v", d, ok)
	}
	r := mustSend(t, alice, "bob", clientconn.NewMessageID(), "both")
	if r.Devices != 2 {
		t.Fatalf("queued for %d devices", r.Devices)
	}
	e1 := servertest.NextEnvelope(t, bob1.Conn, wait)
	e2 := servertest.NextEnvelope(t, bob2, wait)
	if string(e1.Payload) != "both" || string(e2.Payload) != "both" || e1.Seq == e2.Seq {
		t.Fatalf("copies %+v %+v", e1, e2)
	}
	// Each device's ack produces its own receipt; a device cannot ack the
	// other's copy.
	if err := bob2.Ack(e1.Seq); err != nil {
		t.Fatal(err)
	}
	if err := bob1.Ack(e1.Seq); err != nil {
		t.Fatal(err)
	}
	got := map[uint32]bool{}
	for len(got) < 1 {
		if rc := servertest.NextPush(t, alice.Conn, wait).Receipt; rc != nil {
			got[rc.Recipient.Device] = true
		}
	}
	if !got[1] {
		t.Fatalf("receipts %v", got)
	}
	servertest.ExpectNoPush(t, alice.Conn, 300*time.Millisecond)
	// bob2's copy is still queued for it.
	bob2again := s.Dial(t, key2)
	if e := servertest.NextEnvelope(t, bob2again, wait); e.Seq != e2.Seq {
		t.Fatalf("bob2's copy: %+v", e)
	}
}

func TestEphemeral(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := s.Register(t, "alice")
	bob := s.Register(t, "bob")
	n, err := alice.SendEphemeral(ctx(t), "bob", clientconn.NewMessageID(), []byte("typing"))
	if err != nil || n != 1 {
		t.Fatalf("ephemeral to online: %d %v", n, err)
	}
	env := servertest.NextEnvelope(t, bob.Conn, wait)
	if !env.Ephemeral || env.Seq != 0 || string(env.Payload) != "typing" {
		t.Fatalf("ephemeral envelope %+v", env)
	}
	bob.Close()
	// The server notices the disconnect asynchronously.
	for deadline := time.Now().Add(wait); ; time.Sleep(10 * time.Millisecond) {
		n, err = alice.SendEphemeral(ctx(t), "bob", clientconn.NewMessageID(), []byte("typing"))
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ephemeral to offline device reached %d devices", n)
		}
	}
	if _, err := alice.SendEphemeral(ctx(t), "nobody", clientconn.NewMessageID(), nil); !errors.Is(err, clientconn.ErrUnknownUser) {
		t.Fatalf("ephemeral to unknown: %v", err)
	}
	// Never stored: bob finds nothing when he returns.
	bob = s.Reconnect(t, bob)
	servertest.ExpectNoPush(t, bob.Conn, 300*time.Millisecond)
}

func TestMessageTTL(t *testing.T) {
	var now = time.Now()
	clock := func() time.Time { return now }
	s := servertest.Start(t, server.Config{TTL: time.Hour, Now: clock})
	alice := s.Register(t, "alice")
	bob := s.Register(t, "bob")
	bob.Close()
	mustSend(t, alice, "bob", clientconn.NewMessageID(), "stale")
	now = now.Add(2 * time.Hour)
	bob = s.Reconnect(t, bob)
	if p := servertest.NextPush(t, bob.Conn, wait); !p.Drained {
		t.Fatalf("expired message delivered: %+v", p)
	}
	if n, err := s.Store.Expire(ctx(t), clock()); err != nil || n != 1 {
		t.Fatalf("expire: %d %v", n, err)
	}
}

func TestSupersededConnection(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := s.Register(t, "alice")
	bob := s.Register(t, "bob")
	bob2 := s.Reconnect(t, bob)
	select {
	case <-bob.Done():
	case <-time.After(wait):
		t.Fatal("old connection not closed when the device reconnected")
	}
	mustSend(t, alice, "bob", clientconn.NewMessageID(), "to the new one")
	if e := servertest.NextEnvelope(t, bob2.Conn, wait); string(e.Payload) != "to the new one" {
		t.Fatalf("got %+v", e)
	}
}

func TestGracefulShutdownAnswersAcceptedSends(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := s.Register(t, "alice")
	s.Register(t, "bob").Close()
	// Fire sends and shut down mid-stream: every send answered OK must be
	// in the store; the others get an error, never silence.
	const n = 200
	results := make(chan error, n)
	ids := make([]clientconn.MessageID, n)
	go func() {
		for i := range n {
			ids[i] = clientconn.NewMessageID()
			_, err := alice.Send(context.Background(), "bob", ids[i], bytes.Repeat([]byte{'x'}, 100))
			results <- err
		}
	}()
	for range n / 4 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	ok := n / 4
	s.Stop()
	for range n - n/4 {
		if err := <-results; err == nil {
			ok++
		}
	}
	t.Logf("%d of %d sends acknowledged before shutdown", ok, n)
	// Reopen the store and count what bob would get.
	st := s.ReopenStore(t)
	msgs, err := st.Pending(ctx(t), bobAddr, 0, 1000, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < ok {
		t.Fatalf("%d sends acknowledged, %d stored", ok, len(msgs))
	}
}

var bobAddr = store.DeviceAddr{User: "bob", Device: 1}

// One sender may have only its share of a device's queue waiting: past
// it that sender gets QUEUE_FULL naming the recipient, and others still
// get through.
func TestSenderShare(t *testing.T) {
	s := servertest.Start(t, server.Config{QueueLimit: 8}) // a share of 2
	alice, bob, carol := s.Register(t, "alice"), s.Register(t, "bob"), s.Register(t, "carol")
	bob.Close()
	for i := range 2 {
		mustSend(t, alice, "bob", clientconn.NewMessageID(), fmt.Sprint(i))
	}
	_, err := alice.Send(ctx(t), "bob", clientconn.NewMessageID(), []byte("a third"))
	if !errors.Is(err, clientconn.ErrQueueFull) || !strings.Contains(err.Error(), `"bob"`) || !strings.Contains(err.Error(), "from you") {
		t.Fatalf("past alice's share of bob's queue: %v, want QUEUE_FULL naming bob, from you", err)
	}
	mustSend(t, carol, "bob", clientconn.NewMessageID(), "carol gets in")
}
