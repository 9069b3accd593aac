package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/magpie-im/magpie/store"
)

// testAckMany: one Ack naming many seqs at once (as a device draining its
// queue sends them) — messages from several senders, a receipt, a repeat,
// unknown seqs and another device's item — removes exactly this device's
// items, queues one receipt per message for its sender, lists the receipts
// in Seq order, and keeps the queue lengths exact; a second Ack in the same
// batch naming some of the same seqs changes nothing more.
func testAckMany(t *testing.T, h Harness) {
	s := h.Store
	ctx := context.Background()
	users(t, s, 1, "alice", "bob", "carol")
	exp := t0.Add(day)
	bob := addr("bob", 1)
	var items []store.Message // bob's queue, in order
	for i, from := range []string{"alice", "carol", "alice", "carol", "alice"} {
		items = append(items, sendOne(t, s, t0, send(addr(from, 1), 10+i, "bob", "m", exp, 0))...)
	}
	// A receipt in bob's queue: alice acknowledges a message from bob.
	fromBob := sendOne(t, s, t0, send(bob, 20, "alice", "to alice", exp, 0))
	items = append(items, ack(t, s, t0, addr("alice", 1), exp, fromBob[0].Seq)...)
	// Alice's own item, which bob must not be able to remove.
	other := sendOne(t, s, t0, send(addr("carol", 1), 30, "alice", "to alice", exp, 0))

	depth := func() int64 {
		t.Helper()
		n, err := s.QueueDepth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := depth()
	now := t0.Add(time.Minute)
	rexp := now.Add(2 * day)
	list := []uint64{0, items[4].Seq, items[0].Seq, other[0].Seq, items[5].Seq, items[2].Seq, items[0].Seq,
		items[1].Seq, 1 << 62, items[3].Seq}
	a := &store.Ack{Device: bob, Seqs: list, Expires: rexp}
	again := &store.Ack{Device: bob, Seqs: []uint64{items[1].Seq, items[4].Seq}, Expires: rexp}
	commit(t, s, now, nil, []*store.Ack{a, again})

	var want []store.Message
	for _, m := range items[:5] { // the receipt (items[5]) makes none
		want = append(want, store.Message{To: m.From, Kind: store.KindReceipt, From: bob, ClientID: m.ClientID, Sent: now, Expires: rexp})
	}
	if len(a.Receipts) != len(want) {
		t.Fatalf("%d receipts (seqs %v), want %d", len(a.Receipts), seqs(a.Receipts), len(want))
	}
	for i := 1; i < len(a.Receipts); i++ {
		if a.Receipts[i].Seq <= a.Receipts[i-1].Seq {
			t.Fatalf("receipts not in Seq order: %v", seqs(a.Receipts))
		}
	}
	// Receipts are matched to their messages by client id: which receipt
	// gets which seq is the store's choice.
	for _, w := range want {
		found := false
		for _, r := range a.Receipts {
			if r.ClientID == w.ClientID {
				w.Seq = r.Seq
				if d := diffMessage(r, w); d != "" {
					t.Errorf("receipt for %x: %s", w.ClientID, d)
				}
				found = true
			}
		}
		if !found {
			t.Errorf("no receipt for %x", w.ClientID)
		}
	}
	if len(again.Receipts) != 0 {
		t.Errorf("the repeated ack made %d receipts, want 0", len(again.Receipts))
	}
	if got := pending(t, s, bob, 0, 10, now); len(got) != 0 {
		t.Errorf("bob still has %d items (seqs %v)", len(got), seqs(got))
	}
	// Alice: her own item from carol, then her 3 receipts; carol: 2.
	gotAlice := pending(t, s, addr("alice", 1), 0, 10, now)
	if len(gotAlice) != 4 || gotAlice[0].Seq != other[0].Seq {
		t.Errorf("alice's queue %v, want carol's item %d and 3 receipts", seqs(gotAlice), other[0].Seq)
	}
	if got := pending(t, s, addr("carol", 1), 0, 10, now); len(got) != 2 {
		t.Errorf("carol's queue has %d items, want 2 receipts", len(got))
	}
	if after := depth(); after != before-6+5 {
		t.Errorf("queue depth %d → %d, want %d (6 removed, 5 receipts)", before, after, before-1)
	}
	// The lengths are exact: bob's queue is empty, so a send at limit 1
	// fits and the next does not.
	sendOne(t, s, now, send(addr("alice", 1), 40, "bob", "fits", exp, 1))
	e := send(addr("alice", 1), 41, "bob", "full", exp, 1)
	commit(t, s, now, []*store.Enqueue{e}, nil)
	if !errors.Is(e.Err, store.ErrQueueFull) {
		t.Errorf("second send at limit 1: Err=%v, want ErrQueueFull (bob's queue length drifted)", e.Err)
	}
}
