package pebblestore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/pebblestore"
	"github.com/magpie-im/magpie/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open opens the store in dir and closes it when t ends.
func open(t testing.TB, dir string) *pebblestore.Store {
	t.Helper()
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		dir := t.TempDir()
		s := open(t, dir)
		return storetest.Harness{
			Store: s,
			Reopen: func(t *testing.T) storetest.Store {
				if err := s.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				return open(t, dir)
			},
		}
	})
}

// A key looked up before it was registered is found once it is: the
// handshake's device cache forgets what it found missing (with the
// registration racing lookups, which the race detector watches).
func TestDeviceCacheSeesRegistrations(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	k1, k2 := [store.KeySize]byte{1}, [store.KeySize]byte{2}
	for _, k := range [][store.KeySize]byte{k1, k2} {
		if _, err := s.DeviceByKey(ctx, k); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("DeviceByKey of an unknown key: %v, want ErrNotFound", err)
		}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // lookups racing the registrations
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				s.DeviceByKey(ctx, k1)
				s.DeviceByKey(ctx, k2)
			}
		}
	}()
	if _, err := s.CreateUser(ctx, "alice", k1, now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddDevice(ctx, "alice", k2, now); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done
	for i, k := range [][store.KeySize]byte{k1, k2} {
		d, err := s.DeviceByKey(ctx, k)
		if err != nil || d.User != "alice" || d.Device != uint32(i+1) {
			t.Errorf("DeviceByKey after registering device %d: %+v, %v", i+1, d, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeviceByKey(ctx, k1); !errors.Is(err, store.ErrClosed) {
		t.Errorf("DeviceByKey on a closed store: %v, want ErrClosed", err)
	}
}

// liveBytes reads what the store holds.
func liveBytes(t *testing.T, s *pebblestore.Store) int64 {
	t.Helper()
	n, err := s.LiveBytes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Nothing is left behind: a refused send writes nothing that stays (its
// dedup claim and that claim's expiry index go with it), and once
// everything has expired, Expire removes every item, receipt, group record
// and dedup record with its index entries, including a dedup record that
// a later send took over.
func TestNothingLeftBehind(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	for i, u := range []string{"alice", "bob"} {
		if _, err := s.CreateUser(ctx, u, [store.KeySize]byte{byte(i + 1)}, now); err != nil {
			t.Fatal(err)
		}
	}
	commit := func(b *store.Batch) {
		t.Helper()
		if err := s.Commit(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	empty := liveBytes(t, s)

	refused := &store.Enqueue{From: dev("alice", 1), ClientID: [16]byte{9}, To: "nobody", Payload: []byte("x"), Expires: now.Add(time.Hour)}
	commit(&store.Batch{Now: now, Enqueues: []*store.Enqueue{refused}})
	if !errors.Is(refused.Err, store.ErrNotFound) {
		t.Fatalf("send to nobody: %v", refused.Err)
	}
	if n := liveBytes(t, s); n != empty {
		t.Errorf("a refused send left %d bytes behind", n-empty)
	}

	// A message, acked (a receipt), a group send, a group change, and a
	// dedup record taken over after it expired but before Expire ran.
	short, long := now.Add(time.Minute), now.Add(time.Hour)
	m := &store.Enqueue{From: dev("alice", 1), ClientID: [16]byte{1}, To: "bob", Payload: []byte("hi"), Expires: short}
	g := &store.GroupSend{From: dev("alice", 1), ClientID: [16]byte{2}, Group: [16]byte{5}, Payload: []byte("group"), To: []store.DeviceAddr{dev("bob", 1), dev("alice", 1)}, Expires: long}
	gc := &store.GroupChange{From: dev("alice", 1), Group: [16]byte{5}, Change: []byte("c"), State: []byte("s"), Notify: []string{"bob"}, Expires: long}
	commit(&store.Batch{Now: now, Enqueues: []*store.Enqueue{m}, GroupSends: []*store.GroupSend{g}, GroupChanges: []*store.GroupChange{gc}})
	a := &store.Ack{Device: dev("bob", 1), Seqs: []uint64{m.Queued[0].Seq}, Expires: long}
	commit(&store.Batch{Now: now, Acks: []*store.Ack{a}})
	later := short.Add(time.Second)
	again := &store.Enqueue{From: dev("alice", 1), ClientID: [16]byte{1}, To: "bob", Payload: []byte("hi again"), Expires: long}
	commit(&store.Batch{Now: later, Enqueues: []*store.Enqueue{again}})
	if again.Duplicate || again.Err != nil {
		t.Fatalf("a send reusing an expired client id: duplicate %v, %v", again.Duplicate, again.Err)
	}
	resend := &store.Enqueue{From: dev("alice", 1), ClientID: [16]byte{1}, To: "bob", Payload: []byte("hi again"), Expires: long}
	commit(&store.Batch{Now: later, Enqueues: []*store.Enqueue{resend}})
	if !resend.Duplicate {
		t.Fatal("a resend of the send that took the expired client id over was not a duplicate")
	}

	if _, err := s.Expire(ctx, long.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.QueueDepth(ctx); err != nil || n != 0 {
		t.Errorf("QueueDepth after everything expired: %d, %v", n, err)
	}
	// The group's head and log stay (they are the group, not queue items),
	// and so does the next seq (a 2-byte key, 8 bytes).
	kept := int64(len("g")+16+8+len("s")) + int64(len("l")+16+8+len("c")) + 2 + 8
	if n := liveBytes(t, s); n != empty+kept {
		t.Errorf("after everything expired the store holds %d bytes beyond the group and the next seq, want 0", n-empty-kept)
	}
}

// Device 255's queue keys end in 0xff, where the end of a key range is
// not the last byte plus one: its items are found, and no other device's.
func TestDevice255Queue(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	if _, err := s.CreateUser(ctx, "bob", [store.KeySize]byte{1}, now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateUser(ctx, "alice", [store.KeySize]byte{2}, now); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 256; i++ {
		if _, err := s.AddDevice(ctx, "bob", [store.KeySize]byte{byte(i), byte(i >> 8), 3}, now); err != nil {
			t.Fatal(err)
		}
	}
	e := &store.Enqueue{From: dev("alice", 1), ClientID: [16]byte{1}, To: "bob", Payload: []byte("to every device"), Expires: now.Add(time.Hour)}
	if err := s.Commit(ctx, &store.Batch{Now: now, Enqueues: []*store.Enqueue{e}}); err != nil || e.Err != nil || len(e.Queued) != 256 {
		t.Fatalf("send to 256 devices: %v, %v, %d queued", err, e.Err, len(e.Queued))
	}
	for _, d := range []uint32{255, 256, 1} {
		ms, err := s.Pending(ctx, dev("bob", d), 0, 10, now)
		if err != nil || len(ms) != 1 || ms[0].To != dev("bob", d) || string(ms[0].Payload) != "to every device" {
			t.Errorf("bob/%d pending: %+v, %v; want its one copy", d, ms, err)
		}
	}
}
