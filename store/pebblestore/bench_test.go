package pebblestore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/magpie-im/magpie/store/pebblestore"
	"github.com/magpie-im/magpie/store/storetest"
)

// The same workloads as store/sqlite's benchmarks of the same names
// (storetest/bench.go), so that the two engines' numbers compare.

func BenchmarkChatCommit(b *testing.B) {
	for _, msgs := range []int{16, 64} {
		b.Run(fmt.Sprintf("msgs=%d", msgs), func(b *testing.B) {
			storetest.BenchChatCommit(b, open(b, b.TempDir()), msgs)
		})
	}
}

func BenchmarkAck(b *testing.B) {
	for _, acks := range []int{1, 16} {
		b.Run(fmt.Sprintf("acks=%d", acks), func(b *testing.B) {
			storetest.NewDrain(b, open(b, b.TempDir()), 32).BenchAcks(acks)
		})
	}
}

func BenchmarkPending(b *testing.B) {
	for _, page := range []int{128, 256} {
		b.Run(fmt.Sprintf("page=%d", page), func(b *testing.B) {
			storetest.NewDrain(b, open(b, b.TempDir()), 32).BenchPending(page)
		})
	}
}

func BenchmarkGroupPending(b *testing.B) {
	d := storetest.NewDrain(b, open(b, b.TempDir()), 32)
	d.Group = true
	d.BenchPending(256)
}

// BenchmarkOpenCountsQueues measures Open with 100,000 items queued: it
// counts every device's queue, which is what a restart pays.
func BenchmarkOpenCountsQueues(b *testing.B) {
	dir := b.TempDir()
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	storetest.NewDrain(b, s, 32).Fill(100_000)
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		s, err := pebblestore.Open(dir, pebblestore.Options{})
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
