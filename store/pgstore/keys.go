package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/magpie-im/magpie/store"
)

// Kinds of rows in signed_prekeys and one_time_prekeys.
const (
	kindEC    = 1
	kindKyber = 2
)

// SetKeys implements store.Store. The account's users row is locked first,
// so that uploads by devices of one account (through any process) take
// turns: the identity check and the key limit see each other's writes.
func (s *Store) SetKeys(ctx context.Context, dev store.DeviceAddr, k store.Keys, limit int) (store.KeyCounts, error) {
	if err := s.enter(); err != nil {
		return store.KeyCounts{}, err
	}
	defer s.gate.Leave()
	var counts store.KeyCounts
	err := s.inTx(ctx, "set keys", func(tx pgx.Tx) error {
		var (
			current []byte
			exists  bool
		)
		err := tx.QueryRow(ctx, `SELECT u.identity_key, EXISTS (SELECT 1 FROM devices WHERE user_name = $1 AND id = $2)
			FROM users u WHERE u.name = $1 FOR UPDATE`, dev.User, int64(dev.Device)).Scan(&current, &exists)
		if errors.Is(err, pgx.ErrNoRows) || err == nil && !exists {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if k.IdentityKey != nil {
			if current != nil && !bytes.Equal(current, k.IdentityKey) {
				var others bool
				if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM devices d WHERE d.user_name = $1 AND d.id <> $2
					AND d.registration_id <> 0
					AND (SELECT count(*) FROM signed_prekeys s WHERE s.user_name = d.user_name AND s.device = d.id) = 2)`,
					dev.User, int64(dev.Device)).Scan(&others); err != nil {
					return err
				}
				if others {
					return store.ErrIdentityConflict
				}
			}
			if _, err := tx.Exec(ctx, `UPDATE users SET identity_key = $2 WHERE name = $1`, dev.User, k.IdentityKey); err != nil {
				return err
			}
		}
		var bt pgx.Batch
		if k.RegistrationID != 0 {
			bt.Queue(`UPDATE devices SET registration_id = $3 WHERE user_name = $1 AND id = $2`, dev.User, int64(dev.Device), int64(k.RegistrationID))
		}
		for kind, spk := range map[int16]*store.SignedPreKey{kindEC: k.SignedPreKey, kindKyber: k.LastResortKyber} {
			if spk != nil {
				bt.Queue(`INSERT INTO signed_prekeys (user_name, device, kind, id, key, signature) VALUES ($1, $2, $3, $4, $5, $6)
					ON CONFLICT (user_name, device, kind) DO UPDATE SET id = excluded.id, key = excluded.key, signature = excluded.signature`,
					dev.User, int64(dev.Device), kind, int64(spk.ID), nonNil(spk.Key), nonNil(spk.Signature))
			}
		}
		queueOneTime(&bt, dev, k)
		bt.Queue(`SELECT count(*) FILTER (WHERE kind = 1), count(*) FILTER (WHERE kind = 2)
			FROM one_time_prekeys WHERE user_name = $1 AND device = $2`, dev.User, int64(dev.Device)).QueryRow(func(row pgx.Row) error {
			return row.Scan(&counts.PreKeys, &counts.KyberPreKeys)
		})
		if err := tx.SendBatch(ctx, &bt).Close(); err != nil {
			return err
		}
		if limit > 0 && (counts.PreKeys > limit || counts.KyberPreKeys > limit) {
			return store.ErrKeyLimit // rolls the upload back
		}
		return nil
	})
	if err != nil {
		return store.KeyCounts{}, err
	}
	return counts, nil
}

// queueOneTime adds k's one-time prekeys in one statement. One statement
// cannot upsert a row twice, so of an id uploaded twice the last is kept,
// as separate upserts would keep it.
func queueOneTime(bt *pgx.Batch, dev store.DeviceAddr, k store.Keys) {
	type id struct {
		kind int16
		id   uint32
	}
	last := make(map[id]int)
	var (
		kinds []int16
		ids   []int64
		keys  [][]byte
		sigs  [][]byte
	)
	add := func(kind int16, n uint32, key, sig []byte) {
		i := id{kind, n}
		if j, ok := last[i]; ok {
			keys[j], sigs[j] = nonNil(key), nonNil(sig)
			return
		}
		last[i] = len(kinds)
		kinds, ids, keys, sigs = append(kinds, kind), append(ids, int64(n)), append(keys, nonNil(key)), append(sigs, nonNil(sig))
	}
	for _, pk := range k.PreKeys {
		add(kindEC, pk.ID, pk.Key, nil)
	}
	for _, pk := range k.KyberPreKeys {
		add(kindKyber, pk.ID, pk.Key, pk.Signature)
	}
	if len(kinds) == 0 {
		return
	}
	bt.Queue(`INSERT INTO one_time_prekeys (user_name, device, kind, id, key, signature)
		SELECT $1, $2, k, i, key, sig FROM unnest($3::smallint[], $4::bigint[], $5::bytea[], $6::bytea[]) AS t(k, i, key, sig)
		ON CONFLICT (user_name, device, kind, id) DO UPDATE SET key = excluded.key, signature = excluded.signature`,
		dev.User, int64(dev.Device), kinds, ids, keys, sigs)
}

// KeyCounts implements store.Store.
func (s *Store) KeyCounts(ctx context.Context, dev store.DeviceAddr) (store.KeyCounts, error) {
	if err := s.enter(); err != nil {
		return store.KeyCounts{}, err
	}
	defer s.gate.Leave()
	var c store.KeyCounts
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE kind = 1), count(*) FILTER (WHERE kind = 2)
		FROM one_time_prekeys WHERE user_name = $1 AND device = $2`, dev.User, int64(dev.Device)).Scan(&c.PreKeys, &c.KyberPreKeys); err != nil {
		return store.KeyCounts{}, wrap("key counts", err)
	}
	return c, nil
}

// takeOneTimeSQL deletes and returns the device's one-time prekey of a
// kind with the lowest id that no concurrent caller holds: SKIP LOCKED
// hands each of several concurrent callers (in any process) a different
// key, and never one key to two.
const takeOneTimeSQL = `
DELETE FROM one_time_prekeys WHERE ctid = (
	SELECT ctid FROM one_time_prekeys WHERE user_name = $1 AND device = $2 AND kind = $3
	ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, key, signature`

// Bundles implements store.Store, in one transaction and one pipeline for
// all the devices after the identity and keyed devices are read.
func (s *Store) Bundles(ctx context.Context, user string, devices []uint32, oneTime bool) ([]byte, []store.Bundle, error) {
	if err := s.enter(); err != nil {
		return nil, nil, err
	}
	defer s.gate.Leave()
	var (
		identity []byte
		bundles  []store.Bundle
	)
	err := s.inTx(ctx, "bundles", func(tx pgx.Tx) error {
		identity, bundles = nil, nil
		rows, err := tx.Query(ctx, `SELECT u.identity_key, d.id, d.registration_id FROM users u
			LEFT JOIN devices d ON d.user_name = u.name AND d.registration_id <> 0
				AND (SELECT count(*) FROM signed_prekeys s WHERE s.user_name = d.user_name AND s.device = d.id) = 2
			WHERE u.name = $1 ORDER BY d.id`, user)
		if err != nil {
			return err
		}
		keyed := make(map[uint32]uint32)
		var found bool
		var all []uint32
		for rows.Next() {
			var id, reg *int64
			if err := rows.Scan(&identity, &id, &reg); err != nil {
				rows.Close()
				return err
			}
			found = true
			if id != nil {
				keyed[uint32(*id)] = uint32(*reg)
				all = append(all, uint32(*id))
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		switch {
		case !found:
			return store.ErrNotFound
		case identity == nil:
			return store.ErrNoKeys
		}
		want := devices
		if want == nil {
			want = all
		}
		if len(want) == 0 {
			return store.ErrNoKeys
		}
		bundles = make([]store.Bundle, len(want))
		var bt pgx.Batch
		for i, d := range want {
			reg, ok := keyed[d]
			if !ok {
				return fmt.Errorf("device %d: %w", d, store.ErrNoKeys)
			}
			b := &bundles[i]
			b.Device, b.RegistrationID = d, reg
			bt.Queue(`SELECT id, key, signature FROM signed_prekeys WHERE user_name = $1 AND device = $2 AND kind = $3`,
				user, int64(d), int16(kindEC)).QueryRow(func(row pgx.Row) error {
				return row.Scan(&b.SignedPreKey.ID, &b.SignedPreKey.Key, &b.SignedPreKey.Signature)
			})
			bt.Queue(`SELECT id, key, signature FROM signed_prekeys WHERE user_name = $1 AND device = $2 AND kind = $3`,
				user, int64(d), int16(kindKyber)).QueryRow(func(row pgx.Row) error {
				return row.Scan(&b.KyberPreKey.ID, &b.KyberPreKey.Key, &b.KyberPreKey.Signature)
			})
			if !oneTime {
				continue
			}
			// A one-time Kyber prekey replaces the last-resort one if
			// one is left.
			bt.Queue(takeOneTimeSQL, user, int64(d), int16(kindKyber)).QueryRow(func(row pgx.Row) error {
				var k store.SignedPreKey
				switch err := row.Scan(&k.ID, &k.Key, &k.Signature); {
				case err == nil:
					b.KyberPreKey = k
				case !errors.Is(err, pgx.ErrNoRows):
					return err
				}
				return nil
			})
			bt.Queue(takeOneTimeSQL, user, int64(d), int16(kindEC)).QueryRow(func(row pgx.Row) error {
				var (
					pk  store.PreKey
					sig []byte
				)
				switch err := row.Scan(&pk.ID, &pk.Key, &sig); {
				case err == nil:
					b.PreKey = &pk
				case !errors.Is(err, pgx.ErrNoRows):
					return err
				}
				return nil
			})
		}
		return tx.SendBatch(ctx, &bt).Close()
	})
	if err != nil {
		return nil, nil, err
	}
	return identity, bundles, nil
}
