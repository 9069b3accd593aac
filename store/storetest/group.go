package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/magpie-im/magpie/store"
)

func gid(n byte) [store.GroupIDSize]byte {
	var g [store.GroupIDSize]byte
	g[0], g[15] = n, 0x77
	return g
}

func groupSend(from store.DeviceAddr, id int, group [store.GroupIDSize]byte, payload string, to []store.DeviceAddr, expires time.Time, limit int) *store.GroupSend {
	return &store.GroupSend{From: from, ClientID: cid(id), Group: group, Payload: []byte(payload), To: to, Expires: expires, QueueLimit: limit}
}

func groupChange(from store.DeviceAddr, group [store.GroupIDSize]byte, seq uint64, change, state string, expires time.Time, notify ...string) *store.GroupChange {
	return &store.GroupChange{From: from, Group: group, Seq: seq, Change: []byte(change), State: []byte(state), Notify: notify, Expires: expires}
}

func commitBatch(t *testing.T, s store.Store, b *store.Batch) {
	t.Helper()
	if err := s.Commit(context.Background(), b); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

// sendGroup commits one group send and requires every device of it to
// have been queued.
func sendGroup(t *testing.T, s store.Store, now time.Time, g *store.GroupSend) []store.Message {
	t.Helper()
	commitBatch(t, s, &store.Batch{Now: now, GroupSends: []*store.GroupSend{g}})
	if g.Err != nil || g.Duplicate || g.Full != nil || len(g.Queued) != len(g.To) {
		t.Fatalf("group send: Err=%v Duplicate=%v Full=%v, %d of %d queued; want all queued", g.Err, g.Duplicate, g.Full, len(g.Queued), len(g.To))
	}
	return g.Queued
}

func queueDepth(t *testing.T, s store.Store) int64 {
	t.Helper()
	n, err := s.QueueDepth(context.Background())
	if err != nil {
		t.Fatalf("QueueDepth: %v", err)
	}
	return n
}

func checkDepth(t *testing.T, s store.Store, want int64) {
	t.Helper()
	if got := queueDepth(t, s); got != want {
		t.Errorf("QueueDepth = %d, want %d", got, want)
	}
}

// checkGroup checks a group's head, state and whole log.
func checkGroup(t *testing.T, s store.Store, g [store.GroupIDSize]byte, head uint64, state string, log ...string) {
	t.Helper()
	ctx := context.Background()
	seq, st, err := s.Group(ctx, g)
	if err != nil || seq != head || string(st) != state {
		t.Errorf("Group(%x) = %d, %q, %v; want %d, %q", g, seq, st, err, head, state)
	}
	checkLog(t, s, g, 0, 1000, log...)
}

func checkLog(t *testing.T, s store.Store, g [store.GroupIDSize]byte, from uint64, limit int, want ...string) {
	t.Helper()
	got, err := s.GroupLog(context.Background(), g, from, limit)
	if err != nil {
		t.Fatalf("GroupLog(%x, %d, %d): %v", g, from, limit, err)
	}
	var strs []string
	for _, c := range got {
		strs = append(strs, string(c))
	}
	if !slices.Equal(strs, want) {
		t.Errorf("GroupLog(%x, %d, %d) = %q, want %q", g, from, limit, strs, want)
	}
}

// testGroupSend: one GroupSend queues one item per device it names (the
// sender's other devices too), each with the one payload, the sender, the
// client id and the group, in each device's one seq order with its 1:1
// items.
func testGroupSend(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob", "carol", "dave")
	addDevice(t, s, "alice", 10)
	addDevice(t, s, "bob", 11)
	alice, bob1, bob2 := addr("alice", 1), addr("bob", 1), addr("bob", 2)
	now := t0.Add(time.Minute)
	exp := now.Add(day)
	before := sendOne(t, s, t0, send(addr("dave", 1), 1, "bob", "before", exp, 0))

	to := []store.DeviceAddr{bob2, addr("carol", 1), bob1, addr("alice", 2)}
	g := groupSend(alice, 1, gid(1), "one ciphertext", to, exp, 0)
	queued := sendGroup(t, s, now, g)
	if !g.Sent.Equal(now) {
		t.Errorf("Sent = %v, want batch.Now %v", g.Sent, now)
	}
	for i, d := range to {
		want := store.Message{
			Seq: queued[i].Seq, To: d, Kind: store.KindGroupMessage, From: alice, ClientID: cid(1),
			Payload: []byte("one ciphertext"), Sent: now, Expires: exp, Group: gid(1),
		}
		checkMessages(t, fmt.Sprintf("Queued[%d]", i), queued[i:i+1], []store.Message{want})
		if i > 0 && queued[i].Seq <= queued[i-1].Seq {
			t.Errorf("Queued seqs %v, want increasing", seqs(queued))
		}
	}
	if queued[0].Seq <= before[1].Seq {
		t.Errorf("group items' seqs %v not after the earlier items' %v", seqs(queued), seqs(before))
	}

	after := sendOne(t, s, now, send(addr("dave", 1), 2, "bob", "after", exp, 0))
	checkMessages(t, "Pending(bob/1)", pending(t, s, bob1, 0, 10, now), []store.Message{before[0], queued[2], after[0]})
	checkMessages(t, "Pending(bob/2)", pending(t, s, bob2, 0, 10, now), []store.Message{before[1], queued[0], after[1]})
	checkMessages(t, "Pending(carol/1)", pending(t, s, addr("carol", 1), 0, 10, now), queued[1:2])
	checkMessages(t, "Pending(alice/2)", pending(t, s, addr("alice", 2), 0, 10, now), queued[3:4])
	checkMessages(t, "Pending(bob/1) after its first item, limit 1", pending(t, s, bob1, before[0].Seq, 1, now), queued[2:3])
	for _, d := range []store.DeviceAddr{alice, addr("dave", 1)} {
		if got := pending(t, s, d, 0, 10, now); len(got) != 0 {
			t.Errorf("%v has %d items, want 0", d, len(got))
		}
	}
	checkDepth(t, s, 2+4+2)
}

// testGroupSendDuplicate: a GroupSend's (From, ClientID) is deduplicated
// in the namespace that Enqueue uses, until its Expires.
func testGroupSendDuplicate(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob", "carol")
	addDevice(t, s, "alice", 10)
	alice, bob := addr("alice", 1), addr("bob", 1)
	exp := t0.Add(time.Hour)
	to := []store.DeviceAddr{bob, addr("carol", 1)}
	first := sendGroup(t, s, t0, groupSend(alice, 1, gid(1), "m", to, exp, 0))

	later := t0.Add(time.Minute)
	resend := groupSend(alice, 1, gid(1), "changed", to[:1], exp, 0)            // another payload and devices: still a resend
	oneToOne := send(alice, 1, "bob", "an Enqueue with the group's id", exp, 0) // one namespace
	other := send(alice, 2, "bob", "1:1", exp, 0)
	afterOther := groupSend(alice, 2, gid(1), "m", to, exp, 0) // the Enqueue came first in the batch
	twin, twin2 := groupSend(alice, 3, gid(1), "t", to, exp, 0), groupSend(alice, 3, gid(1), "t", to, exp, 0)
	otherDevice := groupSend(addr("alice", 2), 1, gid(1), "m", to, exp, 0)
	commitBatch(t, s, &store.Batch{Now: later, Enqueues: []*store.Enqueue{oneToOne, other},
		GroupSends: []*store.GroupSend{resend, afterOther, twin, twin2, otherDevice}})

	for _, d := range []struct {
		name string
		dup  bool
		err  error
		sent time.Time
		q    []store.Message
		want time.Time // the original's send time
	}{
		{"resend", resend.Duplicate, resend.Err, resend.Sent, resend.Queued, t0},
		{"Enqueue with its id", oneToOne.Duplicate, oneToOne.Err, oneToOne.Sent, oneToOne.Queued, t0},
		{"GroupSend with an Enqueue's", afterOther.Duplicate, afterOther.Err, afterOther.Sent, afterOther.Queued, later},
		{"second of two in a batch", twin2.Duplicate, twin2.Err, twin2.Sent, twin2.Queued, later},
	} {
		if !d.dup || d.err != nil || d.q != nil || !d.sent.Equal(d.want) {
			t.Errorf("%s: Duplicate=%v Err=%v Queued=%v Sent=%v; want a duplicate of the send at %v", d.name, d.dup, d.err, d.q, d.sent, d.want)
		}
	}
	if resend.Full != nil {
		t.Errorf("resend: Full=%v, want nil", resend.Full)
	}
	for name, g := range map[string]*store.GroupSend{"first of two in a batch": twin, "the sender's other device": otherDevice} {
		if g.Err != nil || g.Duplicate || len(g.Queued) != 2 {
			t.Errorf("%s: Err=%v Duplicate=%v Queued=%d; want accepted", name, g.Err, g.Duplicate, len(g.Queued))
		}
	}
	if other.Err != nil || other.Duplicate {
		t.Fatalf("Enqueue with a new id: Err=%v Duplicate=%v", other.Err, other.Duplicate)
	}
	checkMessages(t, "Pending(bob)", pending(t, s, bob, 0, 10, later),
		[]store.Message{first[0], other.Queued[0], twin.Queued[0], otherDevice.Queued[0]})

	// At its Expires the record is gone, so the id is new again.
	again := groupSend(alice, 1, gid(1), "again", to, exp.Add(time.Hour), 0)
	sendGroup(t, s, exp, again)
	if !again.Sent.Equal(exp) {
		t.Errorf("send after the record expired: Sent=%v, want %v", again.Sent, exp)
	}
}

// testGroupSendQueueFull: a device whose queue is full is skipped and the
// others get the message; with every device full nothing is queued, and
// the send was not accepted (a retry is new).
func testGroupSendQueueFull(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob", "carol", "dave")
	addDevice(t, s, "bob", 10)
	alice, bob1, bob2, carol := addr("alice", 1), addr("bob", 1), addr("bob", 2), addr("carol", 1)
	exp := t0.Add(day)
	fill := sendOne(t, s, t0, send(addr("dave", 1), 1, "bob", "fill", exp, 0))
	ack(t, s, t0, bob2, exp, fill[1].Seq) // bob/1 holds one item, bob/2 none
	to := []store.DeviceAddr{bob1, bob2, carol}

	g := groupSend(alice, 1, gid(1), "m", to, exp, 1)
	commitBatch(t, s, &store.Batch{Now: t0, GroupSends: []*store.GroupSend{g}})
	if g.Err != nil || g.Duplicate || !slices.Equal(g.Full, to[:1]) || len(g.Queued) != 2 {
		t.Fatalf("send with bob/1 full: Err=%v Duplicate=%v Full=%v Queued=%d; want bob/1 skipped, 2 queued", g.Err, g.Duplicate, g.Full, len(g.Queued))
	}
	if g.Queued[0].To != bob2 || g.Queued[1].To != carol {
		t.Errorf("queued for %v and %v, want bob/2 and carol/1", g.Queued[0].To, g.Queued[1].To)
	}
	checkMessages(t, "Pending(bob/1)", pending(t, s, bob1, 0, 10, t0), fill[:1])
	checkMessages(t, "Pending(bob/2)", pending(t, s, bob2, 0, 10, t0), g.Queued[:1])
	checkMessages(t, "Pending(carol/1)", pending(t, s, carol, 0, 10, t0), g.Queued[1:])

	// A group item takes its place in the queue like any other.
	e := send(addr("dave", 1), 2, "carol", "x", exp, 1)
	commit(t, s, t0, []*store.Enqueue{e}, nil)
	if !errors.Is(e.Err, store.ErrQueueFull) {
		t.Errorf("Enqueue to carol at limit 1 with a group item queued: Err=%v, want ErrQueueFull", e.Err)
	}

	depth := queueDepth(t, s)
	all := groupSend(alice, 2, gid(1), "m2", to, exp, 1)
	commitBatch(t, s, &store.Batch{Now: t0, GroupSends: []*store.GroupSend{all}})
	if !errors.Is(all.Err, store.ErrQueueFull) || all.Duplicate || all.Queued != nil || !slices.Equal(all.Full, to) {
		t.Fatalf("send with every device full: Err=%v Duplicate=%v Queued=%v Full=%v; want ErrQueueFull, all full", all.Err, all.Duplicate, all.Queued, all.Full)
	}
	checkDepth(t, s, depth)

	ack(t, s, t0, bob1, exp, fill[0].Seq)
	retry := groupSend(alice, 2, gid(1), "m2", to, exp, 1)
	commitBatch(t, s, &store.Batch{Now: t0, GroupSends: []*store.GroupSend{retry}})
	if retry.Err != nil || retry.Duplicate || len(retry.Queued) != 1 || retry.Queued[0].To != bob1 || !slices.Equal(retry.Full, to[1:]) {
		t.Fatalf("retry with room on bob/1: Err=%v Duplicate=%v Queued=%v Full=%v; want queued for bob/1 only", retry.Err, retry.Duplicate, retry.Queued, retry.Full)
	}
}

// testGroupSendRefused: a GroupSend naming a device that does not exist,
// none, or one twice is refused alone: nothing is queued, its id is not
// claimed, and the rest of the batch goes through.
func testGroupSendRefused(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob", "carol")
	alice, bob, carol := addr("alice", 1), addr("bob", 1), addr("carol", 1)
	exp := t0.Add(day)
	refused := []*store.GroupSend{
		groupSend(alice, 1, gid(1), "m", []store.DeviceAddr{bob, addr("bob", 9), carol}, exp, 0),
		groupSend(alice, 2, gid(1), "m", []store.DeviceAddr{bob, addr("ghost", 1)}, exp, 0),
		groupSend(alice, 3, gid(1), "m", nil, exp, 0),
		groupSend(alice, 4, gid(1), "m", []store.DeviceAddr{bob, carol, bob}, exp, 0),
	}
	ok := groupSend(alice, 5, gid(1), "ok", []store.DeviceAddr{bob, carol}, exp, 0)
	e := send(alice, 6, "bob", "1:1", exp, 0)
	commitBatch(t, s, &store.Batch{Now: t0, Enqueues: []*store.Enqueue{e}, GroupSends: append([]*store.GroupSend{ok}, refused...)})
	for i, g := range refused {
		if g.Err == nil || g.Duplicate || g.Queued != nil {
			t.Errorf("refused send %d: Err=%v Duplicate=%v Queued=%v; want an error, nothing queued", i, g.Err, g.Duplicate, g.Queued)
		}
		if i < 2 && !errors.Is(g.Err, store.ErrNotFound) {
			t.Errorf("send %d to a device that does not exist: Err=%v, want ErrNotFound", i, g.Err)
		}
	}
	if ok.Err != nil || len(ok.Queued) != 2 || e.Err != nil || len(e.Queued) != 1 {
		t.Fatalf("the rest of the batch: group send Err=%v Queued=%d, enqueue Err=%v Queued=%d; want both accepted", ok.Err, len(ok.Queued), e.Err, len(e.Queued))
	}
	checkMessages(t, "Pending(bob)", pending(t, s, bob, 0, 10, t0), []store.Message{e.Queued[0], ok.Queued[0]})
	checkMessages(t, "Pending(carol)", pending(t, s, carol, 0, 10, t0), ok.Queued[1:])
	checkDepth(t, s, 3)
	for i := range refused {
		sendGroup(t, s, t0, groupSend(alice, i+1, gid(1), "again", []store.DeviceAddr{bob}, exp, 0))
	}
}

// testGroupChange: seq 0 creates a group, each change must extend the
// head, and one that does not (a stale or skipped seq, a second create)
// is ErrConflict and writes nothing: not the log, not the state, no
// notice. Group and GroupLog return what was appended.
func testGroupChange(t *testing.T, h Harness) {
	s := h.Store
	ctx := context.Background()
	users(t, s, 1, "alice", "bob")
	alice, bob := addr("alice", 1), addr("bob", 1)
	g := gid(1)
	exp := t0.Add(day)
	if _, _, err := s.Group(ctx, g); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Group(no such group) = %v, want ErrNotFound", err)
	}
	checkLog(t, s, g, 0, 10)

	changes := func(cs ...*store.GroupChange) {
		t.Helper()
		commitBatch(t, s, &store.Batch{Now: t0, GroupChanges: cs})
	}
	c0 := groupChange(alice, g, 0, "change 0", "state 0", exp, "alice", "bob")
	changes(c0)
	if c0.Err != nil || len(c0.Queued) != 2 {
		t.Fatalf("create: Err=%v Queued=%d; want 2 notices", c0.Err, len(c0.Queued))
	}
	checkGroup(t, s, g, 0, "state 0", "change 0")

	refused := []*store.GroupChange{
		groupChange(bob, g, 0, "change 0 again", "state x", exp, "alice", "bob"),
		groupChange(alice, g, 2, "change 2 too early", "state x", exp, "alice", "bob"),
		groupChange(alice, g, 1<<63, "change far ahead", "state x", exp, "alice", "bob"),
	}
	changes(refused...)
	for i, c := range refused {
		if !errors.Is(c.Err, store.ErrConflict) || c.Queued != nil {
			t.Errorf("change %d: Err=%v Queued=%v; want ErrConflict, nothing queued", i, c.Err, c.Queued)
		}
	}
	checkGroup(t, s, g, 0, "state 0", "change 0")
	checkDepth(t, s, 2)

	c1 := groupChange(alice, g, 1, "change 1", "state 1", exp, "alice", "bob")
	changes(c1)
	if c1.Err != nil {
		t.Fatalf("seq 1: Err=%v", c1.Err)
	}
	checkGroup(t, s, g, 1, "state 1", "change 0", "change 1")

	// Another author's change on the head it read (0) loses the race.
	stale := groupChange(bob, g, 1, "stale", "state stale", exp, "alice", "bob")
	changes(stale)
	if !errors.Is(stale.Err, store.ErrConflict) || stale.Queued != nil {
		t.Fatalf("stale change: Err=%v Queued=%v; want ErrConflict, nothing queued", stale.Err, stale.Queued)
	}
	checkGroup(t, s, g, 1, "state 1", "change 0", "change 1")
	checkDepth(t, s, 4)
	want := []store.Message{c0.Queued[1], c1.Queued[1]}
	checkMessages(t, "Pending(bob)", pending(t, s, bob, 0, 10, t0), want)

	// In one batch the changes apply in order.
	c2, c3, c3b := groupChange(alice, g, 2, "change 2", "state 2", exp), groupChange(bob, g, 3, "change 3", "state 3", exp),
		groupChange(alice, g, 3, "change 3 again", "state x", exp)
	changes(c2, c3, c3b)
	if c2.Err != nil || c3.Err != nil || !errors.Is(c3b.Err, store.ErrConflict) {
		t.Fatalf("seqs 2, 3, 3 in one batch: Err=%v, %v, %v; want nil, nil, ErrConflict", c2.Err, c3.Err, c3b.Err)
	}
	checkGroup(t, s, g, 3, "state 3", "change 0", "change 1", "change 2", "change 3")
	checkLog(t, s, g, 1, 2, "change 1", "change 2")
	checkLog(t, s, g, 3, 10, "change 3")
	checkLog(t, s, g, 4, 10)
	checkLog(t, s, g, 0, 0)
	checkLog(t, s, g, 1<<63, 10)

	// Groups are separate; a change to one that does not exist is
	// ErrNotFound.
	other := groupChange(alice, gid(2), 1, "change 1", "state 1", exp, "alice")
	changes(other)
	if !errors.Is(other.Err, store.ErrNotFound) || other.Queued != nil {
		t.Fatalf("seq 1 of a group that does not exist: Err=%v Queued=%v; want ErrNotFound", other.Err, other.Queued)
	}
	if _, _, err := s.Group(ctx, gid(2)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Group after a refused change = %v, want ErrNotFound", err)
	}
	changes(groupChange(bob, gid(2), 0, "other 0", "other state", exp))
	checkGroup(t, s, gid(2), 0, "other state", "other 0")
	checkGroup(t, s, g, 3, "state 3", "change 0", "change 1", "change 2", "change 3")
	checkDepth(t, s, 4)
}

