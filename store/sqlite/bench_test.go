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

// BenchmarkCommit measures throughput of 1 KiB enqueues to a one-device
// user at several batch sizes; each Commit is one durable transaction, so
// msgs/s shows what group commit buys. One op is one Commit.
func BenchmarkCommit(b *testing.B) {
	for _, size := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			ctx := context.Background()
			s, err := sqlite.Open(filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			now := time.Unix(1_700_000_000, 0)
			for i, u := range []string{"alice", "bob"} {
				if _, err := s.CreateUser(ctx, u, [store.KeySize]byte{byte(i + 1)}, now); err != nil {
					b.Fatal(err)
				}
			}
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
