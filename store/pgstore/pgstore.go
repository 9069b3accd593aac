// Package pgstore implements store.Store on PostgreSQL (pgx), for several
// Magpie server processes sharing one database.
//
// Nothing authoritative lives in process memory: queue lengths and each
// sender's share of a queue are columns and rows updated in the same
// transaction as the queue. A device's row is its queue's lock: a Commit
// locks the rows of every device it touches, in one sorted statement, and
// takes seqs while holding them, so a device's seqs become visible in
// increasing order whichever process committed them (commit.go).
//
// The schema is created and migrated at Open by goose, from the SQL files
// in migrations/; an advisory lock keeps processes that open at once from
// migrating together.
package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/magpie-im/magpie/internal/closegate"
	"github.com/magpie-im/magpie/internal/pgkit"
	"github.com/magpie-im/magpie/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options configure Open. The zero value is usable.
type Options struct {
	// Logger receives operational messages (never payloads or keys).
	// Nil discards them.
	Logger *slog.Logger
	// MaxConns is the connection pool's size; 0 keeps pgxpool's default
	// (or the URL's pool_max_conns).
	MaxConns int32
}

// Store is a store.Store backed by a PostgreSQL database.
type Store struct {
	log  *slog.Logger
	pool *pgxpool.Pool

	// gate lets Close wait for the calls in flight and refuse later ones.
	gate closegate.Gate
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at url (postgres://… or postgresql://…),
// brings its schema up to date and returns the store.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// goose's default version table: the store's migrations came first.
	pool, err := pgkit.Pool(ctx, url, opts.MaxConns, mustSub(migrations, "migrations"), "goose_db_version", log)
	if err != nil {
		return nil, fmt.Errorf("pgstore: open: %w", err)
	}
	log.Debug("postgres store opened", "host", pool.Config().ConnConfig.Host, "database", pool.Config().ConnConfig.Database)
	return &Store{log: log, pool: pool}, nil
}

// mustSub is fs.Sub for a directory that is embedded.
func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err)
	}
	return sub
}

// Close waits for operations in flight and closes the pool. Later calls to
// any method, including Close, return store.ErrClosed.
func (s *Store) Close() error {
	if !s.gate.Close() {
		return store.ErrClosed
	}
	s.pool.Close()
	return nil
}

// enter marks a call in flight; the caller must call s.gate.Leave.
func (s *Store) enter() error {
	if !s.gate.Enter() {
		return store.ErrClosed
	}
	return nil
}

// inTx runs fn in a transaction and commits it, again from the start
// when another transaction (maybe another process's) won a deadlock or a
// serialization conflict (pgkit.InTx); fn must reset whatever it filled
// in on an earlier attempt.
func (s *Store) inTx(ctx context.Context, what string, fn func(pgx.Tx) error) error {
	if err := pgkit.InTx(ctx, s.pool, s.log, what, fn); err != nil {
		return wrap(what, err)
	}
	return nil
}

// codeUnique is the SQLSTATE of a unique violation.
const codeUnique = "23505"

// wrap adds context to err; store's sentinels pass unchanged, and a full
// disk becomes store.ErrStorageFull.
func wrap(what string, err error) error {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return err
		}
	}
	if pgkit.SQLState(err) == pgkit.CodeDiskFull {
		return fmt.Errorf("pgstore: %s: %w: %w", what, store.ErrStorageFull, err)
	}
	return fmt.Errorf("pgstore: %s: %w", what, err)
}

var sentinels = []error{store.ErrNotFound, store.ErrUserExists, store.ErrKeyInUse, store.ErrKeyLimit,
	store.ErrNoKeys, store.ErrIdentityConflict, store.ErrClosed}

func ns(t time.Time) int64     { return t.UnixNano() }
func fromNS(n int64) time.Time { return time.Unix(0, n) }

