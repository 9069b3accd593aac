package pgstore_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/pgstore"
)

// Two Store values (two connection pools) on one database stand for two
// server processes of a cluster.

var t0 = time.Unix(1_700_000_000, 0)

func nodes(t *testing.T) (a, b *pgstore.Store) {
	t.Helper()
	url := newDB(t)
	return open(t, url), open(t, url)
}

func mustUser(t *testing.T, s *pgstore.Store, name string, k int, devices int) {
	t.Helper()
	ctx := context.Background()
	key := func(n int) [store.KeySize]byte {
		var b [store.KeySize]byte
		binary.BigEndian.PutUint32(b[:], uint32(n))
		b[31] = 0xEE
		return b
	}
	if _, err := s.CreateUser(ctx, name, key(k), t0); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < devices; i++ {
		if _, err := s.AddDevice(ctx, name, key(k+i), t0); err != nil {
			t.Fatal(err)
		}
	}
}

func clientID(n int) [store.ClientIDSize]byte {
	var c [store.ClientIDSize]byte
	binary.BigEndian.PutUint64(c[:], uint64(n))
	return c
}

func addr(u string, d uint32) store.DeviceAddr { return store.DeviceAddr{User: u, Device: d} }

// run starts f(i) for i in [0, n) and waits for them.
func run(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { f(i) })
	}
	wg.Wait()
}

