package pebblestore_test

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/pebblestore"
	"github.com/magpie-im/magpie/store/sqlite"
)

var now = time.Unix(1_700_000_000, 123)

func dev(u string, d uint32) store.DeviceAddr { return store.DeviceAddr{User: u, Device: d} }

// oldDataDir fills a data directory the way a server before Pebble left
// it: queues, receipts, a group message and change, and dedup records in
// magpie.db. It returns what each device had pending.
func oldDataDir(t *testing.T, dir string) map[store.DeviceAddr][]store.Message {
	t.Helper()
	ctx := context.Background()
	s, err := sqlite.Open(filepath.Join(dir, "magpie.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i, u := range []string{"alice", "bob", "carol"} {
		if _, err := s.CreateUser(ctx, u, [store.KeySize]byte{byte(i + 1)}, now); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AddDevice(ctx, "bob", [store.KeySize]byte{9}, now); err != nil {
		t.Fatal(err)
	}
	exp := now.Add(time.Hour)
	gid := [store.GroupIDSize]byte{7}
	b := &store.Batch{Now: now,
		GroupChanges: []*store.GroupChange{{From: dev("alice", 1), Group: gid, Change: []byte("create"), State: []byte("state0"), Notify: []string{"alice", "bob"}, Expires: exp}},
		Enqueues: []*store.Enqueue{
			{From: dev("alice", 1), ClientID: [16]byte{1}, To: "bob", Payload: []byte("hello bob"), Expires: exp},
			{From: dev("carol", 1), ClientID: [16]byte{2}, To: "alice", Payload: []byte("hello alice"), Expires: exp},
		},
		GroupSends: []*store.GroupSend{{From: dev("alice", 1), ClientID: [16]byte{3}, Group: gid, Payload: []byte("to the group"), To: []store.DeviceAddr{dev("bob", 1), dev("bob", 2)}, Expires: exp}},
	}
	if err := s.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	// alice acks carol's message: carol gets a receipt.
	if err := s.Commit(ctx, &store.Batch{Now: now, Acks: []*store.Ack{{Device: dev("alice", 1), Seqs: []uint64{b.Enqueues[1].Queued[0].Seq}, Expires: exp}}}); err != nil {
		t.Fatal(err)
	}
	pending := make(map[store.DeviceAddr][]store.Message)
	for _, d := range []store.DeviceAddr{dev("alice", 1), dev("bob", 1), dev("bob", 2), dev("carol", 1)} {
		ms, err := s.Pending(ctx, d, 0, 100, now)
		if err != nil {
			t.Fatal(err)
		}
		pending[d] = ms
	}
	if len(pending[dev("bob", 1)]) != 3 || len(pending[dev("carol", 1)]) != 1 || len(pending[dev("alice", 1)]) != 1 {
		t.Fatalf("setup: pending %v", pending)
	}
	return pending
}

func samePending(t *testing.T, s store.Store, want map[store.DeviceAddr][]store.Message) {
	t.Helper()
	for d, w := range want {
		got, err := s.Pending(context.Background(), d, 0, 100, now)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(got, w, func(a, b store.Message) bool {
			return a.Seq == b.Seq && a.To == b.To && a.Kind == b.Kind && a.From == b.From && a.ClientID == b.ClientID &&
				bytes.Equal(a.Payload, b.Payload) && a.Sent.Equal(b.Sent) && a.Expires.Equal(b.Expires) && a.Group == b.Group
		}) {
			t.Errorf("%v pending after the move:\n got %+v\nwant %+v", d, got, w)
		}
	}
}

// Upgrading keeps every undelivered message, with its seq, and the rest of
// what the queues held: a resend is still a duplicate, the group is still
// there, acknowledging a moved message still sends its receipt, and new
// seqs follow the old ones.
func TestQueuesMoveFromSQLite(t *testing.T) {
	dir := t.TempDir()
	want := oldDataDir(t, dir)
	s := open(t, dir)
	samePending(t, s, want)
	ctx := context.Background()

	if seq, state, err := s.Group(ctx, [store.GroupIDSize]byte{7}); err != nil || seq != 0 || string(state) != "state0" {
		t.Errorf("Group after the move = %d, %q, %v", seq, state, err)
	}
	if log, err := s.GroupLog(ctx, [store.GroupIDSize]byte{7}, 0, 10); err != nil || len(log) != 1 || string(log[0]) != "create" {
		t.Errorf("GroupLog after the move = %q, %v", log, err)
	}
	if n, err := s.QueueDepth(ctx); err != nil || n != 8 {
		t.Errorf("QueueDepth after the move = %d, %v; want 8", n, err)
	}
	var maxSeq uint64
	for _, ms := range want {
		for _, m := range ms {
			maxSeq = max(maxSeq, m.Seq)
		}
	}
	b := &store.Batch{Now: now,
		Enqueues: []*store.Enqueue{
			{From: dev("alice", 1), ClientID: [16]byte{1}, To: "bob", Payload: []byte("hello bob"), Expires: now.Add(time.Hour)},
			{From: dev("alice", 1), ClientID: [16]byte{4}, To: "carol", Payload: []byte("new"), Expires: now.Add(time.Hour)},
		},
		Acks: []*store.Ack{{Device: dev("bob", 1), Seqs: []uint64{want[dev("bob", 1)][1].Seq}, Expires: now.Add(time.Hour)}},
	}
	if err := s.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	if !b.Enqueues[0].Duplicate {
		t.Error("a resend of a message queued before the move was queued again")
	}
	if q := b.Enqueues[1].Queued; len(q) != 1 || q[0].Seq <= maxSeq {
		t.Errorf("a new message got %+v; want one seq after %d", q, maxSeq)
	}
	if r := b.Acks[0].Receipts; len(r) != 1 || r[0].To != dev("alice", 1) || r[0].ClientID != ([16]byte{1}) {
		t.Errorf("acknowledging a moved message: receipts %+v; want one to alice/1 for client id 1", r)
	}

	// Once moved, SQLite's copy is gone, and reopening moves nothing again.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	acc, err := sqlite.Open(filepath.Join(dir, "magpie.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	has, err := acc.HasQueues(ctx)
	acc.Close()
	if err != nil || has {
		t.Fatalf("magpie.db still has queues after the move: %v, %v", has, err)
	}
	s = open(t, dir)
	if n, err := s.QueueDepth(ctx); err != nil || n != 9 {
		t.Errorf("QueueDepth after reopening = %d, %v; want 9 (8 moved, 1 new, 1 acked, 1 receipt)", n, err)
	}
}

// A move cut short (a crash between its batches) starts again from an
// empty Pebble database: nothing half-moved is kept, nothing is lost.
func TestInterruptedMoveStartsAgain(t *testing.T) {
	dir := t.TempDir()
	want := oldDataDir(t, dir)
	db, err := pebble.Open(filepath.Join(dir, "queues"), &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// What the first batch of a move leaves: the marker and some keys.
	for _, k := range [][]byte{{'m', 'i'}, []byte("q\x03bob\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x63")} {
		if err := db.Set(k, []byte("half"), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s := open(t, dir)
	samePending(t, s, want)
	if n, err := s.QueueDepth(context.Background()); err != nil || n != 8 {
		t.Errorf("QueueDepth = %d, %v; want 8 (the half-moved item gone)", n, err)
	}
}

// Queues in both places means the directory went back to --store sqlite
// after Pebble: refusing is the only way not to lose one of the two.
func TestQueuesInBothPlacesRefused(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if err := s.Commit(context.Background(), &store.Batch{Now: now, GroupChanges: []*store.GroupChange{{Group: [16]byte{1}, State: []byte("x"), Change: []byte("c"), Expires: now.Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	oldDataDir(t, dir)
	if s, err := pebblestore.Open(dir, pebblestore.Options{}); err == nil {
		s.Close()
		t.Fatal("Open with queues in both magpie.db and queues/ succeeded")
	}
}
