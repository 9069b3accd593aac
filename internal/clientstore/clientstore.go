// Package clientstore is a client's local state: its device key, the server
// invite, its account, and the message history, in one SQLite file under the
// client's home directory.
//
// The history doubles as the outbox (messages not yet acknowledged by the
// server are resent, with the same id, on the next connection) and as the
// deduplication record that makes delivery exactly-once for the application:
// an envelope redelivered after a crash is recognised by its (sender, id).
package clientstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// FileName is the database file inside the home directory.
const FileName = "client.db"

// ErrNotInitialized means the home directory has no client state yet.
var ErrNotInitialized = errors.New("no Magpie client here yet: run `magpie init --invite …` first")

// Sealer encrypts values at rest (internal/vault implements it). The
// additional data binds each value to its place, so values cannot be moved
// between rows or keys.
type Sealer interface {
	Seal(aad, plaintext []byte) []byte
	Open(aad, sealed []byte) ([]byte, error)
}

// Store is an open client state database. Its methods run outside any
// transaction; Update runs a function inside one, with the same methods on
// the Tx.
type Store struct {
	view
	db *sql.DB
}

// Tx is a transaction: everything done through it commits or rolls back
// together.
type Tx struct{ view }

// querier is what *sql.DB and *sql.Tx have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// view holds the operations, over the database or a transaction.
type view struct {
	q      querier
	sealer Sealer
}

// ErrLocked means a secret was needed before SetSealer.
var ErrLocked = errors.New("client state is locked: no key to decrypt it")

// SchemaVersion of the client database (PRAGMA user_version).
const SchemaVersion = 3

// The schema. Secrets (the device key setting, every kv value, message
// bodies) are sealed; what stays in clear is metadata the client needs to
// query: settings such as the invite, peers' names, ids and timestamps.
const schema = `
CREATE TABLE IF NOT EXISTS settings (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS kv (
	ns    TEXT NOT NULL,
	key   TEXT NOT NULL,
	value BLOB NOT NULL,                   -- sealed
	PRIMARY KEY (ns, key)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	outgoing    INTEGER NOT NULL,          -- 1 sent by us, 0 received
	peer        TEXT NOT NULL,             -- the other user
	peer_device INTEGER NOT NULL,          -- sender device (incoming); 0 (outgoing)
	client_id   BLOB NOT NULL,
	body        BLOB NOT NULL,             -- sealed: the text (or an attachment's caption)
	content     BLOB NOT NULL DEFAULT x'', -- sealed: encoded content.Content when not plain text
	created     INTEGER NOT NULL,          -- local Unix ms
	server_time INTEGER NOT NULL DEFAULT 0,-- Unix ms the server accepted it; 0 = not yet (outbox)
	delivered   INTEGER NOT NULL DEFAULT 0,-- outgoing: Unix ms of the first delivery receipt
	UNIQUE (outgoing, peer, peer_device, client_id)
) STRICT;
CREATE INDEX IF NOT EXISTS messages_outbox ON messages (outgoing, server_time) WHERE outgoing = 1 AND server_time = 0;
CREATE INDEX IF NOT EXISTS messages_sent_id ON messages (client_id) WHERE outgoing = 1;
`