// TestNodesSeqsVisibleInOrder: commits through two nodes to the same
// devices, and readers on both, which check what the router assumes: a
// device's seqs increase in each read, and no item ever appears below
// one already read. Acks (with receipts to the writers) run too.
func TestNodesSeqsVisibleInOrder(t *testing.T) {
	a, b := nodes(t)
	ctx := context.Background()
	const writers, batches, perBatch = 6, 15, 3
	mustUser(t, a, "bob", 1, 2)
	for w := range writers {
		mustUser(t, a, fmt.Sprint("w", w), 100+w, 1)
	}
	exp := t0.Add(time.Hour)
	done := make(chan struct{})
	errs := make(chan error, 16)
	var readers sync.WaitGroup
	for r, s := range []*pgstore.Store{a, b, a, b} {
		readers.Go(func() {
			dev := addr("bob", uint32(r%2+1))
			seen := map[uint64]bool{}
			var high uint64
			for {
				select {
				case <-done:
					return
				default:
				}
				ms, err := s.Pending(ctx, dev, 0, 10_000, t0)
				if err != nil {
					errs <- err
					return
				}
				for i, m := range ms {
					if i > 0 && m.Seq <= ms[i-1].Seq {
						errs <- fmt.Errorf("%v: seqs out of order in one read: %d after %d", dev, m.Seq, ms[i-1].Seq)
						return
					}
					if !seen[m.Seq] && m.Seq < high {
						errs <- fmt.Errorf("%v: seq %d became visible after %d had been read", dev, m.Seq, high)
						return
					}
					seen[m.Seq] = true
					high = max(high, m.Seq)
				}
			}
		})
	}
	run(writers, func(w int) {
		s := []*pgstore.Store{a, b}[w%2]
		from := addr(fmt.Sprint("w", w), 1)
		for i := range batches {
			var es []*store.Enqueue
			for j := range perBatch {
				n := i*perBatch + j
				es = append(es, &store.Enqueue{From: from, ClientID: clientID(n), To: "bob", Payload: []byte(fmt.Sprint(n)), Expires: exp})
			}
			// The writer also acknowledges the receipts it got so far, so
			// that its own queue is written by both nodes too.
			rs, err := s.Pending(ctx, from, 0, 100, t0)
			if err != nil {
				errs <- err
				return
			}
			var seqs []uint64
			for _, r := range rs {
				seqs = append(seqs, r.Seq)
			}
			if err := s.Commit(ctx, &store.Batch{Now: t0, Enqueues: es, Acks: []*store.Ack{{Device: from, Seqs: seqs, Expires: exp}}}); err != nil {
				errs <- err
				return
			}
			for _, e := range es {
				if e.Err != nil || e.Duplicate || len(e.Queued) != 2 {
					errs <- fmt.Errorf("writer %d: Err=%v Duplicate=%v Queued=%d", w, e.Err, e.Duplicate, len(e.Queued))
					return
				}
			}
		}
	})
	// bob/1 acknowledges through both nodes while the readers watch too.
	ms, err := a.Pending(ctx, addr("bob", 1), 0, 10_000, t0)
	if err != nil {
		t.Fatal(err)
	}
	run(2, func(i int) {
		s := []*pgstore.Store{a, b}[i]
		for j := i; j < len(ms); j += 2 {
			if err := s.Commit(ctx, &store.Batch{Now: t0, Acks: []*store.Ack{{Device: addr("bob", 1), Seqs: []uint64{ms[j].Seq}, Expires: exp}}}); err != nil {
				errs <- err
				return
			}
		}
	})
	close(done)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	// bob/2 holds every message, each writer's in its commit order.
	ms, err = b.Pending(ctx, addr("bob", 2), 0, 10_000, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != writers*batches*perBatch {
		t.Fatalf("bob/2 has %d items, want %d", len(ms), writers*batches*perBatch)
	}
	next := map[string]int{}
	for _, m := range ms {
		if want := fmt.Sprint(next[m.From.User]); string(m.Payload) != want {
			t.Fatalf("bob/2: from %s payload %q, want %q (commit order lost)", m.From.User, m.Payload, want)
		}
		next[m.From.User]++
	}
	// The counters agree with the queues: bob/2's items and the receipts
	// of bob/1's acks that the writers have not acknowledged.
	var want int64 = int64(len(ms))
	for w := range writers {
		rs, err := a.Pending(ctx, addr(fmt.Sprint("w", w), 1), 0, 10_000, t0)
		if err != nil {
			t.Fatal(err)
		}
		want += int64(len(rs))
	}
	if n, err := b.QueueDepth(ctx); err != nil || n != want {
		t.Errorf("QueueDepth = %d, %v; want %d", n, err, want)
	}
}

// TestNodesQueueLimitAndShare: many senders through two nodes at once
// never put more in a queue than its limit, nor more of one sender's
// items than the share.
func TestNodesQueueLimitAndShare(t *testing.T) {
	a, b := nodes(t)
	ctx := context.Background()
	const senders, each, limit, share = 8, 10, 25, 7
	mustUser(t, a, "bob", 1, 1)
	mustUser(t, a, "carol", 2, 1)
	mustUser(t, a, "mallory", 10, senders) // one account, many devices
	for i := range senders {
		mustUser(t, a, fmt.Sprint("s", i), 100+i, 1)
	}
	exp := t0.Add(time.Hour)
	var (
		mu       sync.Mutex
		accepted = map[string]int{}
	)
	run(2*senders, func(i int) {
		s := []*pgstore.Store{a, b}[i%2]
		var e *store.Enqueue
		for n := range each {
			if i < senders { // to bob, under the queue limit
				e = &store.Enqueue{From: addr(fmt.Sprint("s", i), 1), ClientID: clientID(n), To: "bob", Payload: []byte("x"), Expires: exp, QueueLimit: limit}
			} else { // to carol, from mallory's devices, under the share
				e = &store.Enqueue{From: addr("mallory", uint32(i-senders+1)), ClientID: clientID(n), To: "carol", Payload: []byte("x"), Expires: exp, SenderShare: share}
			}
			if err := s.Commit(ctx, &store.Batch{Now: t0, Enqueues: []*store.Enqueue{e}}); err != nil {
				t.Error(err)
				return
			}
			switch {
			case e.Err == nil:
				mu.Lock()
				accepted[e.To]++
				mu.Unlock()
			case !errors.Is(e.Err, store.ErrQueueFull) && !errors.Is(e.Err, store.ErrSenderShare):
				t.Errorf("enqueue: %v", e.Err)
			}
		}
	})
	if accepted["bob"] != limit {
		t.Errorf("bob accepted %d, want exactly the limit %d", accepted["bob"], limit)
	}
	if accepted["carol"] != share {
		t.Errorf("carol accepted %d of mallory's, want exactly the share %d", accepted["carol"], share)
	}
	for u, want := range map[string]int{"bob": limit, "carol": share} {
		if ms, err := b.Pending(ctx, addr(u, 1), 0, 1000, t0); err != nil || len(ms) != want {
			t.Errorf("%s holds %d items, %v; want %d", u, len(ms), err, want)
		}
	}
}

// TestNodesDedup: one send retried through both nodes at once is queued
// once; every other attempt is its duplicate, with its send time.
func TestNodesDedup(t *testing.T) {
	a, b := nodes(t)
	ctx := context.Background()
	mustUser(t, a, "alice", 1, 1)
	mustUser(t, a, "bob", 2, 1)
	const ids, tries = 20, 6
	var (
		mu    sync.Mutex
		fresh = map[int]int{}
		sent  = map[int]map[time.Time]bool{}
	)
	run(tries, func(i int) {
		s := []*pgstore.Store{a, b}[i%2]
		now := t0.Add(time.Duration(i) * time.Second)
		for n := range ids {
			e := &store.Enqueue{From: addr("alice", 1), ClientID: clientID(n), To: "bob", Payload: []byte("x"), Expires: t0.Add(time.Hour)}
			if err := s.Commit(ctx, &store.Batch{Now: now, Enqueues: []*store.Enqueue{e}}); err != nil || e.Err != nil {
				t.Errorf("Commit: %v, %v", err, e.Err)
				return
			}
			mu.Lock()
			if !e.Duplicate {
				fresh[n]++
			}
			if sent[n] == nil {
				sent[n] = map[time.Time]bool{}
			}
			sent[n][e.Sent] = true
			mu.Unlock()
		}
	})
	for n := range ids {
		if fresh[n] != 1 || len(sent[n]) != 1 {
			t.Errorf("client id %d: accepted %d times with %d send times, want once with one", n, fresh[n], len(sent[n]))
		}
	}
	if ms, err := b.Pending(ctx, addr("bob", 1), 0, 1000, t0); err != nil || len(ms) != ids {
		t.Errorf("bob holds %d items, %v; want %d", len(ms), err, ids)
	}
}

// TestNodesPreKeysOnce: bundle requests through both nodes at once never
// get the same one-time prekey, and none is lost.
func TestNodesPreKeysOnce(t *testing.T) {
	a, b := nodes(t)
	ctx := context.Background()
	mustUser(t, a, "bob", 1, 1)
	const n = 40
	k := store.Keys{
		IdentityKey: []byte("identity"), RegistrationID: 7,
		SignedPreKey:    &store.SignedPreKey{ID: 1, Key: []byte("spk"), Signature: []byte("sig")},
		LastResortKyber: &store.SignedPreKey{ID: 2, Key: []byte("kyber"), Signature: []byte("sig")},
	}
	for i := range n {
		k.PreKeys = append(k.PreKeys, store.PreKey{ID: uint32(100 + i), Key: []byte{byte(i)}})
	}
	if _, err := a.SetKeys(ctx, addr("bob", 1), k, 0); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		got  = map[uint32]int{}
		none int
	)
	run(8, func(i int) {
		s := []*pgstore.Store{a, b}[i%2]
		for range n / 4 { // twice as many requests as keys
			_, bs, err := s.Bundles(ctx, "bob", nil, true)
			if err != nil || len(bs) != 1 {
				t.Errorf("Bundles: %d, %v", len(bs), err)
				return
			}
			mu.Lock()
			if bs[0].PreKey != nil {
				got[bs[0].PreKey.ID]++
			} else {
				none++
			}
			mu.Unlock()
		}
	})
	for id, c := range got {
		if c != 1 {
			t.Errorf("prekey %d handed out %d times", id, c)
		}
	}
	left, err := b.KeyCounts(ctx, addr("bob", 1))
	if err != nil {
		t.Fatal(err)
	}
	if len(got)+left.PreKeys != n {
		t.Errorf("%d prekeys handed out and %d left, want %d in all", len(got), left.PreKeys, n)
	}
}
