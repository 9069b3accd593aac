package sqlite_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/magpie-im/magpie/store"
)

// BenchmarkCommit measures throughput of 1 KiB enqueues to a one-device
// user at several batch sizes; each Commit is one durable transaction, so
// msgs/s shows what group commit buys. One op is one Commit.
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
// group commit that carries, as the router's batches do under load,
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
	const users = 2000
	for _, msgs := range []int{16, 64} {
		b.Run(fmt.Sprintf("msgs=%d", msgs), func(b *testing.B) {
			ctx := context.Background()
			s := open(b, filepath.Join(b.TempDir(), "bench.db"))
			now := time.Unix(1_700_000_000, 0)
			name := func(i int) string { return fmt.Sprintf("user%04d", i) }
			names := make([]string, users)
			for i := range names {
				names[i] = name(i)
			}
			createUsers(b, s, now, names...)
			payload := make([]byte, 1024)
			var (
				next     uint64 // client ids must be unique or the enqueue is a duplicate
				pushed   []store.Message
				receipts []store.Message
				done     int
				cpu      time.Duration
				rng      uint64 = 1
			)
			for b.Loop() {
				batch := &store.Batch{Now: now}
				for range msgs {
					rng = rng*6364136223846793005 + 1442695040888963407 // a fixed sequence: every run does the same work
					from := int(rng>>33) % users
					next++
					e := &store.Enqueue{
						From:    store.DeviceAddr{User: name(from), Device: 1},
						To:      name(from ^ 1),
						Payload: payload,
						Expires: now.Add(time.Hour),
					}
					binary.BigEndian.PutUint64(e.ClientID[:], next)
					batch.Enqueues = append(batch.Enqueues, e)
				}
				for _, m := range pushed {
					batch.Acks = append(batch.Acks, &store.Ack{Device: m.To, Seqs: []uint64{m.Seq}, Expires: now.Add(time.Hour)})
				}
				for _, r := range receipts {
					batch.Acks = append(batch.Acks, &store.Ack{Device: r.To, Seqs: []uint64{r.Seq}, Expires: now.Add(time.Hour)})
				}
				t0 := cpuTime()
				if err := s.Commit(ctx, batch); err != nil {
					b.Fatal(err)
				}
				cpu += cpuTime() - t0
				pushed, receipts = pushed[:0], receipts[:0]
				for _, e := range batch.Enqueues {
					if e.Err != nil || e.Duplicate || len(e.Queued) != 1 {
						b.Fatalf("enqueue: Err=%v Duplicate=%v, %d copies", e.Err, e.Duplicate, len(e.Queued))
					}
					pushed = append(pushed, e.Queued[0])
				}
				for _, a := range batch.Acks {
					receipts = append(receipts, a.Receipts...)
				}
				done += msgs
			}
			b.ReportMetric(float64(done)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(cpu/time.Microsecond)/float64(done), "cpu-µs/msg")
		})
	}
}
