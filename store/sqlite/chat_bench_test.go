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
)

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
			s, err := sqlite.Open(filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			now := time.Unix(1_700_000_000, 0)
			name := func(i int) string { return fmt.Sprintf("user%04d", i) }
			for i := range users {
				if _, err := s.CreateUser(ctx, name(i), [store.KeySize]byte{byte(i), byte(i >> 8), 1}, now); err != nil {
					b.Fatal(err)
				}
			}
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
