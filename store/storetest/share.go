package storetest

import (
	"errors"
	"slices"
	"testing"

	"github.com/magpie-im/magpie/store"
)

// shared is send with a sender share.
func shared(from store.DeviceAddr, id int, to string, share int) *store.Enqueue {
	e := send(from, id, to, "m", t0.Add(day), 100)
	e.SenderShare = share
	return e
}

// testSenderShare: one sender holds at most its share of a device's queue;
// others still get in; an acknowledgement makes room for exactly what it
// removed; a group send skips a device where the sender is at its share;
// sends to one's own account are exempt; the share survives a reopen.
func testSenderShare(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob", "carol")
	addDevice(t, s, "alice", 10)
	alice, bob, carol := addr("alice", 1), addr("bob", 1), addr("carol", 1)
	var first []store.Message
	for i := range 3 {
		q := sendOne(t, s, t0, shared(alice, i, "bob", 3))
		if i == 0 {
			first = q
		}
	}
	over := shared(alice, 3, "bob", 3)
	other := shared(carol, 1, "bob", 3)
	commit(t, s, t0, []*store.Enqueue{over, other}, nil)
	if !errors.Is(over.Err, store.ErrSenderShare) || over.Queued != nil {
		t.Fatalf("a fourth send at a share of 3: Err=%v Queued=%v; want ErrSenderShare", over.Err, over.Queued)
	}
	if other.Err != nil || len(other.Queued) != 1 {
		t.Fatalf("another sender, same batch: Err=%v; want accepted", other.Err)
	}
	// The refused id was not taken: a retry later is new, not a duplicate.
	ack(t, s, t0, bob, t0.Add(day), first[0].Seq)
	retry := shared(alice, 3, "bob", 3)
	commit(t, s, t0, []*store.Enqueue{retry}, nil)
	if retry.Err != nil || retry.Duplicate || len(retry.Queued) != 1 {
		t.Fatalf("after bob acknowledged one: Err=%v Duplicate=%v; want accepted", retry.Err, retry.Duplicate)
	}
	again := shared(alice, 4, "bob", 3)
	commit(t, s, t0, []*store.Enqueue{again}, nil)
	if !errors.Is(again.Err, store.ErrSenderShare) {
		t.Fatalf("at the share again: Err=%v; want ErrSenderShare", again.Err)
	}
	// Group messages count and are held back the same way.
	g := groupSend(alice, 9, gid(1), "g", []store.DeviceAddr{bob, carol}, t0.Add(day), 100)
	g.SenderShare = 3
	commitBatch(t, s, &store.Batch{Now: t0, GroupSends: []*store.GroupSend{g}})
	if g.Err != nil || !slices.Equal(g.Full, []store.DeviceAddr{bob}) || len(g.Queued) != 1 || g.Queued[0].To != carol {
		t.Fatalf("a group send at alice's share of bob's queue: Err=%v Full=%v Queued=%d; want bob skipped", g.Err, g.Full, len(g.Queued))
	}
	// One's own devices are not held to a share.
	for i := range 5 {
		sendOne(t, s, t0, shared(alice, 20+i, "alice", 3))
	}
	// A reopened store counts again.
	if h.Reopen != nil {
		s = h.Reopen(t)
		after := shared(alice, 5, "bob", 3)
		commit(t, s, t0, []*store.Enqueue{after}, nil)
		if !errors.Is(after.Err, store.ErrSenderShare) {
			t.Fatalf("after reopening: Err=%v; want ErrSenderShare", after.Err)
		}
	}
}

// testSenderShareCountsStoredGroupMessages: a sender's part of a queue,
// counted from what is stored, includes its group messages.
func testSenderShareCountsStoredGroupMessages(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob", "carol")
	alice, bob, carol := addr("alice", 1), addr("bob", 1), addr("carol", 1)
	for i := range 2 {
		g := groupSend(alice, 10+i, gid(1), "g", []store.DeviceAddr{bob}, t0.Add(day), 100)
		commitBatch(t, s, &store.Batch{Now: t0, GroupSends: []*store.GroupSend{g}})
		if g.Err != nil || len(g.Queued) != 1 {
			t.Fatalf("group send %d: Err=%v Queued=%d", i, g.Err, len(g.Queued))
		}
	}
	sendOne(t, s, t0, send(alice, 1, "bob", "m", t0.Add(day), 100))
	over := shared(alice, 2, "bob", 3)
	commit(t, s, t0, []*store.Enqueue{over}, nil)
	if !errors.Is(over.Err, store.ErrSenderShare) {
		t.Fatalf("alice holds two group messages and a message in bob's queue, share 3: Err=%v; want ErrSenderShare", over.Err)
	}
	// A group send is held to the share with no queue limit too, for the
	// device where the sender is at its share only.
	g := groupSend(alice, 20, gid(1), "g", []store.DeviceAddr{bob, carol}, t0.Add(day), 0)
	g.SenderShare = 3
	commitBatch(t, s, &store.Batch{Now: t0, GroupSends: []*store.GroupSend{g}})
	if g.Err != nil || !slices.Equal(g.Full, []store.DeviceAddr{bob}) || len(g.Queued) != 1 || g.Queued[0].To != carol {
		t.Fatalf("a group send at alice's share of bob's queue, no queue limit: Err=%v Full=%v Queued=%v; want bob skipped, carol queued", g.Err, g.Full, g.Queued)
	}
}