// CreateUser implements store.Store.
func (s *Store) CreateUser(ctx context.Context, name string, key [store.KeySize]byte, now time.Time) (store.Device, error) {
	if err := s.enter(); err != nil {
		return store.Device{}, err
	}
	defer s.gate.Leave()
	err := s.inTx(ctx, "create user", func(tx pgx.Tx) error {
		// ON CONFLICT waits for a concurrent registration of the same
		// name to finish, and then reports it taken.
		tag, err := tx.Exec(ctx, `INSERT INTO users (name, created) VALUES ($1, $2) ON CONFLICT DO NOTHING`, name, ns(now))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrUserExists
		}
		return insertDevice(ctx, tx, name, 1, key, now)
	})
	if err != nil {
		return store.Device{}, err
	}
	return store.Device{DeviceAddr: store.DeviceAddr{User: name, Device: 1}, Key: key, Created: fromNS(ns(now))}, nil
}

// insertDevice adds a device row; a key registered before is ErrKeyInUse.
func insertDevice(ctx context.Context, tx pgx.Tx, user string, id int64, key [store.KeySize]byte, now time.Time) error {
	_, err := tx.Exec(ctx, `INSERT INTO devices (user_name, id, key, created) VALUES ($1, $2, $3, $4)`, user, id, key[:], ns(now))
	if pgkit.SQLState(err) == codeUnique {
		return store.ErrKeyInUse
	}
	return err
}

// AddDevice registers another device for user with the next unused device
// id (storetest.Store). It returns store.ErrNotFound if user does not exist
// and store.ErrKeyInUse if key is registered.
func (s *Store) AddDevice(ctx context.Context, user string, key [store.KeySize]byte, now time.Time) (store.Device, error) {
	if err := s.enter(); err != nil {
		return store.Device{}, err
	}
	defer s.gate.Leave()
	var id int64
	err := s.inTx(ctx, "add device", func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `UPDATE users SET next_device = next_device + 1 WHERE name = $1 RETURNING next_device - 1`, user).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if id > math.MaxUint32 {
			return errors.New("device ids exhausted for user")
		}
		return insertDevice(ctx, tx, user, id, key, now)
	})
	if err != nil {
		return store.Device{}, err
	}
	return store.Device{DeviceAddr: store.DeviceAddr{User: user, Device: uint32(id)}, Key: key, Created: fromNS(ns(now))}, nil
}

// DeviceByKey implements store.Store.
func (s *Store) DeviceByKey(ctx context.Context, key [store.KeySize]byte) (store.Device, error) {
	if err := s.enter(); err != nil {
		return store.Device{}, err
	}
	defer s.gate.Leave()
	var (
		d       store.Device
		created int64
	)
	err := s.pool.QueryRow(ctx, `SELECT user_name, id, created FROM devices WHERE key = $1`, key[:]).Scan(&d.User, &d.Device, &created)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Device{}, store.ErrNotFound
	}
	if err != nil {
		return store.Device{}, wrap("device by key", err)
	}
	d.Key, d.Created = key, fromNS(created)
	return d, nil
}

// User implements store.Store.
func (s *Store) User(ctx context.Context, name string) (store.User, error) {
	if err := s.enter(); err != nil {
		return store.User{}, err
	}
	defer s.gate.Leave()
	// One statement, so the user and its devices come from one snapshot.
	rows, err := s.pool.Query(ctx, `
		SELECT u.created, d.id, d.key, d.created, d.registration_id, u.identity_key
		FROM users u JOIN devices d ON d.user_name = u.name
		WHERE u.name = $1 ORDER BY d.id`, name)
	if err != nil {
		return store.User{}, wrap("user", err)
	}
	defer rows.Close()
	u := store.User{Name: name}
	for rows.Next() {
		var (
			uc, dc int64
			d      = store.Device{DeviceAddr: store.DeviceAddr{User: name}}
			key    []byte
		)
		if err := rows.Scan(&uc, &d.Device, &key, &dc, &d.RegistrationID, &u.Identity); err != nil {
			return store.User{}, wrap("user", err)
		}
		if len(key) != store.KeySize {
			return store.User{}, fmt.Errorf("pgstore: user: stored key has %d bytes, want %d", len(key), store.KeySize)
		}
		d.Key = [store.KeySize]byte(key)
		u.Created, d.Created = fromNS(uc), fromNS(dc)
		u.Devices = append(u.Devices, d)
	}
	if err := rows.Err(); err != nil {
		return store.User{}, wrap("user", err)
	}
	// Every user has device 1 from CreateUser, so no rows means no user.
	if len(u.Devices) == 0 {
		return store.User{}, store.ErrNotFound
	}
	return u, nil
}

