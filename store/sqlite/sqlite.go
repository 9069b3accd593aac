// Package sqlite implements store.Store on an embedded SQLite database
// (modernc.org/sqlite, pure Go).
//
// All writes go through a single connection, since SQLite admits one writer
// at a time anyway, and each Commit is one BEGIN IMMEDIATE … COMMIT: one WAL
// sync for the whole batch (a batched commit). Reads use a small pool of
// separate connections, which WAL lets run concurrently with the writer.
//
// The database runs with journal_mode=WAL and synchronous=FULL, so a Commit
// that returned nil survives a process kill or power loss.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/magpie-im/magpie/internal/closegate"
	"github.com/magpie-im/magpie/internal/flock"
	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/internal/batchrules"
)

// Options configure Open. The zero value is usable.
type Options struct {
	// Logger receives operational messages (never payloads or keys).
	// Nil discards them.
	Logger *slog.Logger
	// ReadConns is the size of the read connection pool; 0 means 4.
	ReadConns int
	// BusyTimeout is how long a connection waits for a lock held by another
	// process before failing; 0 means 5s.
	BusyTimeout time.Duration
	// Reserve is the size of the file kept beside the database so that
	// acknowledgements commit on a full disk (reserve.go); 0 means 4 MiB,
	// negative none.
	Reserve int64
}

// Store is a store.Store backed by one SQLite database file.
type Store struct {
	log *slog.Logger
	w   *sql.DB // exactly one connection: all writes
	r   *sql.DB // read-only pool

	// deviceByKey runs on every connection's handshake; preparing it once
	// saved SQLite's per-call parse (about 8% of a handshake-storm's server
	// CPU, docs/BENCHMARKS.md).
	deviceByKey *sql.Stmt
	// pending runs once per push to a connected device: with thousands
	// of clients each receiving a few messages a second, parsing it each
	// time was most of the server's CPU (pprof, bench chat, 2,000 clients).
	pending *sql.Stmt
	// commitStmts are the batched commit's statements (commit.go).
	commitStmts [nStmts]*sql.Stmt

	// counts is every device's queue length (counts.go). wmu serializes
	// the transactions that change queues (Commit, Expire) with applying
	// their changes to counts, so each reads the lengths its predecessor
	// left.
	counts queueCounts
	wmu    sync.Mutex
	// reserve is released for acknowledgements when the disk is full.
	reserve reserve
	// senders is the counted parts of queues by sender (share.go),
	// guarded by wmu like counts.
	senders batchrules.SenderCounts
	// lock is held open, with an exclusive flock, while the store is open:
	// the counts are only right if no other process writes the queue.
	lock *os.File

	// gate lets Close wait for the calls in flight and refuse later ones.
	gate closegate.Gate
}

var _ store.Store = (*Store)(nil)

// ErrInUse is returned by Open when another process has the database open.
var ErrInUse = errors.New("the database is in use by another process (is another magpie server running on this data directory? stop it first)")