// testGroupChangeNotices: a change is queued for every device of the users
// in Notify (each user once, unknown users skipped), with its author,
// group and payload.
func testGroupChangeNotices(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob", "carol", "dave")
	addDevice(t, s, "alice", 10)
	addDevice(t, s, "carol", 11)
	addDevice(t, s, "carol", 12)
	author := addr("alice", 2)
	now := t0.Add(time.Minute)
	exp := now.Add(day)
	c := groupChange(author, gid(1), 0, "genesis", "state", exp, "carol", "alice", "ghost", "bob", "carol")
	commitBatch(t, s, &store.Batch{Now: now, GroupChanges: []*store.GroupChange{c}})
	if c.Err != nil {
		t.Fatalf("Err=%v", c.Err)
	}
	to := []store.DeviceAddr{addr("carol", 1), addr("carol", 2), addr("carol", 3), addr("alice", 1), author, addr("bob", 1)}
	if len(c.Queued) != len(to) {
		t.Fatalf("%d notices queued, want %d", len(c.Queued), len(to))
	}
	for i, d := range to {
		want := store.Message{Seq: c.Queued[i].Seq, To: d, Kind: store.KindGroupChange, From: author,
			Payload: []byte("genesis"), Sent: now, Expires: exp, Group: gid(1)}
		checkMessages(t, fmt.Sprintf("Queued[%d]", i), c.Queued[i:i+1], []store.Message{want})
		checkMessages(t, fmt.Sprintf("Pending(%v)", d), pending(t, s, d, 0, 10, now), c.Queued[i:i+1])
		if i > 0 && c.Queued[i].Seq <= c.Queued[i-1].Seq {
			t.Errorf("Queued seqs %v, want increasing", seqs(c.Queued))
		}
	}
	if got := pending(t, s, addr("dave", 1), 0, 10, now); len(got) != 0 {
		t.Errorf("dave, not notified, has %d items", len(got))
	}
	checkDepth(t, s, int64(len(to)))
}

