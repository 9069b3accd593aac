package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/internal/batchrules"
)

// Expire implements store.Store. An item or deduplication record has
// expired when its Expires is at or before now (the rule Pending uses).
//
// Like a Commit, it locks the rows of the devices whose queues it changes,
// sorted, before deleting their items, so the two wait for each other
// instead of deadlocking, and then drops shared references in id order.
// Several processes may run it at once: the second finds nothing left.
func (s *Store) Expire(ctx context.Context, now time.Time) (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.gate.Leave()
	t := ns(now)
	var n int
	err := s.inTx(ctx, "expire", func(tx pgx.Tx) error {
		n = 0
		rows, err := tx.Query(ctx, `
			SELECT d.user_name, d.id FROM devices d
			WHERE (d.user_name, d.id) IN (
				SELECT to_user, to_device FROM queue WHERE shared_id IS NULL AND expires <= $1
				UNION SELECT q.to_user, q.to_device FROM shared s JOIN queue q ON q.shared_id = s.id WHERE s.expires <= $1)
			ORDER BY d.user_name, d.id
			FOR NO KEY UPDATE OF d`, t)
		if err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		var (
			us []string
			ds []int64
		)
		for rows.Next() {
			var (
				u string
				d int64
			)
			if err := rows.Scan(&u, &d); err != nil {
				rows.Close()
				return fmt.Errorf("lock: %w", err)
			}
			us, ds = append(us, u), append(ds, d)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if len(us) == 0 {
			return nil
		}
		// Only the locked devices' items: one that expired since the lock
		// was taken waits for the next run.
		rows, err = tx.Query(ctx, `
			WITH gone AS (
				DELETE FROM queue q USING unnest($2::text[], $3::bigint[]) AS l(u, d)
				WHERE q.to_user = l.u AND q.to_device = l.d
					AND (q.shared_id IS NULL AND q.expires <= $1
						OR q.shared_id IN (SELECT id FROM shared WHERE expires <= $1))
				RETURNING q.to_user, q.to_device, q.kind, q.from_user, q.shared_id)
			SELECT g.to_user, g.to_device, g.kind, coalesce(s.from_user, g.from_user), coalesce(g.shared_id, 0)
			FROM gone g LEFT JOIN shared s ON s.id = g.shared_id`, t, us, ds)
		if err != nil {
			return fmt.Errorf("delete items: %w", err)
		}
		qdelta := make(map[store.DeviceAddr]int64)
		sdelta := make(map[batchrules.SenderKey]int64)
		release := make(map[int64]int64)
		for rows.Next() {
			var (
				d      store.DeviceAddr
				kind   int16
				sender string
				shared int64
			)
			if err := rows.Scan(&d.User, &d.Device, &kind, &sender, &shared); err != nil {
				rows.Close()
				return fmt.Errorf("delete items: %w", err)
			}
			n++
			qdelta[d]--
			if k := store.Kind(kind); k == store.KindMessage || k == store.KindGroupMessage {
				sdelta[batchrules.SenderKey{Dev: d, Sender: sender}]--
			}
			if shared != 0 {
				release[shared]++
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("delete items: %w", err)
		}
		var bt pgx.Batch
		queueRelease(&bt, release)
		queueDeltas(&bt, qdelta, sdelta)
		if err := tx.SendBatch(ctx, &bt).Close(); err != nil {
			return fmt.Errorf("counts: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	// Dedup records in a transaction of their own: no queue locks are held
	// while it waits on a record a Commit is taking over.
	if _, err := s.pool.Exec(ctx, `DELETE FROM dedup WHERE expires <= $1`, t); err != nil {
		return 0, wrap("expire: dedup records", err)
	}
	return n, nil
}
