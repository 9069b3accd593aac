package client

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// StoreFileName is the SQLite database the default store keeps in a home.
const StoreFileName = "client.db"

// storeSchema is the default store's PRAGMA user_version. Version 3 was the
// table-per-kind layout of earlier development builds; Open moves its rows
// into legacy namespaces, which the Client converts on unlock (legacy.go).
const storeSchema = 4

// sqliteStore is the default Store: one table of (namespace, key, value) in
// SQLite (WAL, synchronous=FULL: a commit is on disk when it returns). Writes
// go through one connection; reads through a small pool, concurrently with
// the writer.
type sqliteStore struct {
	w, r   *sql.DB
	ws, rs *statements // prepared once for each pool
}

// The statements of a transaction. They are prepared once per store (a
// sixth of a busy client's CPU went to parsing them again on every call)
// and bound to each transaction as it uses them.
const (
	qGet      = `SELECT value FROM kv WHERE ns = ? AND key = ?`
	qScanAsc  = `SELECT key, value FROM kv WHERE ns = ? AND key >= ? AND (? = '' OR key < ?) ORDER BY key LIMIT ?`
	qScanDesc = `SELECT key, value FROM kv WHERE ns = ? AND key >= ? AND (? = '' OR key < ?) ORDER BY key DESC LIMIT ?`
	qPut      = `INSERT INTO kv (ns, key, value) VALUES (?, ?, ?) ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value`
	qDelete   = `DELETE FROM kv WHERE ns = ? AND key = ?`
)

type statements struct {
	get, scanAsc, scanDesc, put, del *sql.Stmt
}

func prepare(db *sql.DB, writes bool) (*statements, error) {
	var s statements
	for _, p := range []struct {
		dst   **sql.Stmt
		q     string
		write bool
	}{{&s.get, qGet, false}, {&s.scanAsc, qScanAsc, false}, {&s.scanDesc, qScanDesc, false}, {&s.put, qPut, true}, {&s.del, qDelete, true}} {
		if p.write && !writes {
			continue
		}
		st, err := db.Prepare(p.q)
		if err != nil {
			return nil, fmt.Errorf("client state: %w", storeErr(err))
		}
		*p.dst = st
	}
	return &s, nil
}