// testGroupAck: acknowledged group items leave their device's queue; a
// group message's ack queues a receipt for its sender's device, as a 1:1
// message's does, and a change's queues none; the devices that have not
// acknowledged keep the whole message.
func testGroupAck(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob", "carol")
	addDevice(t, s, "bob", 10)
	alice, bob1, bob2, carol := addr("alice", 1), addr("bob", 1), addr("bob", 2), addr("carol", 1)
	exp := t0.Add(day)
	c := groupChange(alice, gid(1), 0, "genesis", "state", exp, "bob")
	g := groupSend(alice, 1, gid(1), "hello", []store.DeviceAddr{bob1, bob2, carol}, exp, 0)
	commitBatch(t, s, &store.Batch{Now: t0, GroupChanges: []*store.GroupChange{c}, GroupSends: []*store.GroupSend{g}})
	if c.Err != nil || g.Err != nil || len(c.Queued) != 2 || len(g.Queued) != 3 {
		t.Fatalf("change Err=%v Queued=%d, send Err=%v Queued=%d", c.Err, len(c.Queued), g.Err, len(g.Queued))
	}

	now := t0.Add(time.Minute)
	rexp := now.Add(2 * day)
	a := &store.Ack{Device: bob1, Seqs: []uint64{c.Queued[0].Seq, g.Queued[0].Seq, g.Queued[0].Seq}, Expires: rexp}
	foreign := &store.Ack{Device: carol, Seqs: []uint64{g.Queued[1].Seq}, Expires: rexp}
	commit(t, s, now, nil, []*store.Ack{a, foreign})
	receipt := func(by store.DeviceAddr, r []store.Message) {
		t.Helper()
		if len(r) != 1 {
			t.Fatalf("%v's ack made %d receipts, want 1", by, len(r))
		}
		want := store.Message{Seq: r[0].Seq, To: alice, Kind: store.KindReceipt, From: by, ClientID: cid(1), Sent: now, Expires: rexp}
		checkMessages(t, fmt.Sprintf("%v's receipt", by), r, []store.Message{want})
	}
	receipt(bob1, a.Receipts) // one: the change makes none, the repeat none
	if len(foreign.Receipts) != 0 {
		t.Errorf("carol's ack of bob/2's item made %d receipts", len(foreign.Receipts))
	}
	if got := pending(t, s, bob1, 0, 10, now); len(got) != 0 {
		t.Errorf("bob/1 still has %v", seqs(got))
	}
	checkMessages(t, "Pending(bob/2)", pending(t, s, bob2, 0, 10, now), []store.Message{c.Queued[1], g.Queued[1]})
	checkMessages(t, "Pending(carol)", pending(t, s, carol, 0, 10, now), g.Queued[2:])
	checkMessages(t, "Pending(alice)", pending(t, s, alice, 0, 10, now), a.Receipts)
	checkDepth(t, s, 4)

	// The rest in one batch, the last reference among them.
	b2 := &store.Ack{Device: bob2, Seqs: []uint64{g.Queued[1].Seq, c.Queued[1].Seq}, Expires: rexp}
	c1 := &store.Ack{Device: carol, Seqs: []uint64{g.Queued[2].Seq}, Expires: rexp}
	commit(t, s, now, nil, []*store.Ack{b2, c1})
	receipt(bob2, b2.Receipts)
	receipt(carol, c1.Receipts)
	for _, d := range []store.DeviceAddr{bob1, bob2, carol} {
		if got := pending(t, s, d, 0, 10, now); len(got) != 0 {
			t.Errorf("%v still has %v", d, seqs(got))
		}
	}
	checkDepth(t, s, 3)
	if r := ack(t, s, now, alice, rexp, seqs(pending(t, s, alice, 0, 10, now))...); len(r) != 0 {
		t.Errorf("acking the receipts made %d receipts", len(r))
	}
	checkDepth(t, s, 0)
}

