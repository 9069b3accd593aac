package sqlite_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/sqlite"
	"github.com/magpie-im/magpie/store/storetest"
)

// BenchmarkCommit measures throughput of 1 KiB enqueues to a one-device
// user at several batch sizes; each Commit is one durable transaction, so
// msgs/s shows what batched commits buy. One op is one Commit.
func BenchmarkCommit(b *testing.B) {
	for _, size := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			ctx := context.Background()
			s := open(b, filepath.Join(b.TempDir(), "bench.db"))
			now := time.Unix(1_700_000_000, 0)
			createUsers(b, s, now, "alice", "bob")
			payload := make([]byte, 1024)
			from := store.DeviceAddr{User: "alice", Device: 1}
			var next uint64 // ClientIDs must be unique or the enqueue is a duplicate
			batch := &store.Batch{Now: now, Enqueues: make([]*store.Enqueue, size)}
			for i := range batch.Enqueues {
				batch.Enqueues[i] = &store.Enqueue{From: from, To: "bob", Payload: payload, Expires: now.Add(time.Hour)}
			}
			b.SetBytes(int64(size * len(payload)))
			b.ResetTimer()
			ops := 0
			for b.Loop() {
				for _, e := range batch.Enqueues {
					next++
					binary.BigEndian.PutUint64(e.ClientID[:], next)
				}
				if err := s.Commit(ctx, batch); err != nil {
					b.Fatal(err)
				}
				if e := batch.Enqueues[size-1]; e.Err != nil || e.Duplicate {
					b.Fatalf("enqueue not accepted: Err=%v Duplicate=%v", e.Err, e.Duplicate)
				}
				ops++
			}
			b.ReportMetric(float64(ops*size)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkChatCommit measures the store's side of `magpie bench chat` in
// its steady state: 2,000 one-device users in pairs, and each op is one
// batched commit that carries, as the router's batches do under load,
//   - msgs new 1 KiB messages from random senders to their partners,
//   - the recipients' acks of the previous commit's messages (one seq each,
//     as a chatting client acknowledges what it has just been pushed), each
//     queueing a receipt,
//   - the senders' acks of the receipts the previous commit queued.
//
// So every message costs, across three commits, what it costs in a chat:
// an enqueue, a delete and a receipt, and the receipt's delete.
// cpu-µs/msg is the process's CPU time in Commit per message, which is what
// limits bench chat on a busy 2-core box; msgs/s counts the wall clock,
// fsyncs included.
func BenchmarkChatCommit(b *testing.B) {
	for _, msgs := range []int{16, 64} {
		b.Run(fmt.Sprintf("msgs=%d", msgs), func(b *testing.B) {
			storetest.BenchChatCommit(b, open(b, filepath.Join(b.TempDir(), "bench.db")), msgs)
		})
	}
}

// groupStore opens a store with a sender, alice/1, and a group of
// devices: users user0000… with two devices each (one, for an odd count).
func groupStore(b testing.TB, devices int) (*sqlite.Store, []store.DeviceAddr) {
	b.Helper()
	ctx := context.Background()
	s := open(b, filepath.Join(b.TempDir(), "bench.db"))
	now := time.Unix(1_700_000_000, 0)
	createUsers(b, s, now, "alice")
	var to []store.DeviceAddr
	for i := 0; len(to) < devices; i++ {
		u := fmt.Sprintf("user%04d", i)
		if _, err := s.CreateUser(ctx, u, [store.KeySize]byte{byte(i), byte(i >> 8), 2}, now); err != nil {
			b.Fatal(err)
		}
		to = append(to, store.DeviceAddr{User: u, Device: 1})
		if len(to) < devices {
			if _, err := s.AddDevice(ctx, u, [store.KeySize]byte{byte(i), byte(i >> 8), 3}, now); err != nil {
				b.Fatal(err)
			}
			to = append(to, store.DeviceAddr{User: u, Device: 2})
		}
	}
	return s, to
}

// BenchmarkGroupSend measures a group message to every device of a group:
// each op is one Commit of one 1 KiB GroupSend. cpu-µs/msg and
// cpu-µs/recipient are the process's CPU time in Commit; B/recipient is
// what the database file grew by per message and recipient device beyond
// the payload (page_count × page_size after a checkpoint, before and
// after the loop).
func BenchmarkGroupSend(b *testing.B) {
	for _, devices := range []int{50, 1024} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) {
			ctx := context.Background()
			s, to := groupStore(b, devices)
			now := time.Unix(1_700_000_000, 0)
			payload := make([]byte, 1024)
			g := &store.GroupSend{From: store.DeviceAddr{User: "alice", Device: 1}, Group: [16]byte{1}, Payload: payload, To: to, Expires: now.Add(time.Hour)}
			before, err := sqlite.DatabaseSize(s)
			if err != nil {
				b.Fatal(err)
			}
			var (
				next uint64
				msgs int
				cpu  time.Duration
			)
			for b.Loop() {
				next++
				binary.BigEndian.PutUint64(g.ClientID[:], next)
				t0 := storetest.CPUTime()
				if err := s.Commit(ctx, &store.Batch{Now: now, GroupSends: []*store.GroupSend{g}}); err != nil {
					b.Fatal(err)
				}
				cpu += storetest.CPUTime() - t0
				if g.Err != nil || g.Duplicate || len(g.Queued) != devices {
					b.Fatalf("group send: Err=%v Duplicate=%v, %d queued", g.Err, g.Duplicate, len(g.Queued))
				}
				msgs++
			}
			b.StopTimer()
			after, err := sqlite.DatabaseSize(s)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(cpu/time.Microsecond)/float64(msgs), "cpu-µs/msg")
			b.ReportMetric(float64(cpu/time.Nanosecond)/1000/float64(msgs*devices), "cpu-µs/recipient")
			b.ReportMetric(float64(after-before-int64(msgs*len(payload)))/float64(msgs*devices), "B/recipient")
		})
	}
}