// NewSQLiteStore opens (creating it if needed) the SQLite store at path,
// the store a Client uses by default (Options.Store nil: path is
// HOME/client.db). The file and its directory are private to the user.
func NewSQLiteStore(path string) (Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("client state: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("client state: %w", err)
	}
	f.Close()
	base := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)"
	w, err := sql.Open("sqlite", base+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("client state: %w", err)
	}
	w.SetMaxOpenConns(1)
	if err := migrate(w); err != nil {
		w.Close()
		return nil, err
	}
	r, err := sql.Open("sqlite", base+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("client state: %w", err)
	}
	r.SetMaxOpenConns(4)
	s := &sqliteStore{w: w, r: r}
	if s.ws, err = prepare(w, true); err == nil {
		s.rs, err = prepare(r, false)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func migrate(db *sql.DB) error {
	var version int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil {
		return storeErr(err)
	}
	switch version {
	case storeSchema:
		return nil
	case 0, 2, 3:
	default:
		return fmt.Errorf("client state is from a newer Magpie (schema %d, this one reads %d): update magpie", version, storeSchema)
	}
	tx, err := db.Begin()
	if err != nil {
		return storeErr(err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if _, err := tx.Exec(`CREATE TABLE IF NOT EXISTS kv (
		ns    TEXT NOT NULL,
		key   TEXT NOT NULL,
		value BLOB NOT NULL,
		PRIMARY KEY (ns, key)
	) STRICT, WITHOUT ROWID`); err != nil {
		return storeErr(err)
	}
	var n int
	if err := tx.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'messages'`).Scan(&n); err != nil {
		return storeErr(err)
	}
	if n > 0 {
		// An earlier build's tables: keep their rows as they are (values
		// still sealed under their old labels) for the Client to convert.
		if version == 2 {
			if _, err := tx.Exec(`ALTER TABLE messages ADD COLUMN content BLOB NOT NULL DEFAULT x''`); err != nil {
				return storeErr(err)
			}
		}
		if _, err := tx.Exec(`INSERT INTO kv (ns, key, value) SELECT ?, key, value FROM settings`, nsLegacySettings); err != nil {
			return storeErr(err)
		}
		if _, err := tx.Exec(`INSERT INTO kv (ns, key, value) SELECT ?, printf('%016x', id),
			CAST(json_object('outgoing', outgoing, 'peer', peer, 'peer_device', peer_device, 'client_id', hex(client_id),
				'body', hex(body), 'content', hex(content), 'created', created, 'server_time', server_time, 'delivered', delivered) AS BLOB)
			FROM messages`, nsLegacyMessages); err != nil {
			return storeErr(err)
		}
		for _, t := range []string{"messages", "settings"} {
			if _, err := tx.Exec(`DROP TABLE ` + t); err != nil {
				return storeErr(err)
			}
		}
	}
	if _, err := tx.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, storeSchema)); err != nil {
		return storeErr(err)
	}
	return storeErr(tx.Commit())
}

func (s *sqliteStore) Update(ctx context.Context, fn func(Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("client state: begin: %w", storeErr(err))
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if err := fn(&sqliteTx{ctx: ctx, q: tx, st: s.ws}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("client state: commit: %w", storeErr(err))
	}
	return nil
}

func (s *sqliteStore) View(ctx context.Context, fn func(ReadTx) error) error {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("client state: begin: %w", storeErr(err))
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	return fn(&sqliteTx{ctx: ctx, q: tx, st: s.rs})
}

func (s *sqliteStore) Close() error {
	// Closing a DB closes its prepared statements.
	return errors.Join(s.r.Close(), s.w.Close())
}

type sqliteTx struct {
	ctx   context.Context
	q     *sql.Tx
	st    *statements
	bound map[*sql.Stmt]*sql.Stmt // the store's statements, bound to q
}

// stmt binds one of the store's prepared statements to the transaction.
func (t *sqliteTx) stmt(s *sql.Stmt) *sql.Stmt {
	if b := t.bound[s]; b != nil {
		return b
	}
	if t.bound == nil {
		t.bound = map[*sql.Stmt]*sql.Stmt{}
	}
	b := t.q.StmtContext(t.ctx, s)
	t.bound[s] = b
	return b
}

func (t *sqliteTx) Get(ns, key string) ([]byte, error) {
	var v []byte
	err := t.stmt(t.st.get).QueryRowContext(t.ctx, ns, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("client state: reading %s/%s: %w", ns, key, storeErr(err))
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// scanBatch is how many rows Scan reads per query: the rows are closed
// before fn sees them, so fn may read and write the same transaction.
const scanBatch = 64

func (t *sqliteTx) Scan(ns, from, to string, reverse bool, fn func(string, []byte) (bool, error)) error {
	q := t.st.scanAsc
	if reverse {
		q = t.st.scanDesc
	}
	for {
		keys, values, err := t.scanOnce(q, ns, from, to)
		if err != nil {
			return err
		}
		for i := range keys {
			if more, err := fn(keys[i], values[i]); err != nil || !more {
				return err
			}
		}
		if len(keys) < scanBatch {
			return nil
		}
		last := keys[len(keys)-1]
		if reverse {
			to = last
		} else {
			from = last + "\x00"
		}
	}
}

func (t *sqliteTx) scanOnce(q *sql.Stmt, ns, from, to string) (keys []string, values [][]byte, err error) {
	rows, err := t.stmt(q).QueryContext(t.ctx, ns, from, to, to, scanBatch)
	if err != nil {
		return nil, nil, fmt.Errorf("client state: scanning %s: %w", ns, storeErr(err))
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return nil, nil, fmt.Errorf("client state: scanning %s: %w", ns, storeErr(err))
		}
		keys, values = append(keys, k), append(values, v)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("client state: scanning %s: %w", ns, storeErr(err))
	}
	return keys, values, nil
}

func (t *sqliteTx) Put(ns, key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	_, err := t.stmt(t.st.put).ExecContext(t.ctx, ns, key, value)
	if err != nil {
		return fmt.Errorf("client state: writing %s/%s: %w", ns, key, storeErr(err))
	}
	return nil
}

func (t *sqliteTx) Delete(ns, key string) error {
	if _, err := t.stmt(t.st.del).ExecContext(t.ctx, ns, key); err != nil {
		return fmt.Errorf("client state: deleting %s/%s: %w", ns, key, storeErr(err))
	}
	return nil
}

// storeErr makes a full disk match ErrStorageFull.
func storeErr(err error) error {
	if err == nil {
		return nil
	}
	var se *sqlite.Error
	if errors.As(err, &se) && (se.Code()&0xff == sqlite3.SQLITE_FULL) {
		return fmt.Errorf("%w: %w", ErrStorageFull, err)
	}
	if isNoSpace(err) {
		return fmt.Errorf("%w: %w", ErrStorageFull, err)
	}
	return err
}

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
