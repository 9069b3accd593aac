package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/magpie-im/magpie/store"
)

// Handing the queues to another engine: a data directory written before
// queues moved to store/pebblestore keeps its undelivered messages, their
// seqs (clients' cursors), deduplication records and groups; pebblestore
// reads them from here once, then empties these tables.

// ExportedItem is one queue row. A group item has Shared set and nothing
// else but Seq, To and Kind.
type ExportedItem struct {
	Seq      uint64
	To       store.DeviceAddr
	Kind     store.Kind
	From     store.DeviceAddr
	ClientID [store.ClientIDSize]byte
	Payload  []byte
	Sent     int64 // unix ns
	Expires  int64
	Shared   uint64
}

// ExportedShared is a group message or change stored once.
type ExportedShared struct {
	ID       uint64
	Refs     uint64
	Expires  int64
	Sent     int64
	Group    [store.GroupIDSize]byte
	From     store.DeviceAddr
	ClientID [store.ClientIDSize]byte // zero for a change
	Change   bool                     // a group change, not a group message
	Payload  []byte
}

// QueueExporter receives the queue tables' rows, table by table: shared
// records first, then queue items in seq order, deduplication records,
// groups and group logs.
type QueueExporter interface {
	Shared(ExportedShared) error
	Item(ExportedItem) error
	Dedup(from store.DeviceAddr, cid [store.ClientIDSize]byte, sent, expires int64) error
	Group(id [store.GroupIDSize]byte, seq uint64, state []byte) error
	GroupLog(id [store.GroupIDSize]byte, seq uint64, change []byte) error
}

// HasQueues reports whether any queue item, deduplication record or group
// is stored here.
func (s *Store) HasQueues(ctx context.Context) (bool, error) {
	if err := s.enter(); err != nil {
		return false, err
	}
	defer s.gate.Leave()
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM (SELECT 1 FROM queue LIMIT 1))
		+ (SELECT count(*) FROM (SELECT 1 FROM dedup LIMIT 1)) + (SELECT count(*) FROM (SELECT 1 FROM groups LIMIT 1))`).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("sqlite: has queues: %w", err)
	}
	return n > 0, nil
}

// ExportQueues hands every row of the queue tables to x and returns the
// next seq the queue would have assigned.
func (s *Store) ExportQueues(ctx context.Context, x QueueExporter) (nextSeq uint64, err error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.gate.Leave()
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true}) // one snapshot
	if err != nil {
		return 0, fmt.Errorf("sqlite: export: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	steps := []struct {
		query string
		row   func(*sql.Rows) error
	}{
		{`SELECT s.id, s.refs, s.expires, s.sent, s.group_id, s.from_user, s.from_device, s.client_id, p.payload
			FROM shared s JOIN shared_payload p ON p.id = s.id ORDER BY s.id`, func(r *sql.Rows) error {
			var (
				e        ExportedShared
				grp, cid []byte
			)
			if err := r.Scan(&e.ID, &e.Refs, &e.Expires, &e.Sent, &grp, &e.From.User, &e.From.Device, &cid, &e.Payload); err != nil {
				return err
			}
			copy(e.Group[:], grp)
			copy(e.ClientID[:], cid)
			e.Change = len(cid) == 0
			return x.Shared(e)
		}},
		{`SELECT seq, to_user, to_device, kind, from_user, from_device, client_id, payload, sent, expires, coalesce(shared_id, 0)
			FROM queue ORDER BY seq`, func(r *sql.Rows) error {
			var (
				e    ExportedItem
				cid  []byte
				kind uint8
			)
			if err := r.Scan(&e.Seq, &e.To.User, &e.To.Device, &kind, &e.From.User, &e.From.Device, &cid, &e.Payload, &e.Sent, &e.Expires, &e.Shared); err != nil {
				return err
			}
			e.Kind = store.Kind(kind)
			copy(e.ClientID[:], cid)
			return x.Item(e)
		}},
		{`SELECT from_user, from_device, client_id, sent, expires FROM dedup`, func(r *sql.Rows) error {
			var (
				from          store.DeviceAddr
				cid           []byte
				sent, expires int64
			)
			if err := r.Scan(&from.User, &from.Device, &cid, &sent, &expires); err != nil {
				return err
			}
			id, err := toClientID(cid)
			if err != nil {
				return err
			}
			return x.Dedup(from, id, sent, expires)
		}},
		{`SELECT id, seq, state FROM groups`, func(r *sql.Rows) error {
			var (
				id, state []byte
				seq       uint64
			)
			if err := r.Scan(&id, &seq, &state); err != nil {
				return err
			}
			return x.Group([store.GroupIDSize]byte(id), seq, state)
		}},
		{`SELECT group_id, seq, change FROM group_log ORDER BY group_id, seq`, func(r *sql.Rows) error {
			var (
				id, change []byte
				seq        uint64
			)
			if err := r.Scan(&id, &seq, &change); err != nil {
				return err
			}
			return x.GroupLog([store.GroupIDSize]byte(id), seq, change)
		}},
	}
	for _, st := range steps {
		if err := exportRows(ctx, tx, st.query, st.row); err != nil {
			return 0, fmt.Errorf("sqlite: export: %w", err)
		}
	}
	nextSeq = 1
	if err := tx.QueryRowContext(ctx, commitSQL[stNextSeq]).Scan(&nextSeq); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("sqlite: export: next seq: %w", err)
	}
	return nextSeq, nil
}

func exportRows(ctx context.Context, tx *sql.Tx, query string, row func(*sql.Rows) error) error {
	rows, err := tx.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// DropQueues deletes every row of the queue tables, in one transaction,
// once another engine holds them.
func (s *Store) DropQueues(ctx context.Context) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: drop queues: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	for _, t := range []string{"queue", "shared_payload", "shared", "dedup", "group_log", "groups"} {
		if _, err := tx.ExecContext(ctx, "DELETE FROM "+t); err != nil {
			return fmt.Errorf("sqlite: drop queues: %s: %w", t, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: drop queues: %w", err)
	}
	s.counts.load(ctx, s.w) //nolint:errcheck // best effort: the queue is empty
	return nil
}