// QueueDepth implements store.Store: the sum of the devices' counters,
// which reads the devices table, not the queue.
func (s *Store) QueueDepth(ctx context.Context) (int64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.gate.Leave()
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(sum(queued), 0)::bigint FROM devices`).Scan(&n); err != nil {
		return 0, wrap("queue depth", err)
	}
	return n, nil
}

// Pending implements store.Store. A group item's sender, client id,
// payload, send time and expiry are in its shared row.
//
// The plan wanted is an ordered range scan of queue's primary key that
// stops after limit unexpired rows, looking up each group item's shared
// row as it passes. With a plain LEFT JOIN and LIMIT $5 the planner
// dropped it whenever it believed the device's queue shorter than the
// limit (no column statistics yet after a bulk fill, or stale ones from
// when the queue was short: the case of a device back to a big offline
// queue): it hash-joined or bitmap-scanned and then sorted the whole
// queue for each page, 100+ ms at 100,000 items, on every custom plan
// (the first five executions of pgx's prepared statement on each
// connection). So:
//   - the shared lookup is a LATERAL subquery kept from being flattened
//     into a join by OFFSET 0: it can only be the inner side of a nested
//     loop, which keeps the queue's order, and runs only for rows with a
//     shared_id;
//   - the LIMIT is a subquery, which the planner cannot read at plan
//     time: it then plans for 10% of the rows it expects instead of all
//     of them, and at 10% an index scan that stops early costs less than
//     any plan that has to read and sort every row first. (A cost
//     argument, not a hint; checked with no statistics, with stale ones
//     and with fresh ones, custom and generic plans alike.)
//
// Expired items are filtered below the LIMIT: they are skipped, not
// counted, so a page is short only when the queue has no more.
func (s *Store) Pending(ctx context.Context, dev store.DeviceAddr, after uint64, limit int, now time.Time) ([]store.Message, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if limit <= 0 || after >= math.MaxInt64 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `
		SELECT q.seq, q.kind, coalesce(s.from_user, q.from_user), coalesce(s.from_device, q.from_device),
			coalesce(s.client_id, q.client_id), coalesce(s.payload, q.payload), coalesce(s.sent, q.sent),
			coalesce(s.expires, q.expires), s.group_id
		FROM queue q LEFT JOIN LATERAL (
			SELECT s.from_user, s.from_device, s.client_id, s.payload, s.sent, s.expires, s.group_id
			FROM shared s WHERE q.shared_id IS NOT NULL AND s.id = q.shared_id
			OFFSET 0
		) s ON true
		WHERE q.to_user = $1 AND q.to_device = $2 AND q.seq > $3 AND coalesce(s.expires, q.expires) > $4
		ORDER BY q.seq LIMIT (SELECT $5::bigint)`, dev.User, int64(dev.Device), int64(after), ns(now), limit)
	if err != nil {
		return nil, wrap("pending", err)
	}
	defer rows.Close()
	var out []store.Message
	for rows.Next() {
		m := store.Message{To: dev}
		var (
			cid, group    []byte
			sent, expires int64
			kind          int16
		)
		if err := rows.Scan(&m.Seq, &kind, &m.From.User, &m.From.Device, &cid, &m.Payload, &sent, &expires, &group); err != nil {
			return nil, wrap("pending", err)
		}
		m.Kind = store.Kind(kind)
		if group != nil {
			if len(group) != store.GroupIDSize {
				return nil, fmt.Errorf("pgstore: pending: stored group id has %d bytes", len(group))
			}
			m.Group = [store.GroupIDSize]byte(group)
		}
		if m.Kind != store.KindGroupChange { // a change has no client id
			if len(cid) != store.ClientIDSize {
				return nil, fmt.Errorf("pgstore: pending: stored client id has %d bytes", len(cid))
			}
			m.ClientID = [store.ClientIDSize]byte(cid)
		}
		m.Sent, m.Expires = fromNS(sent), fromNS(expires)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("pending", err)
	}
	return out, nil
}
