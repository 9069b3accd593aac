package pebblestore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/internal/batchrules"
)

// Expire implements store.Store: items, shared records and deduplication
// records whose expiry is at or before now go, found through their expiry
// indexes.
func (s *Store) Expire(ctx context.Context, now time.Time) (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.gate.Leave()
	s.wmu.Lock()
	defer s.wmu.Unlock()

	b := s.db.NewIndexedBatch()
	defer b.Close()
	t := now.UnixNano()
	delta := make(map[store.DeviceAddr]int64)
	n := 0

	// 1:1 items and receipts: the index names the device.
	err := scanExpired(b, tItemExpiry, t, func(k, v []byte) error {
		seq := binary.BigEndian.Uint64(k[len(k)-8:])
		d, _, err := readDev(v)
		if err != nil {
			return err
		}
		delta[d]--
		n++
		return errors.Join(b.SingleDelete(queueKey(nil, d, seq), nil), b.SingleDelete(k, nil))
	})
	if err != nil {
		return 0, fmt.Errorf("pebblestore: expire items: %w", err)
	}
	// Group items: their shared record lists them.
	err = scanExpired(b, tSharedExp, t, func(k, _ []byte) error {
		id := binary.BigEndian.Uint64(k[len(k)-8:])
		targets, err := getCopy(b, u64Key(nil, tTargets, id))
		if err != nil {
			return fmt.Errorf("shared %d targets: %w", id, err)
		}
		var ferr error
		if err := readTargets(targets, func(d store.DeviceAddr, seq uint64) {
			qk := queueKey(nil, d, seq)
			if _, err := getCopy(b, qk); err != nil {
				if err != pebble.ErrNotFound {
					ferr = err
				}
				return // acknowledged
			}
			delta[d]--
			n++
			ferr = errors.Join(ferr, b.SingleDelete(qk, nil))
		}); err != nil {
			return err
		}
		if ferr != nil {
			return ferr
		}
		exp := int64(binary.BigEndian.Uint64(k[1:]) ^ (1 << 63))
		return (&committer{b: b}).deleteShared(id, exp)
	})
	if err != nil {
		return 0, fmt.Errorf("pebblestore: expire group items: %w", err)
	}
	err = scanExpired(b, tDedupExpiry, t, func(k, _ []byte) error {
		rest := k[9:] // dev and client id
		dk := append([]byte{tDedup}, rest...)
		return errors.Join(b.Delete(dk, nil), b.Delete(k, nil))
	})
	if err != nil {
		return 0, fmt.Errorf("pebblestore: expire dedup records: %w", err)
	}
	if b.Empty() {
		return 0, nil
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return 0, fmt.Errorf("pebblestore: expire: %w", err)
	}
	s.counts.Apply(delta)
	s.senders = batchrules.SenderCounts{}
	return n, nil
}

// scanExpired calls fn with each key (and value) of an expiry index whose
// time is at or before t.
func scanExpired(r pebble.Reader, table byte, t int64, fn func(k, v []byte) error) error {
	upper := make([]byte, 9)
	upper[0] = table
	putBE64(upper[1:], expiresKey(t)+1)
	if expiresKey(t) == ^uint64(0) {
		upper = []byte{table + 1}
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: []byte{table}, UpperBound: upper})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return err
		}
		k := append([]byte(nil), it.Key()...)
		if err := fn(k, append([]byte(nil), v...)); err != nil {
			it.Close()
			return err
		}
	}
	return it.Close()
}