// testGroupAckMany: a draining device's one large Ack over many group
// messages and 1:1 items, with other devices' small Acks of the same group
// messages in the batch: each gets the receipts of its own messages, in
// Seq order, and what nobody acknowledged stays whole.
func testGroupAckMany(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := addr("alice", 1), addr("bob", 1), addr("carol", 1), addr("dave", 1)
	exp := t0.Add(day)
	var bobs, carols []store.Message
	for i := range 20 {
		q := sendGroup(t, s, t0, groupSend(alice, 100+i, gid(1), fmt.Sprint("group ", i), []store.DeviceAddr{bob, carol}, exp, 0))
		bobs, carols = append(bobs, q[0]), append(carols, q[1])
		if i%4 == 0 {
			bobs = append(bobs, sendOne(t, s, t0, send(dave, i, "bob", fmt.Sprint("1:1 ", i), exp, 0))...)
		}
	}
	now := t0.Add(time.Minute)
	large := &store.Ack{Device: bob, Seqs: slices.Concat(seqs(bobs), []uint64{carols[5].Seq}), Expires: exp}
	small := &store.Ack{Device: carol, Seqs: []uint64{carols[0].Seq, carols[7].Seq, carols[19].Seq}, Expires: exp}
	commit(t, s, now, nil, []*store.Ack{small, large})

	for name, c := range map[string]struct {
		a     *store.Ack
		items []store.Message
	}{"bob's large ack": {large, bobs}, "carol's small ack": {small, []store.Message{carols[0], carols[7], carols[19]}}} {
		if len(c.a.Receipts) != len(c.items) {
			t.Fatalf("%s: %d receipts, want %d", name, len(c.a.Receipts), len(c.items))
		}
		for i, m := range c.items {
			want := store.Message{Seq: c.a.Receipts[i].Seq, To: m.From, Kind: store.KindReceipt, From: c.a.Device, ClientID: m.ClientID, Sent: now, Expires: exp}
			checkMessages(t, fmt.Sprintf("%s: receipt %d", name, i), c.a.Receipts[i:i+1], []store.Message{want})
			if i > 0 && c.a.Receipts[i].Seq <= c.a.Receipts[i-1].Seq {
				t.Errorf("%s: receipts not in Seq order: %v", name, seqs(c.a.Receipts))
			}
		}
	}
	if got := pending(t, s, bob, 0, 100, now); len(got) != 0 {
		t.Errorf("bob still has %v", seqs(got))
	}
	left := slices.Concat(carols[1:7], carols[8:19])
	checkMessages(t, "Pending(carol)", pending(t, s, carol, 0, 100, now), left)
	checkDepth(t, s, int64(len(left)+len(bobs)+len(small.Receipts)))
}

