package client_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/content"
	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/e2e/senderkey"
	"github.com/magpie-im/magpie/e2e/xeddsa"
	"github.com/magpie-im/magpie/group"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/store"
)

// waitGroupMessage waits for a message in group conversation peer from
// sender with text.
func waitGroupMessage(t testing.TB, sub *client.Subscription, peer, sender, text string) *client.Message {
	t.Helper()
	return waitEvent(t, sub, fmt.Sprintf("%q from %s in %s", text, sender, peer), func(ev client.Event) bool {
		return ev.Kind == client.EventMessage && !ev.Message.Outgoing && ev.Message.Peer == peer &&
			ev.Message.Sender == sender && ev.Message.Text == text
	}).Message
}

// waitGroupChange waits until c's copy of a group satisfies cond.
func waitGroupChange(t testing.TB, c *client.Client, id client.GroupID, what string, cond func(*client.Group) bool) *client.Group {
	t.Helper()
	var g *client.Group
	waitFor(t, what, func() bool {
		var err error
		g, err = c.Group(testCtx(t), id)
		return err == nil && cond(g)
	})
	return g
}

func members(g *client.Group) []string {
	var out []string
	for _, m := range g.Members {
		out = append(out, m.User+":"+m.Role)
	}
	return out
}

// sent sends text to peer and waits until the server has it.
func sent(t testing.TB, c *client.Client, peer, text string) *client.Message {
	t.Helper()
	m := send(t, c, peer, text)
	m, err := c.WaitSent(testCtx(t), m.Seq)
	if err != nil || m.State == client.StateQueued || m.State == client.StateFailed {
		t.Fatalf("sending %q to %s: %v (state %s, %s)", text, peer, err, m.State, m.Err)
	}
	return m
}

// queuedCiphertext returns the ciphertext of group message id waiting in
// the server's queue for dev (a member that is offline): what a member
// gets, and what anyone who taps the server would see.
func queuedCiphertext(t testing.TB, s *servertest.Server, dev client.DeviceAddr, id client.MessageID) []byte {
	t.Helper()
	msgs, err := s.Store.Pending(testCtx(t), store.DeviceAddr{User: dev.User, Device: dev.Device}, 0, 1000, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.Kind == store.KindGroupMessage && m.ClientID == id {
			return m.Payload
		}
	}
	t.Fatalf("message %s is not queued for %s/%d", id, dev.User, dev.Device)
	return nil
}

func account(t testing.TB, c *client.Client) client.DeviceAddr {
	d, ok := c.Account()
	if !ok {
		t.Fatal("no account")
	}
	return d
}

func TestGroupConversation(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice, asub := onlineUser(t, s.Invite, "alice", client.Options{})
	bob, bsub := onlineUser(t, s.Invite, "bob", client.Options{})
	carol, csub := onlineUser(t, s.Invite, "carol", client.Options{})
	ctx := testCtx(t)

	g, err := alice.CreateGroup(ctx, "Harbour", []string{"Bob", "carol", "alice", "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"alice:owner", "bob:member", "carol:member"}; !slices.Equal(members(g), want) {
		t.Fatalf("members %v, want %v", members(g), want)
	}
	if g.Role != client.RoleOwner || !g.CanSend || g.Name != "Harbour" || g.Peer != "group:"+g.ID.String() {
		t.Fatalf("alice's group: %+v", g)
	}
	// bob and carol learn of the group from the server's push.
	for _, c := range []*client.Client{bob, carol} {
		bg := waitGroupChange(t, c, g.ID, "the new group", func(*client.Group) bool { return true })
		if bg.Name != "Harbour" || bg.Role != client.RoleMember || !slices.Equal(members(bg), members(g)) {
			t.Fatalf("a member's copy of the group: %+v", bg)
		}
	}

	m := send(t, alice, g.Peer, "hello, group")
	if m.Peer != g.Peer || m.Sender != "alice" || !m.Outgoing {
		t.Fatalf("alice's message: %+v", m)
	}
	for _, sub := range []*client.Subscription{bsub, csub} {
		got := waitGroupMessage(t, sub, g.Peer, "alice", "hello, group")
		if got.ID != m.ID || !got.Unread {
			t.Fatalf("received: %+v", got)
		}
	}
	// Delivery receipts aggregate per member: delivered to 2 of 2.
	waitEvent(t, asub, "delivered to both", func(ev client.Event) bool {
		return ev.Kind == client.EventUpdate && ev.Message.Seq == m.Seq && ev.Message.State == client.StateDelivered
	})
	got := message(t, alice, m.Seq)
	slices.Sort(got.DeliveredTo)
	if got.Recipients != 2 || !slices.Equal(got.DeliveredTo, []string{"bob", "carol"}) || len(got.ReadBy) != 0 {
		t.Fatalf("after delivery: recipients %d, delivered to %v, read by %v", got.Recipients, got.DeliveredTo, got.ReadBy)
	}
	// Read by 1 of 2, then 2 of 2.
	if _, err := bob.MarkRead(ctx, g.Peer); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(t, asub, "read by bob", func(ev client.Event) bool {
		return ev.Kind == client.EventUpdate && ev.Message.Seq == m.Seq && len(ev.Message.ReadBy) == 1
	})
	if ev.Message.ReadBy[0] != "bob" || ev.Message.State != client.StateDelivered {
		t.Fatalf("after bob read it: %+v", ev.Message)
	}
	if _, err := carol.MarkRead(ctx, g.Peer); err != nil {
		t.Fatal(err)
	}
	waitState(t, asub, m.Seq, client.StateRead)

	// Everyone can write; the group's conversation has the notice first.
	send(t, bob, g.Peer, "hi from bob")
	waitGroupMessage(t, asub, g.Peer, "bob", "hi from bob")
	waitGroupMessage(t, csub, g.Peer, "bob", "hi from bob")
	h := history(t, carol, g.Peer)
	if len(h) != 3 || !h[0].Notice || h[0].Text != `alice created the group "Harbour"` || h[0].Sender != "alice" ||
		h[1].Text != "hello, group" || h[2].Sender != "bob" {
		t.Fatalf("carol's history: %+v", h)
	}
	// Conversations name the group.
	convs, err := carol.Conversations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 1 || convs[0].Group == nil || *convs[0].Group != g.ID || convs[0].Name != "Harbour" || convs[0].Unread != 1 {
		t.Fatalf("carol's conversations: %+v", convs)
	}

	// Typing reaches the members who are online, named.
	if err := bob.Typing(ctx, g.Peer, true); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, csub, "bob typing", func(ev client.Event) bool {
		return ev.Kind == client.EventTyping && ev.Peer == g.Peer && ev.Sender == "bob" && ev.Typing
	})
}

