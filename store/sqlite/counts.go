package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/internal/batchrules"
)

// queueCounts holds each device's queue length in memory. It is read for
// every enqueue (the queue limit) and changed by every enqueue and ack, so
// keeping it as a column made a chat message cost four UPDATEs of a devices
// row, each dirtying a page the commit then wrote to the WAL: about a
// tenth of the store's CPU per message (BenchmarkChatCommit, medians of 5
// runs: 154 → 139 µs). The database stays
// the truth: Open counts the queue, and a commit's changes are applied here
// only once that commit is durable. Only this process writes the database
// (Open takes an exclusive lock), so the two cannot drift.
type queueCounts struct{ batchrules.QueueCounts }

// load counts every device's queue in the database, through q.
func (qc *queueCounts) load(ctx context.Context, q queryer) error {
	n, total, err := queueLengths(ctx, q, "1")
	if err != nil {
		return err
	}
	qc.Set(n, total)
	return nil
}

// queryer is what *sql.DB and *sql.Tx share that queueLengths needs.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// queueLengths counts the queue items that match where (an SQL condition
// written in this package, with args for its parameters) per device, and
// in all.
func queueLengths(ctx context.Context, q queryer, where string, args ...any) (map[store.DeviceAddr]int64, int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT to_user, to_device, count(*) FROM queue WHERE `+where+` GROUP BY to_user, to_device`, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("count queues: %w", err)
	}
	defer rows.Close()
	n := make(map[store.DeviceAddr]int64)
	var total int64
	for rows.Next() {
		var (
			d store.DeviceAddr
			k int64
		)
		if err := rows.Scan(&d.User, &d.Device, &k); err != nil {
			return nil, 0, fmt.Errorf("count queues: %w", err)
		}
		n[d] = k
		total += k
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("count queues: %w", err)
	}
	return n, total, nil
}
