package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/magpie-im/magpie/store"
)

// Kinds of rows in signed_prekeys and one_time_prekeys.
const (
	kindEC    = 1
	kindKyber = 2
)

// SetKeys implements store.Store.
func (s *Store) SetKeys(ctx context.Context, dev store.DeviceAddr, k store.Keys, limit int) (store.KeyCounts, error) {
	if err := s.enter(); err != nil {
		return store.KeyCounts{}, err
	}
	defer s.gate.Leave()

	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return store.KeyCounts{}, fmt.Errorf("sqlite: set keys: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit

	var one int
	switch err := tx.QueryRowContext(ctx, `SELECT 1 FROM devices WHERE user = ? AND id = ?`, dev.User, dev.Device).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return store.KeyCounts{}, store.ErrNotFound
	case err != nil:
		return store.KeyCounts{}, fmt.Errorf("sqlite: set keys: %w", err)
	}
	if k.IdentityKey != nil {
		var current []byte
		if err := tx.QueryRowContext(ctx, `SELECT identity_key FROM users WHERE name = ?`, dev.User).Scan(&current); err != nil {
			return store.KeyCounts{}, fmt.Errorf("sqlite: set keys: identity: %w", err)
		}
		if current != nil && !bytes.Equal(current, k.IdentityKey) {
			keyed, err := keyedDevices(ctx, tx, dev.User)
			if err != nil {
				return store.KeyCounts{}, fmt.Errorf("sqlite: set keys: %w", err)
			}
			delete(keyed, dev.Device)
			if len(keyed) > 0 {
				return store.KeyCounts{}, store.ErrIdentityConflict
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET identity_key = ? WHERE name = ?`, k.IdentityKey, dev.User); err != nil {
			return store.KeyCounts{}, fmt.Errorf("sqlite: set keys: identity: %w", err)
		}
	}
	if k.RegistrationID != 0 {
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET registration_id = ? WHERE user = ? AND id = ?`,
			k.RegistrationID, dev.User, dev.Device); err != nil {
			return store.KeyCounts{}, fmt.Errorf("sqlite: set keys: registration id: %w", err)
		}
	}
	for kind, spk := range map[int]*store.SignedPreKey{kindEC: k.SignedPreKey, kindKyber: k.LastResortKyber} {
		if spk == nil {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO signed_prekeys (user, device, kind, id, key, signature)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (user, device, kind) DO UPDATE SET id = excluded.id, key = excluded.key, signature = excluded.signature`,
			dev.User, dev.Device, kind, spk.ID, spk.Key, spk.Signature); err != nil {
			return store.KeyCounts{}, fmt.Errorf("sqlite: set keys: signed prekey: %w", err)
		}
	}
	put := func(kind int, id uint32, key, sig []byte) error {
		if sig == nil {
			sig = []byte{}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO one_time_prekeys (user, device, kind, id, key, signature)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (user, device, kind, id) DO UPDATE SET key = excluded.key, signature = excluded.signature`,
			dev.User, dev.Device, kind, id, key, sig)
		return err
	}
	for _, pk := range k.PreKeys {
		if err := put(kindEC, pk.ID, pk.Key, nil); err != nil {
			return store.KeyCounts{}, fmt.Errorf("sqlite: set keys: prekey: %w", err)
		}
	}
	for _, pk := range k.KyberPreKeys {
		if err := put(kindKyber, pk.ID, pk.Key, pk.Signature); err != nil {
			return store.KeyCounts{}, fmt.Errorf("sqlite: set keys: kyber prekey: %w", err)
		}
	}
	counts, err := keyCounts(ctx, tx, dev)
	if err != nil {
		return store.KeyCounts{}, fmt.Errorf("sqlite: set keys: %w", err)
	}
	if limit > 0 && (counts.PreKeys > limit || counts.KyberPreKeys > limit) {
		return store.KeyCounts{}, store.ErrKeyLimit
	}
	if err := tx.Commit(); err != nil {
		return store.KeyCounts{}, fmt.Errorf("sqlite: set keys: commit: %w", err)
	}
	return counts, nil
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func keyCounts(ctx context.Context, q querier, dev store.DeviceAddr) (store.KeyCounts, error) {
	var c store.KeyCounts
	err := q.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM one_time_prekeys WHERE user = ?1 AND device = ?2 AND kind = 1),
		(SELECT count(*) FROM one_time_prekeys WHERE user = ?1 AND device = ?2 AND kind = 2)`,
		dev.User, dev.Device).Scan(&c.PreKeys, &c.KyberPreKeys)
	if err != nil {
		return c, fmt.Errorf("key counts: %w", err)
	}
	return c, nil
}

// KeyCounts implements store.Store.
func (s *Store) KeyCounts(ctx context.Context, dev store.DeviceAddr) (store.KeyCounts, error) {
	if err := s.enter(); err != nil {
		return store.KeyCounts{}, err
	}
	defer s.gate.Leave()
	c, err := keyCounts(ctx, s.r, dev)
	if err != nil {
		return c, fmt.Errorf("sqlite: %w", err)
	}
	return c, nil
}

// Bundles implements store.Store. It runs on the write connection, the only
// writer, so taking a one-time key and deleting it cannot interleave with
// another caller doing the same.
func (s *Store) Bundles(ctx context.Context, user string, devices []uint32, oneTime bool) ([]byte, []store.Bundle, error) {
	if err := s.enter(); err != nil {
		return nil, nil, err
	}
	defer s.gate.Leave()

	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("sqlite: bundles: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit

	var identity []byte
	switch err := tx.QueryRowContext(ctx, `SELECT identity_key FROM users WHERE name = ?`, user).Scan(&identity); {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil, store.ErrNotFound
	case err != nil:
		return nil, nil, fmt.Errorf("sqlite: bundles: %w", err)
	}
	if identity == nil {
		return nil, nil, store.ErrNoKeys
	}
	keyed, err := keyedDevices(ctx, tx, user)
	if err != nil {
		return nil, nil, fmt.Errorf("sqlite: bundles: %w", err)
	}
	if devices == nil {
		for d := range keyed {
			devices = append(devices, d)
		}
		slices.Sort(devices)
	}
	if len(devices) == 0 {
		return nil, nil, store.ErrNoKeys
	}
	bundles := make([]store.Bundle, 0, len(devices))
	for _, d := range devices {
		reg, ok := keyed[d]
		if !ok {
			return nil, nil, fmt.Errorf("device %d: %w", d, store.ErrNoKeys)
		}
		b := store.Bundle{Device: d, RegistrationID: reg}
		if err := tx.QueryRowContext(ctx, `SELECT id, key, signature FROM signed_prekeys WHERE user = ? AND device = ? AND kind = 1`,
			user, d).Scan(&b.SignedPreKey.ID, &b.SignedPreKey.Key, &b.SignedPreKey.Signature); err != nil {
			return nil, nil, fmt.Errorf("sqlite: bundles: signed prekey: %w", err)
		}
		// A one-time Kyber prekey if one is left (and asked for), else
		// the last-resort one.
		err := sql.ErrNoRows
		if oneTime {
			err = tx.QueryRowContext(ctx, `DELETE FROM one_time_prekeys
			WHERE (user, device, kind, id) = (SELECT user, device, kind, id FROM one_time_prekeys
				WHERE user = ? AND device = ? AND kind = 2 ORDER BY id LIMIT 1)
			RETURNING id, key, signature`, user, d).Scan(&b.KyberPreKey.ID, &b.KyberPreKey.Key, &b.KyberPreKey.Signature)
		}
		if errors.Is(err, sql.ErrNoRows) {
			err = tx.QueryRowContext(ctx, `SELECT id, key, signature FROM signed_prekeys WHERE user = ? AND device = ? AND kind = 2`,
				user, d).Scan(&b.KyberPreKey.ID, &b.KyberPreKey.Key, &b.KyberPreKey.Signature)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("sqlite: bundles: kyber prekey: %w", err)
		}
		if !oneTime {
			bundles = append(bundles, b)
			continue
		}
		var pk store.PreKey
		err = tx.QueryRowContext(ctx, `DELETE FROM one_time_prekeys
			WHERE (user, device, kind, id) = (SELECT user, device, kind, id FROM one_time_prekeys
				WHERE user = ? AND device = ? AND kind = 1 ORDER BY id LIMIT 1)
			RETURNING id, key`, user, d).Scan(&pk.ID, &pk.Key)
		switch {
		case err == nil:
			b.PreKey = &pk
		case !errors.Is(err, sql.ErrNoRows):
			return nil, nil, fmt.Errorf("sqlite: bundles: prekey: %w", err)
		}
		bundles = append(bundles, b)
	}
	if err := tx.Commit(); err != nil {
		return nil, nil, fmt.Errorf("sqlite: bundles: commit: %w", err)
	}
	return identity, bundles, nil
}

// keyedDevices maps each device of user that has uploaded complete keys
// (registration id, signed prekey and last-resort Kyber prekey) to its
// registration id.
func keyedDevices(ctx context.Context, tx *sql.Tx, user string) (map[uint32]uint32, error) {
	rows, err := tx.QueryContext(ctx, `SELECT d.id, d.registration_id FROM devices d
		WHERE d.user = ? AND d.registration_id != 0
		AND (SELECT count(*) FROM signed_prekeys s WHERE s.user = d.user AND s.device = d.id) = 2`, user)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := make(map[uint32]uint32)
	for rows.Next() {
		var id, reg uint32
		if err := rows.Scan(&id, &reg); err != nil {
			return nil, err
		}
		m[id] = reg
	}
	return m, rows.Err()
}

// QueueDepth implements store.Store from the in-memory queue counts
// (counts.go): no query at all.
func (s *Store) QueueDepth(ctx context.Context) (int64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.gate.Leave()
	return s.counts.Sum(), nil
}