// testGroupExpire: group items expire at their send's Expires: Pending
// hides them from then on, and Expire removes them (and counts them),
// whether or not other devices have acknowledged theirs, and leaves
// everything else.
func testGroupExpire(t *testing.T, h Harness) {
	ctx := context.Background()
	s := h.Store
	users(t, s, 1, "alice", "bob", "carol")
	addDevice(t, s, "bob", 10)
	alice, bob1, bob2, carol := addr("alice", 1), addr("bob", 1), addr("bob", 2), addr("carol", 1)
	short, long := t0.Add(time.Minute), t0.Add(day)
	cShort := groupChange(alice, gid(1), 0, "genesis", "state", short, "bob")
	eShort := send(carol, 1, "bob", "1:1", short, 0)
	gShort := groupSend(alice, 1, gid(1), "short", []store.DeviceAddr{bob1, bob2, carol}, short, 0)
	gLong := groupSend(alice, 2, gid(1), "long", []store.DeviceAddr{bob1, carol}, long, 0)
	commitBatch(t, s, &store.Batch{Now: t0, GroupChanges: []*store.GroupChange{cShort}, Enqueues: []*store.Enqueue{eShort},
		GroupSends: []*store.GroupSend{gShort, gLong}})
	if r := ack(t, s, t0, carol, long, gShort.Queued[2].Seq); len(r) != 1 {
		t.Fatalf("carol's ack made %d receipts, want 1", len(r))
	}

	all := []store.Message{cShort.Queued[0], eShort.Queued[0], gShort.Queued[0], gLong.Queued[0]}
	checkMessages(t, "Pending(bob/1) just before the expiry", pending(t, s, bob1, 0, 10, short.Add(-1)), all)
	checkMessages(t, "Pending(bob/1) at the expiry", pending(t, s, bob1, 0, 10, short), all[3:])
	if n, err := s.Expire(ctx, short.Add(-1)); err != nil || n != 0 {
		t.Fatalf("Expire before anything expired = %d, %v; want 0", n, err)
	}
	n, err := s.Expire(ctx, short)
	if err != nil {
		t.Fatalf("Expire: %v", err)
	}
	if n != 6 { // bob/1's and bob/2's notice, 1:1 copy and group message
		t.Errorf("Expire removed %d items, want 6", n)
	}
	checkMessages(t, "Pending(bob/1) after Expire (read at t0)", pending(t, s, bob1, 0, 10, t0), all[3:])
	checkMessages(t, "Pending(bob/2) after Expire (read at t0)", pending(t, s, bob2, 0, 10, t0), nil)
	checkMessages(t, "Pending(carol) after Expire (read at t0)", pending(t, s, carol, 0, 10, t0), gLong.Queued[1:])
	if n, err := s.Expire(ctx, short); err != nil || n != 0 {
		t.Errorf("second Expire = %d, %v; want 0", n, err)
	}
	checkDepth(t, s, 3) // gLong's two items and alice's receipt

	// The lengths followed: at limit 2, bob/1 (one item) has room for one more.
	sendOne(t, s, short, send(carol, 2, "bob", "fits", long, 2))
	e := send(carol, 3, "bob", "full", long, 2)
	commit(t, s, short, []*store.Enqueue{e}, nil)
	if !errors.Is(e.Err, store.ErrQueueFull) {
		t.Errorf("after expiry and one send at limit 2: Err=%v, want ErrQueueFull", e.Err)
	}
	// What did not expire is whole and acknowledged as usual.
	if r := ack(t, s, short, bob1, long, gLong.Queued[0].Seq); len(r) != 1 {
		t.Errorf("ack of the long message made %d receipts, want 1", len(r))
	}
	if n, err := s.Expire(ctx, long); err != nil || n != 5 {
		t.Errorf("Expire at the long expiry = %d, %v; want 5 (carol's group item, bob's two 1:1 copies, alice's two receipts)", n, err)
	}
	checkDepth(t, s, 0)
}

