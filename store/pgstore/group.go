package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/magpie-im/magpie/store"
)

// groupChange moves g's group head (step 3 of Commit) and queues the change
// for the devices of g.Notify, stored once like a group send's payload, or
// sets g.Err and writes nothing. The groups row's lock orders changes of
// one group across processes.
func (c *committer) groupChange(g *store.GroupChange) error {
	if g.Seq > math.MaxInt64 {
		g.Err = store.ErrConflict // no head can precede it
		return nil
	}
	var (
		ct  pgconn.CommandTag
		err error
	)
	if g.Seq == 0 {
		ct, err = c.tx.Exec(c.ctx, `INSERT INTO groups (id, seq, state) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING`,
			g.Group[:], nonNil(g.State))
	} else {
		ct, err = c.tx.Exec(c.ctx, `UPDATE groups SET seq = $2, state = $3 WHERE id = $1 AND seq = $2 - 1`,
			g.Group[:], int64(g.Seq), nonNil(g.State))
	}
	if err != nil {
		return fmt.Errorf("group head: %w", err)
	}
	if ct.RowsAffected() == 0 {
		g.Err = store.ErrConflict
		if g.Seq > 0 {
			var one int
			switch err := c.tx.QueryRow(c.ctx, `SELECT 1 FROM groups WHERE id = $1`, g.Group[:]).Scan(&one); {
			case errors.Is(err, pgx.ErrNoRows):
				g.Err = store.ErrNotFound
			case err != nil:
				return fmt.Errorf("group lookup: %w", err)
			}
		}
		return nil
	}
	c.logs = append(c.logs, groupLog{group: g.Group[:], seq: int64(g.Seq), change: nonNil(g.Change)})
	var to []store.DeviceAddr
	seen := make(map[string]bool, len(g.Notify))
	for _, u := range g.Notify {
		if seen[u] {
			continue
		}
		seen[u] = true
		for _, r := range c.byUser[u] {
			to = append(to, store.DeviceAddr{User: u, Device: r.Device})
		}
	}
	g.Queued = c.addShared(store.Message{
		Kind: store.KindGroupChange, From: g.From, Payload: g.Change,
		Sent: fromNS(c.now), Expires: fromNS(ns(g.Expires)), Group: g.Group,
	}, to, &g.Queued)
	return nil
}

// Group implements store.Store.
func (s *Store) Group(ctx context.Context, id [store.GroupIDSize]byte) (uint64, []byte, error) {
	if err := s.enter(); err != nil {
		return 0, nil, err
	}
	defer s.gate.Leave()
	var (
		seq   int64
		state []byte
	)
	err := s.pool.QueryRow(ctx, `SELECT seq, state FROM groups WHERE id = $1`, id[:]).Scan(&seq, &state)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil, store.ErrNotFound
	}
	if err != nil {
		return 0, nil, wrap("group", err)
	}
	return uint64(seq), state, nil
}

// GroupLog implements store.Store.
func (s *Store) GroupLog(ctx context.Context, id [store.GroupIDSize]byte, from uint64, limit int) ([][]byte, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if limit <= 0 || from > math.MaxInt64 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT change FROM group_log WHERE group_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3`,
		id[:], int64(from), limit)
	if err != nil {
		return nil, wrap("group log", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, wrap("group log", err)
	}
	return out, nil
}