func TestGroupAdminsAndSettings(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice, _ := onlineUser(t, s.Invite, "alice", client.Options{})
	bob, bsub := onlineUser(t, s.Invite, "bob", client.Options{})
	carol := newUser(t, s.Invite, "carol", client.Options{})
	csub := subscribe(t, carol)
	stopCarol := runOnline(t, carol)
	ctx := testCtx(t)
	g, err := alice.CreateGroup(ctx, "Board", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	waitGroupChange(t, bob, g.ID, "the group", func(*client.Group) bool { return true })

	// A member cannot remove anyone or change the settings.
	if err := bob.GroupRemove(ctx, g.ID, "carol"); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("a member removing someone: %v, want ErrForbidden", err)
	}
	if err := bob.GroupSetSettings(ctx, g.ID, client.GroupSettings{AdminsOnlySend: true}); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("a member changing settings: %v, want ErrForbidden", err)
	}
	// Promoted, bob can.
	if err := alice.GroupSetRole(ctx, g.ID, "bob", client.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	waitGroupChange(t, bob, g.ID, "bob an admin", func(g *client.Group) bool { return g.Role == client.RoleAdmin })
	if err := bob.GroupSetSettings(ctx, g.ID, client.GroupSettings{AdminsOnlySend: true}); err != nil {
		t.Fatal(err)
	}
	// Only admins send now: carol's client refuses to queue, and the
	// server refuses what a client sends anyway.
	cg := waitGroupChange(t, carol, g.ID, "admins only", func(g *client.Group) bool { return g.Settings.AdminsOnlySend })
	if cg.CanSend {
		t.Fatal("carol can send to an admins-only group")
	}
	if _, err := carol.Send(ctx, g.Peer, "may I?"); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("a member sending to an admins-only group: %v, want ErrForbidden", err)
	}
	asDevice(t, s, carol, stopCarol, func(conn *clientconn.Conn) {
		_, err = conn.GroupSend(ctx, g.ID, clientconn.NewMessageID(), []byte("x"), false)
	})
	if !errors.Is(err, clientconn.ErrForbidden) {
		t.Fatalf("the server took a member's message to an admins-only group: %v", err)
	}
	send(t, bob, g.Peer, "admins speaking")
	waitGroupMessage(t, csub, g.Peer, "bob", "admins speaking")

	// Two admins' concurrent changes: both land, in the server's order,
	// and every member reaches the same state.
	errs := make(chan error, 2)
	go func() { errs <- alice.GroupSetInfo(ctx, g.ID, "Board", "minutes on Fridays") }()
	go func() { errs <- bob.GroupSetRole(ctx, g.ID, "carol", client.RoleAdmin) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var seqs []uint64
	for _, c := range []*client.Client{alice, bob, carol} {
		cg := waitGroupChange(t, c, g.ID, "both changes", func(g *client.Group) bool {
			return g.Description == "minutes on Fridays" && g.Role != "" && slices.Contains(members(g), "carol:admin")
		})
		seqs = append(seqs, cg.Seq)
	}
	if seqs[0] != seqs[1] || seqs[1] != seqs[2] {
		t.Fatalf("members at different heads: %v", seqs)
	}
	// The owner leaves only after handing the group over.
	if err := alice.GroupLeave(ctx, g.ID); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("the owner leaving: %v, want ErrForbidden", err)
	}
	if err := alice.GroupSetRole(ctx, g.ID, "bob", client.RoleOwner); err != nil {
		t.Fatal(err)
	}
	if err := alice.GroupLeave(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	bg := waitGroupChange(t, bob, g.ID, "alice gone", func(g *client.Group) bool { return len(g.Members) == 2 })
	if want := []string{"bob:owner", "carol:admin"}; !slices.Equal(members(bg), want) {
		t.Fatalf("after the hand-over: %v, want %v", members(bg), want)
	}
	waitEvent(t, bsub, "alice left", func(ev client.Event) bool {
		return ev.Kind == client.EventMessage && ev.Message.Notice && ev.Message.Text == "alice left"
	})
	if _, err := alice.Send(ctx, g.Peer, "still here?"); !errors.Is(err, client.ErrNotMember) {
		t.Fatalf("sending to a group one left: %v, want ErrNotMember", err)
	}
}