// testGroupBatchOrder: a batch applies its group changes, then its
// enqueues, then its group sends, then its acks, whatever order the
// caller filled it in, so a change and a message committed together reach
// every queue in that order.
func testGroupBatchOrder(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	alice, bob := addr("alice", 1), addr("bob", 1)
	exp := t0.Add(day)
	prior := sendOne(t, s, t0, send(alice, 9, "bob", "earlier", exp, 0))
	c := groupChange(alice, gid(1), 0, "add bob", "state", exp, "alice", "bob")
	e := send(alice, 1, "bob", "1:1", exp, 0)
	g := groupSend(alice, 2, gid(1), "welcome", []store.DeviceAddr{bob}, exp, 0)
	a := &store.Ack{Device: bob, Seqs: []uint64{prior[0].Seq}, Expires: exp}
	commitBatch(t, s, &store.Batch{Now: t0, Acks: []*store.Ack{a}, GroupSends: []*store.GroupSend{g},
		Enqueues: []*store.Enqueue{e}, GroupChanges: []*store.GroupChange{c}})
	if c.Err != nil || e.Err != nil || g.Err != nil || len(a.Receipts) != 1 {
		t.Fatalf("change Err=%v, enqueue Err=%v, group send Err=%v, %d receipts", c.Err, e.Err, g.Err, len(a.Receipts))
	}
	checkMessages(t, "Pending(bob)", pending(t, s, bob, 0, 10, t0), []store.Message{c.Queued[1], e.Queued[0], g.Queued[0]})
	checkMessages(t, "Pending(alice)", pending(t, s, alice, 0, 10, t0), []store.Message{c.Queued[0], a.Receipts[0]})
}

