package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/magpie-im/magpie/store/sqlite"
	"github.com/magpie-im/magpie/store/storetest"
)

// newDrainStore is storetest.Drain on a new SQLite store.
func newDrainStore(b *testing.B, senders int) *storetest.Drain {
	return storetest.NewDrain(b, open(b, filepath.Join(b.TempDir(), "bench.db")), senders)
}

// BenchmarkAck measures the store's side of acknowledging a drained
// queue: each op is one batched commit of acks (256 seqs each, the router's
// push window) for bob/1, whose messages came from 32 senders, so each ack
// also queues 256 receipts. msgs/s is acknowledged messages per second of
// commits (one fsync each); cpu-µs/msg is the process's CPU time in Commit
// per message, steadier than msgs/s on a busy machine. Run it with
// -benchtime 24x: the queue holds a drain's worth (100,000), and a refill
// is not timed but does show in a CPU profile.
func BenchmarkAck(b *testing.B) {
	for _, acks := range []int{1, 16} {
		b.Run(fmt.Sprintf("acks=%d", acks), func(b *testing.B) {
			newDrainStore(b, 32).BenchAcks(acks)
		})
	}
}

// BenchmarkPending measures reading a drained queue in pages, as the
// router's delivery pump does: each op reads the next page of 1 KiB
// messages of bob/1. msgs/s is messages read per second; cpu-µs/msg is
// the process's CPU time per message read.
func BenchmarkPending(b *testing.B) {
	for _, page := range []int{128, 256} {
		b.Run(fmt.Sprintf("page=%d", page), func(b *testing.B) {
			newDrainStore(b, 32).BenchPending(page)
		})
	}
}

// BenchmarkOpenCountsQueues measures Open on a database with 100,000
// queued items: Open counts every device's queue (counts.go), so this is
// what a restart after a crash pays before it serves again.
func BenchmarkOpenCountsQueues(b *testing.B) {
	path := filepath.Join(b.TempDir(), "bench.db")
	s, err := sqlite.Open(path, sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	storetest.NewDrain(b, s, 32).Fill(100_000)
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		s, err := sqlite.Open(path, sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if n, err := s.QueueDepth(context.Background()); err != nil || n != 100_000 {
			b.Fatalf("QueueDepth = %d, %v; want 100000", n, err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