// Open opens (creating if needed, with mode 0600) the database at path and
// brings its schema up to date. path must name a file; ":memory:" is not
// supported because the read and write connections must share the data.
func Open(path string, opts Options) (*Store, error) {
	if path == "" || path == ":memory:" {
		return nil, fmt.Errorf("sqlite: open: path must name a file, got %q", path)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	readConns := opts.ReadConns
	if readConns <= 0 {
		readConns = 4
	}
	busy := opts.BusyTimeout
	if busy <= 0 {
		busy = 5 * time.Second
	}

	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	// Create the file ourselves so that it is private to the server user:
	// SQLite would create it with 0644 (less umask). SQLite gives the -wal
	// and -shm files the same mode as the database file.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	lock, err := flock.Lock(abs + ".lock")
	if errors.Is(err, flock.ErrLocked) {
		err = ErrInUse
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s, err := open(abs, readConns, busy, log)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s.lock = lock
	s.reserve = reserve{path: abs + ".reserve", size: opts.Reserve}
	if opts.Reserve == 0 {
		s.reserve.size = defaultReserve
	}
	s.reserve.open()
	return s, nil
}

// open opens the locked database file abs.
func open(abs string, readConns int, busy time.Duration, log *slog.Logger) (*Store, error) {
	// Per-connection settings, applied by the driver to every new connection.
	common := url.Values{}
	common.Add("_pragma", "busy_timeout("+strconv.FormatInt(busy.Milliseconds(), 10)+")")
	common.Add("_pragma", "foreign_keys(1)")
	common.Add("_pragma", "synchronous(FULL)")

	wq := cloneValues(common)
	// journal_mode=WAL is persistent in the file; setting it on the writer
	// (opened and used first, below) is enough, and keeps readers from ever
	// needing a write lock.
	wq.Add("_pragma", "journal_mode(WAL)")
	wq.Set("_txlock", "immediate") // take the write lock at BEGIN, not on first write
	rq := cloneValues(common)
	rq.Add("_pragma", "query_only(1)")

	w, err := sql.Open("sqlite", dsn(abs, wq))
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)

	ctx := context.Background()
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		w.Close()
		return nil, err
	}
	if mode != "wal" {
		w.Close()
		return nil, fmt.Errorf("journal_mode is %q, want wal", mode)
	}
	from, err := migrate(ctx, w)
	if err != nil {
		w.Close()
		return nil, err
	}

	r, err := sql.Open("sqlite", dsn(abs, rq))
	if err != nil {
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(readConns)
	r.SetMaxIdleConns(readConns)
	if err := r.PingContext(ctx); err != nil {
		w.Close()
		r.Close()
		return nil, err
	}

	deviceByKey, err := r.PrepareContext(ctx, `SELECT user, id, created FROM devices WHERE key = ?`)
	if err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("prepare: %w", err)
	}
	pending, err := r.PrepareContext(ctx, pendingSQL)
	if err != nil {
		deviceByKey.Close()
		w.Close()
		r.Close()
		return nil, fmt.Errorf("prepare: %w", err)
	}
	commitStmts, err := prepareCommit(ctx, w)
	if err != nil {
		pending.Close()
		deviceByKey.Close()
		w.Close()
		r.Close()
		return nil, err
	}

	s := &Store{log: log, w: w, r: r, deviceByKey: deviceByKey, pending: pending, commitStmts: *commitStmts}
	if err := s.counts.load(ctx, w); err != nil {
		s.closeDBs()
		return nil, err
	}

	if from != SchemaVersion {
		log.Info("sqlite store schema migrated", "path", abs, "from", from, "to", SchemaVersion)
	}
	log.Debug("sqlite store opened", "path", abs, "schema", SchemaVersion)
	return s, nil
}

func cloneValues(v url.Values) url.Values {
	c := make(url.Values, len(v))
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	return c
}

// dsn builds a file: URI so that any path (spaces, '?', '#') is escaped.
func dsn(abs string, q url.Values) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}
	return u.String()
}

// Close waits for operations in flight and closes the database. Later calls
// to any method, including Close, return store.ErrClosed.
func (s *Store) Close() error {
	if !s.gate.Close() {
		return store.ErrClosed
	}
	// The lock goes after the databases: the next process may open them at once.
	if err := errors.Join(s.closeDBs(), s.lock.Close()); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}

// closeDBs closes the prepared statements and both connection pools.
func (s *Store) closeDBs() error {
	errS := errors.Join(s.deviceByKey.Close(), s.pending.Close())
	for _, st := range s.commitStmts {
		errS = errors.Join(errS, st.Close())
	}
	return errors.Join(errS, s.r.Close(), s.w.Close())
}

// enter marks a call in flight; the caller must call s.gate.Leave.
func (s *Store) enter() error {
	if !s.gate.Enter() {
		return store.ErrClosed
	}
	return nil
}