func TestGroupJoinByLink(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice, asub := onlineUser(t, s.Invite, "alice", client.Options{})
	dave, dsub := onlineUser(t, s.Invite, "dave", client.Options{})
	erin, _ := onlineUser(t, s.Invite, "erin", client.Options{})
	ctx := testCtx(t)
	g, err := alice.CreateGroup(ctx, "Open", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Without a link nobody can read the group, let alone join.
	conn := s.Dial(t, client.DeviceKeyForTest(dave))
	if _, _, err := conn.GroupLog(ctx, g.ID, 0, nil); !errors.Is(err, clientconn.ErrNotMember) {
		t.Fatalf("a stranger reading the log: %v, want ErrNotMember", err)
	}
	conn.Close()

	link, err := alice.GroupLink(ctx, g.ID, true, false)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(link, group.LinkPrefix) {
		t.Fatalf("link %q", link)
	}
	dg, err := dave.JoinGroup(ctx, link)
	if err != nil {
		t.Fatal(err)
	}
	if dg.Role != client.RoleMember {
		t.Fatalf("dave after joining: %+v", dg)
	}
	send(t, dave, g.Peer, "hi, I'm dave")
	waitGroupMessage(t, asub, g.Peer, "dave", "hi, I'm dave")

	// With approval, a join is a request until an admin lets them in.
	link2, err := alice.GroupLink(ctx, g.ID, true, true)
	if err != nil {
		t.Fatal(err)
	}
	// The old link stopped working.
	if _, err := erin.JoinGroup(ctx, link); err == nil {
		t.Fatal("joined with a link that was replaced")
	}
	eg, err := erin.JoinGroup(ctx, link2)
	if err != nil {
		t.Fatal(err)
	}
	if eg.Role != "" || !slices.Equal(eg.Requests, []string{"erin"}) {
		t.Fatalf("erin's pending request: %+v", eg)
	}
	waitGroupChange(t, alice, g.ID, "erin's request", func(g *client.Group) bool { return slices.Contains(g.Requests, "erin") })
	if err := alice.GroupApprove(ctx, g.ID, "erin", true); err != nil {
		t.Fatal(err)
	}
	waitGroupChange(t, erin, g.ID, "erin let in", func(g *client.Group) bool { return g.Role == client.RoleMember })
	send(t, erin, g.Peer, "thanks")
	waitGroupMessage(t, dsub, g.Peer, "erin", "thanks")
}

func TestGroupSecrecyAcrossMembership(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice, _ := onlineUser(t, s.Invite, "alice", client.Options{})
	carol := newUser(t, s.Invite, "carol", client.Options{})
	csub := subscribe(t, carol)
	stopCarol := runOnline(t, carol)
	erin, _ := onlineUser(t, s.Invite, "erin", client.Options{})
	// bob stays offline: his queue on the server is where the tests read
	// the ciphertext everyone is sent.
	bob := newUser(t, s.Invite, "bob", client.Options{})
	ctx := testCtx(t)
	g, err := alice.CreateGroup(ctx, "Secret", []string{"bob", "carol", "erin"})
	if err != nil {
		t.Fatal(err)
	}
	aliceDev, erinDev, bobDev := account(t, alice), account(t, erin), account(t, bob)

	m1 := sent(t, alice, g.Peer, "before dave")
	waitGroupMessage(t, csub, g.Peer, "alice", "before dave")
	e1 := sent(t, erin, g.Peer, "erin before")
	waitGroupMessage(t, csub, g.Peer, "erin", "erin before")

	// Backward secrecy: dave joins, and cannot read what was sent before.
	dave, dsub := onlineUser(t, s.Invite, "dave", client.Options{})
	if err := alice.GroupAdd(ctx, g.ID, "dave"); err != nil {
		t.Fatal(err)
	}
	sent(t, alice, g.Peer, "after dave joined")
	waitGroupMessage(t, dsub, g.Peer, "alice", "after dave joined")
	if pt, err := client.GroupDecryptForTest(ctx, dave, aliceDev, queuedCiphertext(t, s, bobDev, m1.ID)); err == nil {
		t.Fatalf("dave decrypted a message sent before he joined: %q", pt)
	} else if !errors.Is(err, senderkey.ErrDuplicateMessage) && !errors.Is(err, senderkey.ErrNoSenderKey) {
		t.Fatalf("dave on an earlier message: %v", err)
	}
	if pt, err := client.GroupDecryptForTest(ctx, dave, erinDev, queuedCiphertext(t, s, bobDev, e1.ID)); err == nil {
		t.Fatalf("dave decrypted erin's message sent before he joined: %q", pt)
	}

	// Forward secrecy: carol is removed; every sender moves to a new
	// chain before its next message, and carol cannot read it.
	if err := alice.GroupRemove(ctx, g.ID, "carol"); err != nil {
		t.Fatal(err)
	}
	waitGroupChange(t, carol, g.ID, "carol removed", func(g *client.Group) bool { return g.Role == "" })
	waitGroupChange(t, erin, g.ID, "erin sees carol removed", func(g *client.Group) bool { return len(g.Members) == 4 })
	m3 := sent(t, alice, g.Peer, "after carol left")
	e3 := sent(t, erin, g.Peer, "erin after")
	for _, c := range []struct {
		from client.DeviceAddr
		id   client.MessageID
	}{{aliceDev, m3.ID}, {erinDev, e3.ID}} {
		ct := queuedCiphertext(t, s, bobDev, c.id)
		if pt, err := client.GroupDecryptForTest(ctx, carol, c.from, ct); !errors.Is(err, senderkey.ErrNoSenderKey) {
			t.Fatalf("carol on %s's message after her removal: %q, %v; want ErrNoSenderKey", c.from.User, pt, err)
		}
	}
	// The server does not give it to her either, and she cannot send.
	// Sync returns once the server has pushed, and she has taken in,
	// everything queued for her by now: nothing more can come of those
	// two sends.
	syncOK(t, carol)
	for _, ev := range drain(csub) {
		if ev.Kind == client.EventMessage && (ev.Message.Text == "after carol left" || ev.Message.Text == "erin after") {
			t.Fatalf("carol got %q after her removal", ev.Message.Text)
		}
	}
	if _, err := carol.Send(ctx, g.Peer, "let me back"); !errors.Is(err, client.ErrNotMember) {
		t.Fatalf("a removed member sending: %v, want ErrNotMember", err)
	}
	// Her engine stops first: superseded by this connection, it would
	// dial back in at once and take her device's place from it.
	stopCarol()
	conn := s.Dial(t, client.DeviceKeyForTest(carol))
	defer conn.Close()
	if _, err := conn.GroupSend(ctx, g.ID, clientconn.NewMessageID(), []byte("x"), false); !errors.Is(err, clientconn.ErrNotMember) {
		t.Fatalf("the server took a removed member's message: %v", err)
	}

	// bob, back online, reads everything he was sent, and dave what was
	// sent after he joined.
	bsub := subscribe(t, bob)
	runOnline(t, bob)
	for _, m := range []struct{ from, text string }{{"alice", "before dave"}, {"erin", "erin before"}, {"alice", "after carol left"}, {"erin", "erin after"}} {
		waitGroupMessage(t, bsub, g.Peer, m.from, m.text)
	}
	waitGroupMessage(t, dsub, g.Peer, "erin", "erin after")
	for _, m := range history(t, bob, g.Peer) {
		if m.State == client.StateUnreadable {
			t.Errorf("bob could not read %+v", m)
		}
	}
}

// forge signs a change to a group by author with key, on the head of st:
// what a removed admin, or a server with a key of its own, could make.
func forge(t *testing.T, st *client.Group, head [32]byte, author string, key [32]byte, action *group.WireChange_Remove) []byte {
	t.Helper()
	w := &group.WireChange{GroupId: st.ID[:], Seq: st.Seq + 1, Prev: head[:], Author: author, TimeMs: uint64(time.Now().UnixMilli()), Action: action}
	cb, err := proto.MarshalOptions{Deterministic: true}.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	var z [64]byte
	rand.Read(z[:])
	sig := xeddsa.Sign(key, append([]byte("magpie group change v1\x00"), cb...), z)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&group.WireSignedChange{Change: cb, Signature: sig[:]})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGroupRefusesForgedChanges(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice := newUser(t, s.Invite, "alice", client.Options{})
	bob := newUser(t, s.Invite, "bob", client.Options{})
	stops := []func(){runOnline(t, alice), runOnline(t, bob)}
	carol := newUser(t, s.Invite, "carol", client.Options{})
	stopCarol := runOnline(t, carol)
	ctx := testCtx(t)
	carolKey, err := client.IdentityKeyForTest(ctx, carol)
	if err != nil {
		t.Fatal(err)
	}
	var stranger [32]byte
	rand.Read(stranger[:])
	top := t
	for _, tc := range []struct {
		name   string
		author string
		key    [32]byte
	}{
		{"by a removed admin", "carol", carolKey.Private},
		{"by the server, as the owner", "alice", stranger},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// carol was an admin, and was removed.
			g, err := alice.CreateGroup(ctx, "Guarded", []string{"bob", "carol"})
			if err != nil {
				t.Fatal(err)
			}
			if err := alice.GroupSetRole(ctx, g.ID, "carol", client.RoleAdmin); err != nil {
				t.Fatal(err)
			}
			if err := alice.GroupRemove(ctx, g.ID, "carol"); err != nil {
				t.Fatal(err)
			}
			bg := waitGroupChange(t, bob, g.ID, "carol removed", func(g *client.Group) bool { return len(g.Members) == 2 })
			ag, err := alice.Group(ctx, g.ID)
			if err != nil {
				t.Fatal(err)
			}
			// The head is the hash of the last change of the server's log.
			var log [][]byte
			stops[1] = asDevice(top, s, bob, stops[1], func(conn *clientconn.Conn) {
				log, _, err = conn.GroupLog(ctx, g.ID, 0, nil)
			})
			if err != nil || len(log) != int(ag.Seq)+1 {
				t.Fatalf("log: %d changes, %v", len(log), err)
			}
			forged := forge(t, ag, sha256.Sum256(log[len(log)-1]), tc.author, tc.key, &group.WireChange_Remove{Remove: &group.WireUser{User: "bob"}})

			// Through the server: refused there, from carol's client and
			// from a modified one.
			if err := carol.GroupRemove(ctx, g.ID, "bob"); !errors.Is(err, client.ErrNotMember) {
				t.Fatalf("a removed admin removing someone: %v, want ErrNotMember", err)
			}
			stopCarol = asDevice(top, s, carol, stopCarol, func(conn *clientconn.Conn) {
				_, err = conn.GroupChange(ctx, g.ID, forged)
			})
			if !errors.Is(err, clientconn.ErrForbidden) {
				t.Fatalf("the server took the forged change: %v", err)
			}

			// A server that writes it into the log anyway: every member's
			// client refuses it, keeps the group as it was, and says so.
			b := &store.Batch{Now: time.Now(), GroupChanges: []*store.GroupChange{{
				From: store.DeviceAddr{User: tc.author, Device: 1}, Group: g.ID, Seq: ag.Seq + 1, Change: forged,
				State: []byte("forged"), Notify: []string{"alice", "bob"}, Expires: time.Now().Add(time.Hour),
			}}}
			if err := s.Store.Commit(ctx, b); err != nil || b.GroupChanges[0].Err != nil {
				t.Fatalf("injecting: %v %v", err, b.GroupChanges[0].Err)
			}
			// Written behind the server's back, it is pushed on the next
			// connection.
			for i, c := range []*client.Client{alice, bob} {
				stops[i]()
				stops[i] = runOnline(top, c) // until the whole test ends
			}
			for _, c := range []*client.Client{alice, bob} {
				cg := waitGroupChange(t, c, g.ID, "the forged change refused", func(g *client.Group) bool { return g.Refused != "" })
				if cg.Seq != ag.Seq || !slices.Equal(members(cg), members(bg)) {
					t.Fatalf("after a forged change: seq %d (want %d), members %v (want %v)", cg.Seq, ag.Seq, members(cg), members(bg))
				}
				if !strings.Contains(cg.Refused, "signature") && !strings.Contains(cg.Refused, "not a member") {
					t.Errorf("the refusal says %q", cg.Refused)
				}
				h := history(t, c, g.Peer)
				if last := h[len(h)-1]; !last.Notice || !strings.Contains(last.Text, "refused") {
					t.Errorf("the last line of the group's conversation: %+v", last)
				}
				if _, err := c.Send(ctx, g.Peer, "hello?"); !errors.Is(err, client.ErrGroupRefused) {
					t.Errorf("sending to a group whose log was refused: %v, want ErrGroupRefused", err)
				}
			}
		})
	}
}

