package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations[i] moves the schema from version i to version i+1. The version
// is kept in PRAGMA user_version. Append new steps; never edit old ones.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE users (
	name        TEXT    NOT NULL PRIMARY KEY,
	created     INTEGER NOT NULL,          -- unix ns
	next_device INTEGER NOT NULL DEFAULT 2 -- device ids are never reused
) STRICT, WITHOUT ROWID;

CREATE TABLE devices (
	user    TEXT    NOT NULL REFERENCES users(name) ON DELETE CASCADE,
	id      INTEGER NOT NULL,
	key     BLOB    NOT NULL UNIQUE,
	created INTEGER NOT NULL,
	-- Number of rows in queue for this device, maintained in the same
	-- transaction as every insert and delete so that the queue limit is an
	-- O(1) check. The CHECK turns a bookkeeping bug into an error instead
	-- of silent drift.
	queued  INTEGER NOT NULL DEFAULT 0 CHECK (queued >= 0),
	PRIMARY KEY (user, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE queue (
	-- AUTOINCREMENT: seqs are never reused, even after the newest item is
	-- acked, so a client's "after" cursor stays valid.
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	to_user     TEXT    NOT NULL,
	to_device   INTEGER NOT NULL,
	kind        INTEGER NOT NULL,
	from_user   TEXT    NOT NULL,
	from_device INTEGER NOT NULL,
	client_id   BLOB    NOT NULL,
	payload     BLOB    NOT NULL,
	sent        INTEGER NOT NULL,
	expires     INTEGER NOT NULL,
	FOREIGN KEY (to_user, to_device) REFERENCES devices(user, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX queue_by_device ON queue(to_user, to_device, seq);
CREATE INDEX queue_by_expiry ON queue(expires);

CREATE TABLE dedup (
	from_user   TEXT    NOT NULL,
	from_device INTEGER NOT NULL,
	client_id   BLOB    NOT NULL,
	sent        INTEGER NOT NULL,
	expires     INTEGER NOT NULL,
	PRIMARY KEY (from_user, from_device, client_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX dedup_by_expiry ON dedup(expires);
`,
	// 2: end-to-end keys: the account identity key, per-device registration
	// ids, the current signed EC and last-resort Kyber prekeys, and one-time
	// prekeys.
	`
ALTER TABLE users ADD COLUMN identity_key BLOB;
ALTER TABLE devices ADD COLUMN registration_id INTEGER NOT NULL DEFAULT 0;

CREATE TABLE signed_prekeys (
	user      TEXT    NOT NULL,
	device    INTEGER NOT NULL,
	kind      INTEGER NOT NULL, -- 1 signed EC prekey, 2 last-resort Kyber prekey
	id        INTEGER NOT NULL,
	key       BLOB    NOT NULL,
	signature BLOB    NOT NULL,
	PRIMARY KEY (user, device, kind),
	FOREIGN KEY (user, device) REFERENCES devices(user, id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE TABLE one_time_prekeys (
	user      TEXT    NOT NULL,
	device    INTEGER NOT NULL,
	kind      INTEGER NOT NULL, -- 1 EC, 2 Kyber (signed)
	id        INTEGER NOT NULL,
	key       BLOB    NOT NULL,
	signature BLOB    NOT NULL DEFAULT x'',
	PRIMARY KEY (user, device, kind, id),
	FOREIGN KEY (user, device) REFERENCES devices(user, id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
`,
	// 3: queue lengths are counted in memory (counts.go), so the devices
	// table loses its counter. Keeping it unmaintained would let an older
	// binary, which trusts it, enforce queue limits on wrong numbers; the
	// version bump makes that binary refuse this database instead.
	`
ALTER TABLE devices DROP COLUMN queued;
`,
	// 4: groups. A group message or change is stored once, in shared and
	// shared_payload, and each recipient device's queue holds a row that
	// carries only
	// what differs per device (seq, device, kind) and the shared row's
	// id; its sender, payload and expiry columns are left empty (group.go).
	// Those rows stay out of queue_by_expiry: the shared row has the
	// expiry, and its id and last_seq bound the seqs of its queue rows,
	// which is how Expire finds them. refs counts the queue rows: the
	// shared row goes with the last one, acked or expired, in the same
	// transaction.
	`
ALTER TABLE queue ADD COLUMN shared_id INTEGER; -- NULL but for group items
DROP INDEX queue_by_expiry;
CREATE INDEX queue_by_expiry ON queue(expires) WHERE shared_id IS NULL;

CREATE TABLE shared (
	id          INTEGER PRIMARY KEY, -- the seq of its first queue row
	last_seq    INTEGER NOT NULL,    -- the seq of its last
	refs        INTEGER NOT NULL CHECK (refs >= 0),
	expires     INTEGER NOT NULL,
	group_id    BLOB    NOT NULL,
	from_user   TEXT    NOT NULL,
	from_device INTEGER NOT NULL,
	client_id   BLOB    NOT NULL, -- x'' for a change
	sent        INTEGER NOT NULL
) STRICT;
CREATE INDEX shared_by_expiry ON shared(expires);

-- The payload has a table of its own, so that dropping a reference (an
-- UPDATE, which rewrites the whole row) does not rewrite the payload too.
CREATE TABLE shared_payload (
	id      INTEGER PRIMARY KEY, -- its shared row's
	payload BLOB    NOT NULL
) STRICT;

-- A rowid table: the state (up to 256 KiB) is rewritten by every change,
-- and the key's index is not.
CREATE TABLE groups (
	id    BLOB    NOT NULL PRIMARY KEY,
	seq   INTEGER NOT NULL, -- the head: the seq of the last change
	state BLOB    NOT NULL
) STRICT;

CREATE TABLE group_log (
	group_id BLOB    NOT NULL,
	seq      INTEGER NOT NULL,
	change   BLOB    NOT NULL,
	PRIMARY KEY (group_id, seq)
) STRICT, WITHOUT ROWID;
`,
}

// SchemaVersion is the schema version this package creates and expects.
const SchemaVersion = 4

// migrate brings the database up to SchemaVersion in one transaction.
func migrate(ctx context.Context, db *sql.DB) (from int, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit

	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&from); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if from > len(migrations) {
		return from, fmt.Errorf("database schema version %d is newer than this binary supports (%d)", from, len(migrations))
	}
	if from == len(migrations) {
		return from, nil
	}
	for v := from; v < len(migrations); v++ {
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			return from, fmt.Errorf("migrate to version %d: %w", v+1, err)
		}
	}
	// PRAGMA does not take bound parameters; the value is our own constant.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
		return from, fmt.Errorf("set schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return from, fmt.Errorf("commit migration: %w", err)
	}
	return from, nil
}