// BenchmarkGroupAck compares acknowledging group items with acknowledging
// 1:1 items, store CPU per acknowledged item (its receipt included):
//   - fanout=1024: each op is a message reaching 1,024 devices (512 users
//     with two devices each), either one GroupSend (group) or an Enqueue
//     to each user (direct), queued with the timer stopped, then every
//     device's ack of its item, one seq each, in commits of 64 acks: what
//     the router makes of a big group's members acknowledging as they
//     receive. Each ack queues a receipt for the sender.
//   - drain: BenchmarkAck/acks=16 on a queue of group messages, each also
//     queued for its sender's own device: a drain of 256 group items per
//     ack, each the last but one reference to its payload, so every item
//     acknowledged is a shared row's reference dropped.
func BenchmarkGroupAck(b *testing.B) {
	for _, kind := range []string{"group", "direct"} {
		b.Run("fanout=1024/kind="+kind, func(b *testing.B) {
			benchmarkFanoutAcks(b, kind == "group")
		})
	}
	b.Run("drain", func(b *testing.B) {
		d := newDrainStore(b, 32)
		d.Group = true
		d.BenchAcks(16)
	})
}

func benchmarkFanoutAcks(b *testing.B, group bool) {
	const devices, perCommit = 1024, 64
	ctx := context.Background()
	s, to := groupStore(b, devices)
	now := time.Unix(1_700_000_000, 0)
	alice := store.DeviceAddr{User: "alice", Device: 1}
	payload := make([]byte, 1024)
	var (
		next  uint64
		acked int
		cpu   time.Duration
	)
	// queue sends one message to every device and returns the seq each got.
	queue := func() []store.Message {
		b.StopTimer()
		defer b.StartTimer()
		next++
		batch := &store.Batch{Now: now}
		if group {
			g := &store.GroupSend{From: alice, Payload: payload, To: to, Expires: now.Add(time.Hour)}
			binary.BigEndian.PutUint64(g.ClientID[:], next)
			batch.GroupSends = append(batch.GroupSends, g)
		} else {
			for i := 0; i < len(to); i += 2 {
				e := &store.Enqueue{From: alice, To: to[i].User, Payload: payload, Expires: now.Add(time.Hour)}
				binary.BigEndian.PutUint64(e.ClientID[:], next<<16|uint64(i))
				batch.Enqueues = append(batch.Enqueues, e)
			}
		}
		if err := s.Commit(ctx, batch); err != nil {
			b.Fatal(err)
		}
		var items []store.Message
		for _, g := range batch.GroupSends {
			items = append(items, g.Queued...)
		}
		for _, e := range batch.Enqueues {
			items = append(items, e.Queued...)
		}
		if len(items) != devices {
			b.Fatalf("%d items queued, want %d", len(items), devices)
		}
		return items
	}
	for b.Loop() {
		items := queue()
		for len(items) > 0 {
			batch := &store.Batch{Now: now}
			for _, m := range items[:min(perCommit, len(items))] {
				batch.Acks = append(batch.Acks, &store.Ack{Device: m.To, Seqs: []uint64{m.Seq}, Expires: now.Add(time.Hour)})
			}
			items = items[len(batch.Acks):]
			t0 := storetest.CPUTime()
			if err := s.Commit(ctx, batch); err != nil {
				b.Fatal(err)
			}
			cpu += storetest.CPUTime() - t0
			for _, a := range batch.Acks {
				if len(a.Receipts) != 1 {
					b.Fatalf("%d receipts for an acked message", len(a.Receipts))
				}
			}
			acked += len(batch.Acks)
		}
	}
	b.ReportMetric(float64(acked)/b.Elapsed().Seconds(), "acks/s")
	b.ReportMetric(float64(cpu/time.Microsecond)/float64(acked), "cpu-µs/ack")
}

// BenchmarkGroupPending is BenchmarkPending/page=256 on a queue of group
// items: each item's sender, payload and expiry come from its shared rows.
func BenchmarkGroupPending(b *testing.B) {
	d := newDrainStore(b, 32)
	d.Group = true
	d.BenchPending(256)
}