// Open opens the state in dir. With create it makes the directory (private
// to the user, 0700, because it holds the device's private key) and the
// database as needed; without, a missing database is ErrNotInitialized and
// nothing is created.
func Open(dir string, create bool) (*Store, error) {
	path := filepath.Join(dir, FileName)
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("client home %s: %w", dir, err)
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("client state %s: %w", path, err)
		}
		f.Close()
	} else if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotInitialized
	} else if err != nil {
		return nil, fmt.Errorf("client state %s: %w", path, err)
	}
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening client state: %w", err)
	}
	db.SetMaxOpenConns(1) // one writer; several CLI processes coordinate through busy_timeout
	var version int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil {
		db.Close()
		return nil, fmt.Errorf("client state: %w", err)
	}
	var tables int
	db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'messages'`).Scan(&tables)
	if tables > 0 && version == 2 {
		// 2 → 3: messages gain their encoded content (attachments).
		if _, err := db.Exec(`ALTER TABLE messages ADD COLUMN content BLOB NOT NULL DEFAULT x''`); err != nil {
			db.Close()
			return nil, fmt.Errorf("client state: migrating: %w", err)
		}
		version = 3
	}
	if tables > 0 && version != SchemaVersion {
		db.Close()
		return nil, fmt.Errorf("client state in %s is from an incompatible development build (schema %d, want %d): move it away and run `magpie init` again", dir, version, SchemaVersion)
	}
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("client state schema: %w", err)
	}
	if _, err := db.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, SchemaVersion)); err != nil {
		db.Close()
		return nil, fmt.Errorf("client state schema: %w", err)
	}
	return &Store{view: view{q: db}, db: db}, nil
}

// SetSealer unlocks the store: secrets are sealed and opened with sl from
// now on.
func (s *Store) SetSealer(sl Sealer) { s.sealer = sl }

// Update runs fn in one transaction, committing if it returns nil.
func (s *Store) Update(ctx context.Context, fn func(tx *Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("client state: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if err := fn(&Tx{view{q: tx, sealer: s.sealer}}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("client state: commit: %w", err)
	}
	return nil
}

func (v *view) seal(aad string, plaintext []byte) ([]byte, error) {
	if v.sealer == nil {
		return nil, ErrLocked
	}
	return v.sealer.Seal([]byte(aad), plaintext), nil
}

func (v *view) open(aad string, sealed []byte) ([]byte, error) {
	if v.sealer == nil {
		return nil, ErrLocked
	}
	pt, err := v.sealer.Open([]byte(aad), sealed)
	if err != nil {
		return nil, fmt.Errorf("client state: decrypting %s: %w", aad, err)
	}
	return pt, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// SecretSetting returns a sealed setting, or nil if unset.
func (v *view) SecretSetting(ctx context.Context, key string) ([]byte, error) {
	b, err := v.Get(ctx, key)
	if err != nil || b == nil {
		return b, err
	}
	return v.open("settings/"+key, b)
}

// SetSecretSetting stores a setting sealed.
func (v *view) SetSecretSetting(ctx context.Context, key string, value []byte) error {
	b, err := v.seal("settings/"+key, value)
	if err != nil {
		return err
	}
	return v.Set(ctx, key, b)
}

// KV returns the key-value view that the end-to-end layer keeps its state
// in (e2e.KV), sealed at rest.
func (v *view) KV(ctx context.Context) *KV { return &KV{v: v, ctx: ctx} }

// KV implements e2e.KV over the kv table.
type KV struct {
	v   *view
	ctx context.Context
}

func kvAAD(ns, key string) string { return "kv/" + ns + "/" + key }

func (k *KV) Get(ns, key string) ([]byte, error) {
	var b []byte
	err := k.v.q.QueryRowContext(k.ctx, `SELECT value FROM kv WHERE ns = ? AND key = ?`, ns, key).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("client state: %w", err)
	}
	return k.v.open(kvAAD(ns, key), b)
}

func (k *KV) Put(ns, key string, value []byte) error {
	b, err := k.v.seal(kvAAD(ns, key), value)
	if err != nil {
		return err
	}
	_, err = k.v.q.ExecContext(k.ctx, `INSERT INTO kv (ns, key, value) VALUES (?, ?, ?)
		ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value`, ns, key, b)
	if err != nil {
		return fmt.Errorf("client state: %w", err)
	}
	return nil
}

func (k *KV) Delete(ns, key string) error {
	if _, err := k.v.q.ExecContext(k.ctx, `DELETE FROM kv WHERE ns = ? AND key = ?`, ns, key); err != nil {
		return fmt.Errorf("client state: %w", err)
	}
	return nil
}

func (k *KV) Keys(ns, prefix string) ([]string, error) {
	rows, err := k.v.q.QueryContext(k.ctx, `SELECT key FROM kv WHERE ns = ? AND substr(key, 1, length(?)) = ? ORDER BY key`, ns, prefix, prefix)
	if err != nil {
		return nil, fmt.Errorf("client state: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var key string
		if err := rows.Scan(&key); err != nil {
			return nil, err
		}
		out = append(out, key)
	}
	return out, rows.Err()
}

// Setting names.
const (
	SettingInvite     = "invite"
	SettingDeviceKey  = "device_private_key"
	SettingUsername   = "username"
	SettingDeviceID   = "device_id"
	SettingServerTime = "server_time_offset_ms"
)

// Get returns a setting, or nil if unset.
func (v *view) Get(ctx context.Context, key string) ([]byte, error) {
	var value []byte
	err := v.q.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&value)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading setting %s: %w", key, err)
	}
	return value, nil
}

func (v *view) sealContent(outgoing bool, peer string, device uint32, id, content []byte) ([]byte, error) {
	if content == nil {
		return []byte{}, nil
	}
	return v.seal("content/"+bodyAAD(outgoing, peer, device, id), content)
}

// bodyAAD binds a sealed message body to its row's identity.
func bodyAAD(outgoing bool, peer string, device uint32, id []byte) string {
	return fmt.Sprintf("msg/%t/%s/%d/%x", outgoing, peer, device, id)
}

// Set stores a setting.
func (v *view) Set(ctx context.Context, key string, value []byte) error {
	_, err := v.q.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("saving setting %s: %w", key, err)
	}
	return nil
}

// Message is one row of history.
type Message struct {
	Outgoing   bool
	Peer       string
	PeerDevice uint32
	ID         [16]byte
	Body       string
	// Content is the encoded content.Content of a message that is not
	// plain text (an attachment); nil for text.
	Content    []byte
	Created    time.Time
	ServerTime time.Time // zero while in the outbox
	Delivered  time.Time // outgoing: first delivery receipt; zero if none yet
}

// AddOutgoing puts a message in the outbox.
func (v *view) AddOutgoing(ctx context.Context, to string, id [16]byte, body string, now time.Time) error {
	return v.AddOutgoingContent(ctx, to, id, body, nil, now)
}

// AddOutgoingContent puts a message with encoded content (an attachment)
// in the outbox; body is what history shows.
func (v *view) AddOutgoingContent(ctx context.Context, to string, id [16]byte, body string, content []byte, now time.Time) error {
	sealed, err := v.seal(bodyAAD(true, to, 0, id[:]), []byte(body))
	if err != nil {
		return err
	}
	sealedContent, err := v.sealContent(true, to, 0, id[:], content)
	if err != nil {
		return err
	}
	_, err = v.q.ExecContext(ctx, `INSERT INTO messages (outgoing, peer, peer_device, client_id, body, content, created)
		VALUES (1, ?, 0, ?, ?, ?, ?)`, to, id[:], sealed, sealedContent, now.UnixMilli())
	if err != nil {
		return fmt.Errorf("saving outgoing message: %w", err)
	}
	return nil
}

// Outbox lists outgoing messages the server has not acknowledged, oldest
// first.
func (v *view) Outbox(ctx context.Context) ([]Message, error) {
	return v.query(ctx, `SELECT outgoing, peer, peer_device, client_id, body, content, created, server_time, delivered
		FROM messages WHERE outgoing = 1 AND server_time = 0 ORDER BY id`)
}

// MarkSent records the server's acknowledgement of an outgoing message.
func (v *view) MarkSent(ctx context.Context, id [16]byte, serverTime time.Time) error {
	_, err := v.q.ExecContext(ctx, `UPDATE messages SET server_time = ? WHERE outgoing = 1 AND client_id = ?`,
		serverTime.UnixMilli(), id[:])
	if err != nil {
		return fmt.Errorf("marking message sent: %w", err)
	}
	return nil
}

// Drop removes an outgoing message that the server refused for good.
func (v *view) Drop(ctx context.Context, id [16]byte) error {
	_, err := v.q.ExecContext(ctx, `DELETE FROM messages WHERE outgoing = 1 AND client_id = ? AND server_time = 0`, id[:])
	if err != nil {
		return fmt.Errorf("dropping message: %w", err)
	}
	return nil
}

// MarkDelivered records a delivery receipt; it reports whether the message
// is known here.
func (v *view) MarkDelivered(ctx context.Context, id [16]byte, at time.Time) (bool, error) {
	res, err := v.q.ExecContext(ctx, `UPDATE messages SET delivered = CASE WHEN delivered = 0 THEN ? ELSE delivered END
		WHERE outgoing = 1 AND client_id = ?`, at.UnixMilli(), id[:])
	if err != nil {
		return false, fmt.Errorf("marking message delivered: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// AddIncoming stores a received message (or, with m.Outgoing, a transcript
// of a message this user sent from another device). It reports false, and
// stores nothing, if the same (direction, peer, device, id) was stored
// before: the server redelivers anything it did not see acknowledged.
func (v *view) AddIncoming(ctx context.Context, m Message) (bool, error) {
	sealed, err := v.seal(bodyAAD(m.Outgoing, m.Peer, m.PeerDevice, m.ID[:]), []byte(m.Body))
	if err != nil {
		return false, err
	}
	var outgoing, server int64
	if m.Outgoing {
		outgoing = 1
	}
	if !m.ServerTime.IsZero() {
		server = m.ServerTime.UnixMilli()
	}
	sealedContent, err := v.sealContent(m.Outgoing, m.Peer, m.PeerDevice, m.ID[:], m.Content)
	if err != nil {
		return false, err
	}
	res, err := v.q.ExecContext(ctx, `INSERT INTO messages (outgoing, peer, peer_device, client_id, body, content, created, server_time)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		outgoing, m.Peer, m.PeerDevice, m.ID[:], sealed, sealedContent, m.Created.UnixMilli(), server)
	if err != nil {
		return false, fmt.Errorf("saving incoming message: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// History returns up to limit most recent messages, oldest first; peer ""
// means all conversations.
func (v *view) History(ctx context.Context, peer string, limit int) ([]Message, error) {
	return v.query(ctx, `SELECT outgoing, peer, peer_device, client_id, body, content, created, server_time, delivered FROM
		(SELECT id, outgoing, peer, peer_device, client_id, body, content, created, server_time, delivered
		FROM messages WHERE ? = '' OR peer = ? ORDER BY id DESC LIMIT ?) ORDER BY created, id`, peer, peer, limit)
}

func (v *view) query(ctx context.Context, q string, args ...any) ([]Message, error) {
	rows, err := v.q.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading messages: %w", err)
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		var m Message
		var id, sealed, sealedContent []byte
		var created, server, delivered int64
		if err := rows.Scan(&m.Outgoing, &m.Peer, &m.PeerDevice, &id, &sealed, &sealedContent, &created, &server, &delivered); err != nil {
			return nil, fmt.Errorf("reading messages: %w", err)
		}
		if len(sealedContent) > 0 {
			if m.Content, err = v.open("content/"+bodyAAD(m.Outgoing, m.Peer, m.PeerDevice, id), sealedContent); err != nil {
				return nil, err
			}
		}
		body, err := v.open(bodyAAD(m.Outgoing, m.Peer, m.PeerDevice, id), sealed)
		if err != nil {
			return nil, err
		}
		m.Body = string(body)
		copy(m.ID[:], id)
		m.Created = time.UnixMilli(created)
		if server != 0 {
			m.ServerTime = time.UnixMilli(server)
		}
		if delivered != 0 {
			m.Delivered = time.UnixMilli(delivered)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}