// testGroupDurability: groups, their logs, group items with their payload,
// a group send's deduplication and the queue lengths survive a restart.
func testGroupDurability(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("harness has no Reopen")
	}
	s := h.Store
	users(t, s, 1, "alice", "bob")
	addDevice(t, s, "bob", 10)
	alice, bob1, bob2 := addr("alice", 1), addr("bob", 1), addr("bob", 2)
	exp := t0.Add(day)
	c := groupChange(alice, gid(1), 0, "genesis", "state 0", exp, "bob")
	g := groupSend(alice, 1, gid(1), "kept", []store.DeviceAddr{bob1, bob2}, exp, 0)
	commitBatch(t, s, &store.Batch{Now: t0, GroupChanges: []*store.GroupChange{c}, GroupSends: []*store.GroupSend{g}})
	if c.Err != nil || g.Err != nil {
		t.Fatalf("change Err=%v, send Err=%v", c.Err, g.Err)
	}
	ack(t, s, t0, bob1, exp, c.Queued[0].Seq, g.Queued[0].Seq)

	s = h.Reopen(t)
	checkGroup(t, s, gid(1), 0, "state 0", "genesis")
	checkMessages(t, "Pending(bob/2)", pending(t, s, bob2, 0, 10, t0), []store.Message{c.Queued[1], g.Queued[1]})
	dup := groupSend(alice, 1, gid(1), "kept", []store.DeviceAddr{bob1, bob2}, exp, 0)
	commitBatch(t, s, &store.Batch{Now: t0, GroupSends: []*store.GroupSend{dup}})
	if !dup.Duplicate || !dup.Sent.Equal(t0) {
		t.Errorf("resend after reopen: Duplicate=%v Sent=%v; want a duplicate of the send at %v", dup.Duplicate, dup.Sent, t0)
	}
	full := groupSend(alice, 2, gid(1), "m", []store.DeviceAddr{bob1, bob2}, exp, 2)
	commitBatch(t, s, &store.Batch{Now: t0, GroupSends: []*store.GroupSend{full}})
	if full.Err != nil || !slices.Equal(full.Full, []store.DeviceAddr{bob2}) {
		t.Errorf("send at limit 2 after reopen: Err=%v Full=%v; want bob/2 (2 items) full", full.Err, full.Full)
	}
	if r := ack(t, s, t0, bob2, exp, c.Queued[1].Seq, g.Queued[1].Seq); len(r) != 1 {
		t.Errorf("bob/2's ack after reopen made %d receipts, want 1", len(r))
	}
	c1 := groupChange(alice, gid(1), 1, "change 1", "state 1", exp)
	stale := groupChange(alice, gid(1), 0, "genesis again", "state x", exp)
	commitBatch(t, s, &store.Batch{Now: t0, GroupChanges: []*store.GroupChange{c1, stale}})
	if c1.Err != nil || !errors.Is(stale.Err, store.ErrConflict) {
		t.Errorf("after reopen: seq 1 Err=%v, seq 0 Err=%v; want nil, ErrConflict", c1.Err, stale.Err)
	}
}