// Every device of every member gets a group message, the sender's other
// devices as their own; a device added later asks for the keys it lacks.
func TestGroupMultiDevice(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice1 := newUser(t, s.Invite, "alice", client.Options{})
	bob1 := newUser(t, s.Invite, "bob", client.Options{})
	carol1 := newUser(t, s.Invite, "carol", client.Options{})
	alice2 := linkDevice(t, s, "alice", alice1)
	bob2 := linkDevice(t, s, "bob", bob1)
	devs := map[string]*client.Client{"alice1": alice1, "alice2": alice2, "bob1": bob1, "bob2": bob2, "carol1": carol1}
	subs := map[string]*client.Subscription{}
	for name, c := range devs {
		subs[name] = subscribe(t, c)
		runOnline(t, c)
	}
	ctx := testCtx(t)
	g, err := alice1.CreateGroup(ctx, "Devices", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	sent(t, alice1, g.Peer, "to every device")
	for _, name := range []string{"bob1", "bob2", "carol1"} {
		waitGroupMessage(t, subs[name], g.Peer, "alice", "to every device")
	}
	ev := waitEvent(t, subs["alice2"], "alice1's message on alice2", func(ev client.Event) bool {
		return ev.Kind == client.EventMessage && ev.Message.Peer == g.Peer && ev.Message.Text == "to every device"
	})
	if !ev.Message.Outgoing || ev.Message.Sender != "alice" {
		t.Fatalf("alice2's copy: %+v", ev.Message)
	}
	sent(t, bob2, g.Peer, "from bob's laptop")
	for _, name := range []string{"alice1", "alice2", "carol1"} {
		waitGroupMessage(t, subs[name], g.Peer, "bob", "from bob's laptop")
	}
	waitEvent(t, subs["bob1"], "bob2's message on bob1", func(ev client.Event) bool {
		return ev.Kind == client.EventMessage && ev.Message.Outgoing && ev.Message.Peer == g.Peer && ev.Message.Text == "from bob's laptop"
	})

	// carol adds a device after the group was made: it learns the group
	// from the server's log, cannot read a message on a chain it was never
	// given, asks for it, and reads the next one.
	carol2 := linkDevice(t, s, "carol", carol1)
	c2sub := subscribe(t, carol2)
	runOnline(t, carol2)
	sent(t, alice1, g.Peer, "before the key")
	ev = waitEvent(t, c2sub, "an unreadable message", func(ev client.Event) bool {
		return ev.Kind == client.EventMessage && ev.Message.Peer == g.Peer && ev.Message.State == client.StateUnreadable
	})
	if ev.Message.Sender != "alice" || !strings.Contains(ev.Message.Err, "asked for it") {
		t.Fatalf("carol2's unreadable message: %+v", ev.Message)
	}
	if cg, err := carol2.Group(ctx, g.ID); err != nil || cg.Role != client.RoleMember {
		t.Fatalf("carol2's copy of the group: %+v, %v", cg, err)
	}
	// alice1 hears the request before her next message goes out: carol2
	// has sent it once her outbox is empty, and alice1 has it once she
	// has received what the server holds for her.
	if err := carol2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := alice1.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	sent(t, alice1, g.Peer, "after the key")
	waitGroupMessage(t, c2sub, g.Peer, "alice", "after the key")
}

// While a member's disk is full nothing of the group is acknowledged (the
// server keeps it, and the sender key does not move on); once there is
// space each message arrives, once, and reads.
func TestGroupNothingAcknowledgedWhileStorageFails(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice, asub := onlineUser(t, s.Invite, "alice", client.Options{})
	st := newFullStore(t)
	bob, bsub := onlineUser(t, s.Invite, "bob", client.Options{Store: st})
	ctx := testCtx(t)
	g, err := alice.CreateGroup(ctx, "Full", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	waitGroupChange(t, bob, g.ID, "the group", func(*client.Group) bool { return true })
	// The group shows before its push is acknowledged: wait for the ack,
	// so that what the server holds below is only what came while full.
	for deadline := time.Now().Add(eventTimeout); len(queued(t, s, "bob")) != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("bob never acknowledged the group's creation: the server holds %d items", len(queued(t, s, "bob")))
		}
		time.Sleep(20 * time.Millisecond)
	}

	st.full.Store(true)
	var sentMsgs []*client.Message
	for i := range 3 {
		sentMsgs = append(sentMsgs, sent(t, alice, g.Peer, fmt.Sprintf("while full %d", i)))
	}
	waitEvent(t, bsub, "storage full", isState(client.ConnStorageFull))
	if err := alice.GroupSetInfo(ctx, g.ID, "Full", "a change while bob's disk is full"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	// The sender key distribution (1:1), three messages and the change.
	if p := queued(t, s, "bob"); len(p) != 5 {
		t.Fatalf("the server holds %d items for bob while his disk is full, want 5", len(p))
	}
	if got := incoming(drain(bsub)); len(got) != 0 {
		t.Fatalf("bob's app was shown %q, which could not be stored", got)
	}

	st.full.Store(false)
	for _, m := range sentMsgs {
		waitState(t, asub, m.Seq, client.StateDelivered)
	}
	syncOK(t, bob)
	var got []string
	for _, m := range history(t, bob, g.Peer) {
		if !m.Notice {
			got = append(got, m.Text)
			if m.State != client.StateReceived {
				t.Errorf("%q: %s %s", m.Text, m.State, m.Err)
			}
		}
	}
	if want := []string{"while full 0", "while full 1", "while full 2"}; !slices.Equal(got, want) {
		t.Fatalf("bob's group history: %q, want %q", got, want)
	}
	waitGroupChange(t, bob, g.ID, "the change", func(g *client.Group) bool { return g.Description == "a change while bob's disk is full" })
}

// The ack of a group message is lost with the connection: the server
// pushes it again, and the app is not told twice.
func TestGroupExactlyOnceWhenAckIsLost(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice, _ := onlineUser(t, s.Invite, "alice", client.Options{})
	d := &faultDialer{}
	bob, bsub := onlineUser(t, s.Invite, "bob", client.Options{Dial: client.DialOptions{Dialer: d}})
	ctx := testCtx(t)
	g, err := alice.CreateGroup(ctx, "Once", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	sent(t, alice, g.Peer, "first")
	waitGroupMessage(t, bsub, g.Peer, "alice", "first")
	syncOK(t, bob)

	d.cutNextWrite.Store(true)
	release := d.hold()
	defer release()
	m := sent(t, alice, g.Peer, "only once")
	waitGroupMessage(t, bsub, g.Peer, "alice", "only once")
	waitEvent(t, bsub, "bob offline", isState(client.ConnOffline))
	if p := queued(t, s, "bob"); len(p) != 1 || p[0].ClientID != m.ID {
		t.Fatalf("the server holds %d items for bob after the lost ack, want the one", len(p))
	}
	release()
	waitEvent(t, bsub, "bob online", isState(client.ConnOnline))
	syncOK(t, bob)
	if got := incoming(drain(bsub)); len(got) != 0 {
		t.Fatalf("the app was shown %q again", got)
	}
	if h := texts(history(t, bob, g.Peer)); !slices.Equal(h[1:], []string{"first", "only once"}) {
		t.Fatalf("bob's group history: %q", h)
	}
	waitFor(t, "an empty queue for bob", func() bool { return len(queued(t, s, "bob")) == 0 })
}

// queued lists every item the server holds for user's first device.
func queued(t testing.TB, s *servertest.Server, user string) []store.Message {
	t.Helper()
	items, err := s.Store.Pending(testCtx(t), store.DeviceAddr{User: user, Device: 1}, 0, 1000, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return items
}

// Bad group input gets a clear error and changes nothing.
func TestGroupLimits(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice, _ := onlineUser(t, s.Invite, "alice", client.Options{})
	ctx := testCtx(t)
	many := make([]string, group.MaxMembers)
	for i := range many {
		many[i] = fmt.Sprintf("user%d", i)
	}
	if _, err := alice.CreateGroup(ctx, "Too big", many); !errors.Is(err, client.ErrTooLarge) {
		t.Fatalf("a group of %d and its creator: %v, want ErrTooLarge", len(many), err)
	}
	if _, err := alice.CreateGroup(ctx, "Nobody", []string{"nobody_here"}); !errors.Is(err, client.ErrUnknownUser) {
		t.Fatalf("a group with an unknown user: %v, want ErrUnknownUser", err)
	}
	if _, err := alice.CreateGroup(ctx, strings.Repeat("n", group.MaxName+1), nil); err == nil {
		t.Fatal("a group with an over-long name was created")
	}
	if gs, err := alice.Groups(ctx); err != nil || len(gs) != 0 {
		t.Fatalf("after the refusals alice has groups %+v, %v", gs, err)
	}
	var unknown client.GroupID
	rand.Read(unknown[:])
	if _, err := alice.Send(ctx, unknown.Peer(), "hello?"); !errors.Is(err, client.ErrUnknownGroup) {
		t.Fatalf("sending to an unknown group: %v, want ErrUnknownGroup", err)
	}
	if err := alice.GroupAdd(ctx, unknown, "bob"); !errors.Is(err, client.ErrUnknownGroup) {
		t.Fatalf("changing an unknown group: %v, want ErrUnknownGroup", err)
	}
	if _, err := alice.JoinGroup(ctx, "magpie-group:not-a-link"); err == nil {
		t.Fatal("joined with a malformed link")
	}
	if _, err := client.ParseGroupID("group:1234"); !errors.Is(err, client.ErrUnknownGroup) {
		t.Fatalf("a short group id: %v", err)
	}
}

// inject queues a group message for dev behind the server's back, as a
// compromised server could.
func inject(t *testing.T, s *servertest.Server, from client.DeviceAddr, id client.GroupID, payload []byte, to client.DeviceAddr) {
	t.Helper()
	gs := &store.GroupSend{
		From: store.DeviceAddr{User: from.User, Device: from.Device}, ClientID: clientconn.NewMessageID(), Group: id,
		Payload: payload, To: []store.DeviceAddr{{User: to.User, Device: to.Device}}, Expires: time.Now().Add(time.Hour),
	}
	b := &store.Batch{Now: time.Now(), GroupSends: []*store.GroupSend{gs}}
	if err := s.Store.Commit(testCtx(t), b); err != nil || gs.Err != nil {
		t.Fatalf("injecting a group message: %v %v", err, gs.Err)
	}
}

// What a member's client hears is only from members, about their own
// group: a removed member's message, one moved from another group, and
// sender keys from non-members are refused, even when the server delivers
// them.
func TestGroupRefusesOutsiders(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice, _ := onlineUser(t, s.Invite, "alice", client.Options{})
	carol, _ := onlineUser(t, s.Invite, "carol", client.Options{})
	bob := newUser(t, s.Invite, "bob", client.Options{})
	stopBob := runOnline(t, bob)
	ctx := testCtx(t)
	a, err := alice.CreateGroup(ctx, "A", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := alice.CreateGroup(ctx, "B", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	bsub := subscribe(t, bob)
	sent(t, carol, a.Peer, "carol, still a member")
	waitGroupMessage(t, bsub, a.Peer, "carol", "carol, still a member")
	sent(t, alice, b.Peer, "hello B") // bob has alice's chain for B
	waitGroupMessage(t, bsub, b.Peer, "alice", "hello B")
	// carol keeps a message made on her chain (her client forgets the
	// chain when she is removed; a modified one would not).
	ct, err := client.GroupEncryptForTest(ctx, carol, a.ID, "carol, removed")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.GroupRemove(ctx, a.ID, "carol"); err != nil {
		t.Fatal(err)
	}
	waitGroupChange(t, bob, a.ID, "carol removed", func(g *client.Group) bool { return len(g.Members) == 2 })
	// bob gets alice's chain for A (new since carol left) now, so that
	// every sender key he gets while offline below comes from carol.
	sent(t, alice, a.Peer, "without carol")
	waitGroupMessage(t, bsub, a.Peer, "alice", "without carol")
	stopBob()
	bobDev, carolDev, aliceDev := account(t, bob), account(t, carol), account(t, alice)

	// 1. carol, removed, on the chain bob still has from her.
	inject(t, s, carolDev, a.ID, ct, bobDev)
	// 2. alice's message to A, delivered as B's: bob has both chains.
	m := sent(t, alice, a.Peer, "for A only")
	ctA := queuedCiphertext(t, s, bobDev, m.ID)
	for _, it := range queued(t, s, "bob") { // bob never sees the original
		if it.ClientID == m.ID {
			ack := &store.Batch{Now: time.Now(), Acks: []*store.Ack{{Device: store.DeviceAddr{User: "bob", Device: 1}, Seqs: []uint64{it.Seq}, Expires: time.Now().Add(time.Hour)}}}
			if err := s.Store.Commit(ctx, ack); err != nil {
				t.Fatal(err)
			}
		}
	}
	inject(t, s, aliceDev, b.ID, ctA, bobDev)
	// 3. sender keys for A from carol, who is not in it any more.
	before, err := client.SenderKeysForTest(ctx, bob)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		// Well-formed distribution messages, so that only the membership
		// check can drop them.
		id, err := e2e.NewDistributionID(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		skdm, err := e2e.SenderKeyDistribution(memKV{}, id, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		p, err := content.EncodeSenderKey(a.ID, skdm)
		if err != nil {
			t.Fatal(err)
		}
		if err := client.SendContentForTest(ctx, carol, "bob", p); err != nil {
			t.Fatal(err)
		}
	}

	runOnline(t, bob)
	syncOK(t, bob)
	for _, peer := range []string{a.Peer, b.Peer} {
		for _, m := range history(t, bob, peer) {
			if m.Text == "carol, removed" || m.Text == "for A only" {
				t.Errorf("bob shows %q in %s", m.Text, peer)
			}
		}
	}
	last := func(peer string) client.Message { h := history(t, bob, peer); return h[len(h)-1] }
	if m := last(a.Peer); m.State != client.StateUnreadable || m.Sender != "carol" || !strings.Contains(m.Err, "not a member") {
		t.Errorf("the removed member's message: %+v", m)
	}
	if m := last(b.Peer); m.State != client.StateUnreadable || m.Sender != "alice" || !strings.Contains(m.Err, "another group") {
		t.Errorf("the moved message: %+v", m)
	}
	if after, err := client.SenderKeysForTest(ctx, bob); err != nil || after != before {
		t.Errorf("bob keeps %d sender keys after a non-member sent three, had %d (%v)", after, before, err)
	}
}

// memKV is an e2e.KV in memory, for making e2e messages outside a client.
type memKV map[string][]byte

func (m memKV) Get(ns, key string) ([]byte, error) { return m[ns+"\x00"+key], nil }
func (m memKV) Put(ns, key string, v []byte) error { m[ns+"\x00"+key] = v; return nil }
func (m memKV) Delete(ns, key string) error        { delete(m, ns+"\x00"+key); return nil }
func (m memKV) Keys(ns, prefix string) ([]string, error) {
	var out []string
	for k := range m {
		if rest, ok := strings.CutPrefix(k, ns+"\x00"); ok && strings.HasPrefix(rest, prefix) {
			out = append(out, rest)
		}
	}
	return out, nil
}

// A file sent to a group is uploaded once and reaches every member, who
// each fetch it; the sender sees it delivered to all of them.
func TestGroupFile(t *testing.T) {
	t.Parallel()
	s := withBlobs(t, blobstore.Options{})
	alice, asub := onlineUser(t, s.Invite, "alice", client.Options{})
	_, bsub := onlineUser(t, s.Invite, "bob", client.Options{})
	_, csub := onlineUser(t, s.Invite, "carol", client.Options{})
	g, err := alice.CreateGroup(testCtx(t), "Files", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(300 << 10)
	m := sendFile(t, alice, g.Peer, "minutes.pdf", data, "the minutes")
	for _, sub := range []*client.Subscription{bsub, csub} {
		got := waitSaved(t, sub, data)
		if got.Peer != g.Peer || got.Sender != "alice" || got.Text != "the minutes" || got.Attachment.Name != "minutes.pdf" {
			t.Fatalf("a member's copy: %+v", got)
		}
	}
	waitState(t, asub, m.Seq, client.StateDelivered)
}

// In a group whose messages disappear, each message (and the file it
// brought) is deleted from every device that long after it was stored;
// the notices stay, and so does what was sent before the setting.
func TestGroupDisappearingMessages(t *testing.T) {
	t.Parallel()
	s := withBlobs(t, blobstore.Options{})
	alice, asub := onlineUser(t, s.Invite, "alice", client.Options{})
	bob, bsub := onlineUser(t, s.Invite, "bob", client.Options{})
	ctx := testCtx(t)
	g, err := alice.CreateGroup(ctx, "Brief", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	sent(t, alice, g.Peer, "kept")
	waitGroupMessage(t, bsub, g.Peer, "alice", "kept")
	const after = 2 * time.Second
	if err := alice.GroupSetSettings(ctx, g.ID, client.GroupSettings{DisappearAfter: after}); err != nil {
		t.Fatal(err)
	}
	waitGroupChange(t, bob, g.ID, "the timer", func(g *client.Group) bool { return g.Settings.DisappearAfter == after })

	data := randomBytes(10 << 10)
	text := sent(t, alice, g.Peer, "gone soon")
	file := sendFile(t, alice, g.Peer, "note.bin", data, "")
	got := waitGroupMessage(t, bsub, g.Peer, "alice", "gone soon")
	saved := waitSaved(t, bsub, data)
	if got.Expires.IsZero() || got.Expires.Sub(got.Composed) > after+30*time.Second {
		t.Fatalf("bob's copy disappears at %v (composed %v)", got.Expires, got.Composed)
	}
	waitState(t, asub, file.Seq, client.StateDelivered)
	deadline := time.Now().Add(after + 10*time.Second)
	for {
		var left []string
		for _, c := range []*client.Client{alice, bob} {
			for _, m := range history(t, c, g.Peer) {
				if !m.Notice {
					left = append(left, m.Text)
				}
			}
		}
		if slices.Equal(left, []string{"kept", "kept"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still there %v after the timer: %q", after, left)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, seq := range []uint64{text.Seq, file.Seq} {
		if _, err := alice.Message(ctx, seq); !errors.Is(err, client.ErrNoMessage) {
			t.Errorf("alice's message %d after it disappeared: %v", seq, err)
		}
	}
	if _, err := bob.Message(ctx, got.Seq); !errors.Is(err, client.ErrNoMessage) {
		t.Errorf("bob's copy after it disappeared: %v", err)
	}
	if _, err := os.Stat(saved.Attachment.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bob's saved file after it disappeared: %v", err)
	}
}

// A group's picture is uploaded once, named in the signed log, and
// fetched and checked by each member; anything that is not an image, or
// too large, is refused before anything is uploaded.
func TestGroupAvatar(t *testing.T) {
	t.Parallel()
	blobDir := filepath.Join(t.TempDir(), "blobs")
	blobs, err := blobstore.Open(blobDir, blobstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blobs.Close() })
	s := servertest.Start(t, server.Config{Blobs: blobs})
	alice, _ := onlineUser(t, s.Invite, "alice", client.Options{})
	bob, _ := onlineUser(t, s.Invite, "bob", client.Options{})
	carol, _ := onlineUser(t, s.Invite, "carol", client.Options{})
	ctx := testCtx(t)
	g, err := alice.CreateGroup(ctx, "Pictured", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := alice.GroupAvatar(ctx, g.ID); !errors.Is(err, client.ErrNoAvatar) {
		t.Fatalf("a new group's picture: %v, want ErrNoAvatar", err)
	}
	var img bytes.Buffer
	if err := png.Encode(&img, image.NewRGBA(image.Rect(0, 0, 64, 64))); err != nil {
		t.Fatal(err)
	}
	if err := alice.GroupSetAvatar(ctx, g.ID, bytes.NewReader(img.Bytes())); err != nil {
		t.Fatal(err)
	}
	bg := waitGroupChange(t, bob, g.ID, "the picture", func(g *client.Group) bool { return g.HasAvatar })
	got, mime, err := bob.GroupAvatar(ctx, bg.ID)
	if err != nil || mime != "image/png" || !bytes.Equal(got, img.Bytes()) {
		t.Fatalf("bob's copy of the picture: %d bytes, %q, %v", len(got), mime, err)
	}
	if h := history(t, bob, g.Peer); h[len(h)-1].Text != "alice changed the group's picture" {
		t.Errorf("the notice: %q", h[len(h)-1].Text)
	}
	// A server that changes the stored picture: carol, who has not
	// fetched it yet, refuses it.
	waitGroupChange(t, carol, g.ID, "the picture", func(g *client.Group) bool { return g.HasAvatar })
	stored, err := filepath.Glob(filepath.Join(blobDir, "complete", "*"))
	if err != nil || len(stored) != 1 {
		t.Fatalf("the stored picture: %v %v", stored, err)
	}
	b, err := os.ReadFile(stored[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(stored[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := carol.GroupAvatar(ctx, g.ID); !errors.Is(err, client.ErrAttachmentDigest) {
		t.Errorf("a picture changed on the server: %v, want ErrAttachmentDigest", err)
	}
	if err := alice.GroupSetAvatar(ctx, g.ID, strings.NewReader("<html>not an image</html>")); !errors.Is(err, group.ErrMalformed) {
		t.Errorf("an HTML page as the picture: %v, want group.ErrMalformed", err)
	}
	if err := alice.GroupSetAvatar(ctx, g.ID, bytes.NewReader(make([]byte, content.MaxAvatar+1))); !errors.Is(err, client.ErrTooLarge) {
		t.Errorf("a picture too large: %v, want ErrTooLarge", err)
	}
	if err := alice.GroupSetAvatar(ctx, g.ID, nil); err != nil {
		t.Fatal(err)
	}
	waitGroupChange(t, bob, g.ID, "no picture", func(g *client.Group) bool { return !g.HasAvatar })
	if _, _, err := bob.GroupAvatar(ctx, g.ID); !errors.Is(err, client.ErrNoAvatar) {
		t.Fatalf("after it was removed: %v, want ErrNoAvatar", err)
	}
}
