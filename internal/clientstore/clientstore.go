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

// Store is an open client state database.
type Store struct {
	db *sql.DB
}

const schema = `
CREATE TABLE IF NOT EXISTS settings (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS messages (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	outgoing    INTEGER NOT NULL,          -- 1 sent by us, 0 received
	peer        TEXT NOT NULL,             -- the other user
	peer_device INTEGER NOT NULL,          -- sender device (incoming); 0 (outgoing)
	client_id   BLOB NOT NULL,
	body        TEXT NOT NULL,
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
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening client state: %w", err)
	}
	db.SetMaxOpenConns(1) // one writer; several CLI processes coordinate through busy_timeout
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("client state schema: %w", err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Setting names.
const (
	SettingInvite     = "invite"
	SettingDeviceKey  = "device_private_key"
	SettingUsername   = "username"
	SettingDeviceID   = "device_id"
	SettingServerTime = "server_time_offset_ms"
)

// Get returns a setting, or nil if unset.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := s.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading setting %s: %w", key, err)
	}
	return v, nil
}

// Set stores a setting.
func (s *Store) Set(ctx context.Context, key string, value []byte) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?)
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
	Created    time.Time
	ServerTime time.Time // zero while in the outbox
	Delivered  time.Time // outgoing: first delivery receipt; zero if none yet
}

// AddOutgoing puts a message in the outbox.
func (s *Store) AddOutgoing(ctx context.Context, to string, id [16]byte, body string, now time.Time) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO messages (outgoing, peer, peer_device, client_id, body, created)
		VALUES (1, ?, 0, ?, ?, ?)`, to, id[:], body, now.UnixMilli())
	if err != nil {
		return fmt.Errorf("saving outgoing message: %w", err)
	}
	return nil
}

// Outbox lists outgoing messages the server has not acknowledged, oldest
// first.
func (s *Store) Outbox(ctx context.Context) ([]Message, error) {
	return s.query(ctx, `SELECT outgoing, peer, peer_device, client_id, body, created, server_time, delivered
		FROM messages WHERE outgoing = 1 AND server_time = 0 ORDER BY id`)
}

// MarkSent records the server's acknowledgement of an outgoing message.
func (s *Store) MarkSent(ctx context.Context, id [16]byte, serverTime time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE messages SET server_time = ? WHERE outgoing = 1 AND client_id = ?`,
		serverTime.UnixMilli(), id[:])
	if err != nil {
		return fmt.Errorf("marking message sent: %w", err)
	}
	return nil
}

// Drop removes an outgoing message that the server refused for good.
func (s *Store) Drop(ctx context.Context, id [16]byte) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM messages WHERE outgoing = 1 AND client_id = ? AND server_time = 0`, id[:])
	if err != nil {
		return fmt.Errorf("dropping message: %w", err)
	}
	return nil
}

// MarkDelivered records a delivery receipt; it reports whether the message
// is known here.
func (s *Store) MarkDelivered(ctx context.Context, id [16]byte, at time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE messages SET delivered = CASE WHEN delivered = 0 THEN ? ELSE delivered END
		WHERE outgoing = 1 AND client_id = ?`, at.UnixMilli(), id[:])
	if err != nil {
		return false, fmt.Errorf("marking message delivered: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// AddIncoming stores a received message. It reports false, and stores
// nothing, if the same (sender device, id) was stored before: the server
// redelivers anything it did not see acknowledged.
func (s *Store) AddIncoming(ctx context.Context, m Message) (bool, error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO messages (outgoing, peer, peer_device, client_id, body, created, server_time)
		VALUES (0, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		m.Peer, m.PeerDevice, m.ID[:], m.Body, m.Created.UnixMilli(), m.ServerTime.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("saving incoming message: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// History returns up to limit most recent messages, oldest first; peer ""
// means all conversations.
func (s *Store) History(ctx context.Context, peer string, limit int) ([]Message, error) {
	return s.query(ctx, `SELECT * FROM (SELECT outgoing, peer, peer_device, client_id, body, created, server_time, delivered
		FROM messages WHERE ? = '' OR peer = ? ORDER BY id DESC LIMIT ?) ORDER BY created, server_time`, peer, peer, limit)
}

func (s *Store) query(ctx context.Context, q string, args ...any) ([]Message, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading messages: %w", err)
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		var m Message
		var id []byte
		var created, server, delivered int64
		if err := rows.Scan(&m.Outgoing, &m.Peer, &m.PeerDevice, &id, &m.Body, &created, &server, &delivered); err != nil {
			return nil, fmt.Errorf("reading messages: %w", err)
		}
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