// testGroupFailedCommit: a Commit that fails applies none of its group
// changes and sends, and claims nothing.
func testGroupFailedCommit(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	alice, bob := addr("alice", 1), addr("bob", 1)
	exp := t0.Add(day)
	c := groupChange(alice, gid(1), 0, "genesis", "state", exp, "bob")
	g := groupSend(alice, 1, gid(1), "m", []store.DeviceAddr{bob}, exp, 0)
	b := &store.Batch{Now: t0, GroupChanges: []*store.GroupChange{c}, GroupSends: []*store.GroupSend{g}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Commit(ctx, b); err == nil {
		t.Fatal("Commit with a cancelled context succeeded")
	}
	if _, _, err := s.Group(context.Background(), gid(1)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Group after a failed Commit = %v, want ErrNotFound", err)
	}
	if got := pending(t, s, bob, 0, 10, t0); len(got) != 0 {
		t.Errorf("failed Commit queued %d items", len(got))
	}
	commitBatch(t, s, b)
	if c.Err != nil || g.Err != nil || g.Duplicate {
		t.Errorf("the batch again: change Err=%v, send Err=%v Duplicate=%v; want both applied", c.Err, g.Err, g.Duplicate)
	}
}

// testGroupEmptyState: a group whose state is empty (the store does not
// read it) is created and advanced like any other.
func testGroupEmptyState(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice")
	alice, g, exp := addr("alice", 1), gid(3), t0.Add(day)
	for seq, change := range []string{"change 0", "change 1"} {
		c := groupChange(alice, g, uint64(seq), change, "", exp, "alice")
		commitBatch(t, s, &store.Batch{Now: t0, GroupChanges: []*store.GroupChange{c}})
		if c.Err != nil {
			t.Fatalf("change %d with an empty state: %v", seq, c.Err)
		}
	}
	checkGroup(t, s, g, 1, "", "change 0", "change 1")
}
