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

// testAcksOfManyDevices: one batch carrying what a busy server's does —
// small Acks from many devices (a chat) next to a large one (a drain) —
// removes for each Ack exactly its own device's items, whichever way a
// store groups them: a seq of another device's queue is ignored whether it
// is named in a small or a large Ack, and every Ack gets the receipts of
// its own messages, in Seq order.
func testAcksOfManyDevices(t *testing.T, h Harness) {
	s := h.Store
	ctx := context.Background()
	users(t, s, 1, "alice", "bob", "carol", "dave")
	exp := t0.Add(day)
	var bobs []store.Message // 40: a drain's worth of acks in one Ack
	for i := range 40 {
		bobs = append(bobs, sendOne(t, s, t0, send(addr("alice", 1), 100+i, "bob", "m", exp, 0))...)
	}
	carols := sendOne(t, s, t0, send(addr("dave", 1), 1, "carol", "c", exp, 0))
	daves := sendOne(t, s, t0, send(addr("carol", 1), 2, "dave", "d", exp, 0))
	n, err := s.QueueDepth(ctx)
	if err != nil {
		t.Fatal(err)
	}

	now := t0.Add(time.Minute)
	rexp := now.Add(day)
	large := &store.Ack{Device: addr("bob", 1), Expires: rexp}
	for _, m := range bobs[:38] {
		large.Seqs = append(large.Seqs, m.Seq)
	}
	large.Seqs = append(large.Seqs, carols[0].Seq) // carol's, not bob's
	carolAck := &store.Ack{Device: addr("carol", 1), Seqs: []uint64{bobs[38].Seq, carols[0].Seq}, Expires: rexp}
	daveAck := &store.Ack{Device: addr("dave", 1), Seqs: []uint64{daves[0].Seq, bobs[39].Seq}, Expires: rexp}
	bobSmall := &store.Ack{Device: addr("bob", 1), Seqs: []uint64{bobs[39].Seq}, Expires: rexp}
	commit(t, s, now, nil, []*store.Ack{carolAck, large, daveAck, bobSmall})

	check := func(name string, a *store.Ack, want ...store.Message) {
		t.Helper()
		if len(a.Receipts) != len(want) {
			t.Fatalf("%s: %d receipts, want %d", name, len(a.Receipts), len(want))
		}
		for i, m := range want {
			r := a.Receipts[i]
			if r.To != m.From || r.From != a.Device || r.ClientID != m.ClientID || r.Kind != store.KindReceipt {
				t.Errorf("%s: receipt %d is %+v, want one to %v for %x", name, i, r, m.From, m.ClientID)
			}
			if i > 0 && r.Seq <= a.Receipts[i-1].Seq {
				t.Errorf("%s: receipts not in Seq order: %v", name, seqs(a.Receipts))
			}
		}
	}
	check("bob's large ack", large, bobs[:38]...)
	check("carol's ack", carolAck, carols[0])
	check("dave's ack", daveAck, daves[0])
	check("bob's small ack", bobSmall, bobs[39])
	// bobs[38], named only by carol, is still bob's.
	checkMessages(t, "Pending(bob)", pending(t, s, addr("bob", 1), 0, 100, now), bobs[38:39])
	for _, d := range []store.DeviceAddr{addr("carol", 1), addr("dave", 1)} {
		if got := pending(t, s, d, 0, 10, now); len(got) != 1 || got[0].Kind != store.KindReceipt {
			t.Errorf("%v's queue: %v, want just the receipt for what it sent", d, seqs(got))
		}
	}
	// 41 items removed, 41 receipts queued (39 to alice, one each to
	// carol and dave); the lengths are exact.
	if got, err := s.QueueDepth(ctx); err != nil || got != n {
		t.Errorf("QueueDepth %d → %d, %v; want it unchanged", n, got, err)
	}
	sendOne(t, s, now, send(addr("alice", 1), 200, "bob", "fits", exp, 2))
	e := send(addr("alice", 1), 201, "bob", "full", exp, 2)
	commit(t, s, now, []*store.Enqueue{e}, nil)
	if !errors.Is(e.Err, store.ErrQueueFull) {
		t.Errorf("third item at limit 2: Err=%v, want ErrQueueFull (bob's queue length drifted)", e.Err)
	}
}

// testLargeAckSameUserOtherDevice: an Ack is matched by device, not by
// user, however many seqs it names. bob's first device acknowledges, in
// one large Ack, its own items and those of bob's second device: only its
// own go, with a receipt each; the second device's stay queued for it. (A
// store that matched only the user would delete them, and a drain from one
// device would lose every other device's messages.)
func testLargeAckSameUserOtherDevice(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	addDevice(t, s, "bob", 3)
	exp := t0.Add(day)
	bob1, bob2 := addr("bob", 1), addr("bob", 2)
	var own, other []store.Message
	for i := range 20 {
		for _, m := range sendOne(t, s, t0, send(addr("alice", 1), 1+i, "bob", "m", exp, 0)) {
			switch m.To {
			case bob1:
				own = append(own, m)
			case bob2:
				other = append(other, m)
			}
		}
	}
	if len(own) != 20 || len(other) != 20 {
		t.Fatalf("queued %d for bob's first device and %d for his second, want 20 each", len(own), len(other))
	}
	// Small and large Acks take different paths in a store; check both.
	for _, round := range []struct{ own, other []store.Message }{
		{own[:1], other[:1]}, // small
		{own[1:], other},     // large
	} {
		a := &store.Ack{Device: bob1, Expires: exp}
		for _, m := range append(append([]store.Message(nil), round.own...), round.other...) {
			a.Seqs = append(a.Seqs, m.Seq)
		}
		commit(t, h.Store, t0, nil, []*store.Ack{a})
		if len(a.Receipts) != len(round.own) {
			t.Errorf("an ack of %d own and %d other-device seqs made %d receipts, want %d", len(round.own), len(round.other), len(a.Receipts), len(round.own))
		}
		checkMessages(t, "Pending(bob's second device)", pending(t, s, bob2, 0, 100, t0), other)
	}
	if got := pending(t, s, bob1, 0, 100, t0); len(got) != 0 {
		t.Errorf("bob's first device still has %d items after acknowledging all", len(got))
	}
}