// uniqueViolation reports whether err is a UNIQUE or PRIMARY KEY constraint
// failure.
func uniqueViolation(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code()
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// diskFull reports whether err says the disk is full: SQLite's
// SQLITE_FULL, or the system's ENOSPC.
func diskFull(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL || errors.Is(err, syscall.ENOSPC)
}

// foreignKeyViolation reports whether err is a FOREIGN KEY constraint
// failure.
func foreignKeyViolation(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

func ns(t time.Time) int64     { return t.UnixNano() }
func fromNS(n int64) time.Time { return time.Unix(0, n) }

func toKey(b []byte) ([store.KeySize]byte, error) {
	var k [store.KeySize]byte
	if len(b) != len(k) {
		return k, fmt.Errorf("stored key has %d bytes, want %d", len(b), len(k))
	}
	copy(k[:], b)
	return k, nil
}

func toClientID(b []byte) ([store.ClientIDSize]byte, error) {
	var id [store.ClientIDSize]byte
	if len(b) != len(id) {
		return id, fmt.Errorf("stored client id has %d bytes, want %d", len(b), len(id))
	}
	copy(id[:], b)
	return id, nil
}

// CreateUser implements store.Store.
func (s *Store) CreateUser(ctx context.Context, name string, key [store.KeySize]byte, now time.Time) (store.Device, error) {
	if err := s.enter(); err != nil {
		return store.Device{}, err
	}
	defer s.gate.Leave()

	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return store.Device{}, fmt.Errorf("sqlite: create user: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit

	// The write connection is the only writer, so these checks cannot race
	// with the inserts below; the constraint mapping after them is a backstop.
	var one int
	switch err := tx.QueryRowContext(ctx, `SELECT 1 FROM users WHERE name = ?`, name).Scan(&one); {
	case err == nil:
		return store.Device{}, store.ErrUserExists
	case !errors.Is(err, sql.ErrNoRows):
		return store.Device{}, fmt.Errorf("sqlite: create user: %w", err)
	}
	if err := checkKeyFree(ctx, tx, key); err != nil {
		return store.Device{}, fmt.Errorf("sqlite: create user: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO users (name, created) VALUES (?, ?)`, name, ns(now)); err != nil {
		if uniqueViolation(err) {
			return store.Device{}, store.ErrUserExists
		}
		return store.Device{}, fmt.Errorf("sqlite: create user: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO devices (user, id, key, created) VALUES (?, 1, ?, ?)`,
		name, key[:], ns(now)); err != nil {
		if uniqueViolation(err) {
			return store.Device{}, store.ErrKeyInUse
		}
		return store.Device{}, fmt.Errorf("sqlite: create user: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return store.Device{}, fmt.Errorf("sqlite: create user: commit: %w", err)
	}
	return store.Device{DeviceAddr: store.DeviceAddr{User: name, Device: 1}, Key: key, Created: fromNS(ns(now))}, nil
}

func checkKeyFree(ctx context.Context, tx *sql.Tx, key [store.KeySize]byte) error {
	var one int
	switch err := tx.QueryRowContext(ctx, `SELECT 1 FROM devices WHERE key = ?`, key[:]).Scan(&one); {
	case err == nil:
		return store.ErrKeyInUse
	case errors.Is(err, sql.ErrNoRows):
		return nil
	default:
		return err
	}
}

// AddDevice registers another device for user with the next unused device
// id. It returns store.ErrNotFound if user does not exist and
// store.ErrKeyInUse if key is registered. It is not part of store.Store yet:
// device linking will use it.
func (s *Store) AddDevice(ctx context.Context, user string, key [store.KeySize]byte, now time.Time) (store.Device, error) {
	if err := s.enter(); err != nil {
		return store.Device{}, err
	}
	defer s.gate.Leave()

	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return store.Device{}, fmt.Errorf("sqlite: add device: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit

	var id int64
	err = tx.QueryRowContext(ctx,
		`UPDATE users SET next_device = next_device + 1 WHERE name = ? RETURNING next_device - 1`, user).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Device{}, store.ErrNotFound
	}
	if err != nil {
		return store.Device{}, fmt.Errorf("sqlite: add device: %w", err)
	}
	if id > math.MaxUint32 {
		return store.Device{}, fmt.Errorf("sqlite: add device: device ids exhausted for user")
	}
	if err := checkKeyFree(ctx, tx, key); err != nil {
		return store.Device{}, fmt.Errorf("sqlite: add device: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO devices (user, id, key, created) VALUES (?, ?, ?, ?)`,
		user, id, key[:], ns(now)); err != nil {
		if uniqueViolation(err) {
			return store.Device{}, store.ErrKeyInUse
		}
		return store.Device{}, fmt.Errorf("sqlite: add device: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return store.Device{}, fmt.Errorf("sqlite: add device: commit: %w", err)
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
	err := s.deviceByKey.QueryRowContext(ctx, key[:]).
		Scan(&d.User, &d.Device, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Device{}, store.ErrNotFound
	}
	if err != nil {
		return store.Device{}, fmt.Errorf("sqlite: device by key: %w", err)
	}
	d.Key = key
	d.Created = fromNS(created)
	return d, nil
}

// User implements store.Store.
func (s *Store) User(ctx context.Context, name string) (store.User, error) {
	if err := s.enter(); err != nil {
		return store.User{}, err
	}
	defer s.gate.Leave()

	// One statement, so the user and its devices come from one snapshot.
	rows, err := s.r.QueryContext(ctx, `
		SELECT u.created, d.id, d.key, d.created, d.registration_id, u.identity_key
		FROM users u JOIN devices d ON d.user = u.name
		WHERE u.name = ?
		ORDER BY d.id`, name)
	if err != nil {
		return store.User{}, fmt.Errorf("sqlite: user: %w", err)
	}
	defer rows.Close()
	u := store.User{Name: name}
	for rows.Next() {
		var (
			uc, dc int64
			id     uint32
			key    []byte
			reg    uint32
		)
		if err := rows.Scan(&uc, &id, &key, &dc, &reg, &u.Identity); err != nil {
			return store.User{}, fmt.Errorf("sqlite: user: %w", err)
		}
		k, err := toKey(key)
		if err != nil {
			return store.User{}, fmt.Errorf("sqlite: user: %w", err)
		}
		u.Created = fromNS(uc)
		u.Devices = append(u.Devices, store.Device{
			DeviceAddr:     store.DeviceAddr{User: name, Device: id},
			Key:            k,
			Created:        fromNS(dc),
			RegistrationID: reg,
		})
	}
	if err := rows.Err(); err != nil {
		return store.User{}, fmt.Errorf("sqlite: user: %w", err)
	}
	// Every user has device 1 from CreateUser, so no rows means no user.
	if len(u.Devices) == 0 {
		return store.User{}, store.ErrNotFound
	}
	return u, nil
}

// pendingSQL is Pending's query, prepared once (Store.pending). A group
// item's sender, client id, payload, send time and expiry are in its
// shared rows (group.go); a 1:1 item has none, and its own columns are
// taken.
const pendingSQL = `
	SELECT q.seq, q.kind, coalesce(s.from_user, q.from_user), coalesce(s.from_device, q.from_device),
		coalesce(s.client_id, q.client_id), coalesce(p.payload, q.payload), coalesce(s.sent, q.sent),
		coalesce(s.expires, q.expires), s.group_id
	FROM queue AS q LEFT JOIN shared AS s ON s.id = q.shared_id LEFT JOIN shared_payload AS p ON p.id = q.shared_id
	WHERE q.to_user = ? AND q.to_device = ? AND q.seq > ? AND coalesce(s.expires, q.expires) > ?
	ORDER BY q.seq
	LIMIT ?`

// Pending implements store.Store. A limit <= 0 returns no items. An unknown
// device has an empty queue.

func (s *Store) Pending(ctx context.Context, dev store.DeviceAddr, after uint64, limit int, now time.Time) ([]store.Message, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()

	if limit <= 0 || after >= math.MaxInt64 {
		return nil, nil
	}
	rows, err := s.pending.QueryContext(ctx, dev.User, dev.Device, int64(after), ns(now), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: pending: %w", err)
	}
	defer rows.Close()
	var out []store.Message
	for rows.Next() {
		m := store.Message{To: dev}
		var (
			cid, group    []byte
			sent, expires int64
			kind          uint8
		)
		if err := rows.Scan(&m.Seq, &kind, &m.From.User, &m.From.Device, &cid, &m.Payload, &sent, &expires, &group); err != nil {
			return nil, fmt.Errorf("sqlite: pending: %w", err)
		}
		m.Kind = store.Kind(kind)
		if group != nil {
			if len(group) != len(m.Group) {
				return nil, fmt.Errorf("sqlite: pending: stored group id has %d bytes, want %d", len(group), len(m.Group))
			}
			m.Group = [store.GroupIDSize]byte(group)
		}
		if m.Kind != store.KindGroupChange { // a change has no client id
			if m.ClientID, err = toClientID(cid); err != nil {
				return nil, fmt.Errorf("sqlite: pending: %w", err)
			}
		}
		m.Sent = fromNS(sent)
		m.Expires = fromNS(expires)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: pending: %w", err)
	}
	return out, nil
}

// Expire implements store.Store. An item or deduplication record has expired
// when its Expires is at or before now (the same rule Pending uses).
func (s *Store) Expire(ctx context.Context, now time.Time) (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.gate.Leave()
	s.wmu.Lock()
	defer s.wmu.Unlock()

	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("sqlite: expire: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit

	t := ns(now)
	var (
		n     int64
		delta = make(map[store.DeviceAddr]int64)
	)
	// 1:1 items and receipts have their own expiry; group items have
	// their shared row's (group.go), which goes with them.
	for _, where := range []string{expiredItems, expiredGroupItems} {
		if err := expiredPerDevice(ctx, tx, where, t, delta); err != nil {
			return 0, fmt.Errorf("sqlite: expire: %w", err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM queue WHERE `+where, t)
		if err != nil {
			return 0, fmt.Errorf("sqlite: expire: delete items: %w", err)
		}
		k, err := res.RowsAffected()
		if err != nil {
			return 0, fmt.Errorf("sqlite: expire: %w", err)
		}
		n += k
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM shared_payload WHERE id IN (SELECT id FROM shared WHERE expires <= ?)`, t); err != nil {
		return 0, fmt.Errorf("sqlite: expire: delete shared payloads: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM shared WHERE expires <= ?`, t); err != nil {
		return 0, fmt.Errorf("sqlite: expire: delete shared rows: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM dedup WHERE expires <= ?`, t); err != nil {
		return 0, fmt.Errorf("sqlite: expire: delete dedup records: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("sqlite: expire: commit: %w", err)
	}
	s.counts.Apply(delta)
	s.senders = batchrules.SenderCounts{} // items went: count again when needed
	return int(n), nil
}

// The queue items that have expired at ?1, as conditions on queue: 1:1
// items and receipts by their own expiry (the partial index
// queue_by_expiry), group items by their shared row's, whose id and
// last_seq bound their seqs (group.go). CROSS JOIN keeps shared the outer
// loop, and the unary + keeps q.shared_id from being looked up by an
// index: without them the planner scanned all of queue, or built an
// automatic index over all of it, instead of reading each range.
const (
	expiredItems      = `expires <= ?1 AND shared_id IS NULL`
	expiredGroupItems = `seq IN (SELECT q.seq FROM shared AS s CROSS JOIN queue AS q ON q.seq BETWEEN s.id AND s.last_seq
		WHERE s.expires <= ?1 AND +q.shared_id = s.id)`
)

// expiredPerDevice subtracts from delta how many items of each device's
// queue match where (expiredItems or expiredGroupItems) at t: Expire's
// change to the queue counts.
func expiredPerDevice(ctx context.Context, tx *sql.Tx, where string, t int64, delta map[store.DeviceAddr]int64) error {
	expired, _, err := queueLengths(ctx, tx, where, t)
	if err != nil {
		return fmt.Errorf("expired items: %w", err)
	}
	for d, n := range expired {
		delta[d] -= n
	}
	return nil
}

// Recipient is one device of a user as a send to the user sees it.
type Recipient = batchrules.Recipient

// Recipients returns user's devices in id order (none for an unknown
// user). It is for a store that keeps queues elsewhere (store/pebblestore)
// and reads accounts from here.
func (s *Store) Recipients(ctx context.Context, user string) ([]Recipient, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	rows, err := s.r.QueryContext(ctx, commitSQL[stRecipients], user)
	if err != nil {
		return nil, fmt.Errorf("sqlite: recipients: %w", err)
	}
	defer rows.Close()
	var rs []Recipient
	for rows.Next() {
		var r Recipient
		if err := rows.Scan(&r.Device, &r.RegistrationID, &r.Keyed); err != nil {
			return nil, fmt.Errorf("sqlite: recipients: %w", err)
		}
		rs = append(rs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: recipients: %w", err)
	}
	return rs, nil
}
