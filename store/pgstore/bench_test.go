package pgstore_test

import (
	"fmt"
	"testing"

	"github.com/magpie-im/magpie/internal/pgtest"
	"github.com/magpie-im/magpie/store/pgstore"
	"github.com/magpie-im/magpie/store/storetest"
)

// The same workloads as store/sqlite's and store/pebblestore's benchmarks
// of the same names (storetest/bench.go). The cluster pgtest starts runs
// with fsync on for them, so a commit pays its WAL flush. cpu-µs/msg is
// this process's CPU only: PostgreSQL's backends are other processes.

func benchStore(b *testing.B) *pgstore.Store {
	b.Helper()
	return open(b, pgtest.NewDatabaseOpts(b, "pgstore", migrated, pgtest.Options{Fsync: true}))
}

func BenchmarkChatCommit(b *testing.B) {
	for _, msgs := range []int{16, 64} {
		b.Run(fmt.Sprintf("msgs=%d", msgs), func(b *testing.B) {
			storetest.BenchChatCommit(b, benchStore(b), msgs)
		})
	}
}

func BenchmarkAck(b *testing.B) {
	for _, acks := range []int{1, 16} {
		b.Run(fmt.Sprintf("acks=%d", acks), func(b *testing.B) {
			storetest.NewDrain(b, benchStore(b), 32).BenchAcks(acks)
		})
	}
}

func BenchmarkPending(b *testing.B) {
	for _, page := range []int{128, 256} {
		b.Run(fmt.Sprintf("page=%d", page), func(b *testing.B) {
			storetest.NewDrain(b, benchStore(b), 32).BenchPending(page)
		})
	}
}

func BenchmarkGroupPending(b *testing.B) {
	d := storetest.NewDrain(b, benchStore(b), 32)
	d.Group = true
	d.BenchPending(256)
}
