-- The whole schema, as of the first version of store/pgstore. Times are
-- Unix nanoseconds (bigint): timestamptz keeps microseconds only, and the
-- store returns what it was given.

-- +goose Up
CREATE TABLE users (
	name         text   NOT NULL PRIMARY KEY,
	created      bigint NOT NULL,
	next_device  bigint NOT NULL DEFAULT 2, -- device ids are never reused
	identity_key bytea
);

-- A device row is also its queue's lock and counter: every transaction that
-- adds items to a queue or removes them locks the row first (commit.go), so
-- queued is exact and a queue's seqs become visible in increasing order.
CREATE TABLE devices (
	user_name       text   NOT NULL REFERENCES users (name) ON DELETE CASCADE,
	id              bigint NOT NULL,
	key             bytea  NOT NULL UNIQUE,
	created         bigint NOT NULL,
	registration_id bigint NOT NULL DEFAULT 0,
	queued          bigint NOT NULL DEFAULT 0 CHECK (queued >= 0),
	PRIMARY KEY (user_name, id)
);

-- Seqs are taken from one sequence while the recipient device's row is
-- locked (commit.go). CACHE 1, the default, is required: with a per-session
-- cache two connections would hand out interleaved ranges, and a device
-- could get a lower seq after a higher one.
CREATE SEQUENCE queue_seq CACHE 1;

-- One row per queued item. A group item (shared_id set) carries only what
-- differs per device; its sender, client id, payload and expiry are in its
-- shared row. No foreign key to devices: every writer has the device row
-- locked, which is the existence check, and a key check per item row would
-- be a second lookup of the same row.
CREATE TABLE queue (
	to_user     text     NOT NULL,
	to_device   bigint   NOT NULL,
	seq         bigint   NOT NULL,
	kind        smallint NOT NULL,
	from_user   text     NOT NULL DEFAULT '',
	from_device bigint   NOT NULL DEFAULT 0,
	client_id   bytea    NOT NULL DEFAULT '',
	payload     bytea    NOT NULL DEFAULT '',
	sent        bigint   NOT NULL DEFAULT 0,
	expires     bigint   NOT NULL DEFAULT 0,
	shared_id   bigint,
	PRIMARY KEY (to_user, to_device, seq)
);
CREATE INDEX queue_by_expiry ON queue (expires) WHERE shared_id IS NULL;
CREATE INDEX queue_by_shared ON queue (shared_id) WHERE shared_id IS NOT NULL;

-- How many messages and group messages of each sender account a device's
-- queue holds (Enqueue.SenderShare), kept in the same transactions as the
-- queue; a row that drops to zero is deleted in the same transaction.
CREATE TABLE sender_counts (
	to_user   text   NOT NULL,
	to_device bigint NOT NULL,
	sender    text   NOT NULL,
	n         bigint NOT NULL CHECK (n >= 0),
	PRIMARY KEY (to_user, to_device, sender)
);

CREATE TABLE dedup (
	from_user   text   NOT NULL,
	from_device bigint NOT NULL,
	client_id   bytea  NOT NULL,
	sent        bigint NOT NULL,
	expires     bigint NOT NULL,
	PRIMARY KEY (from_user, from_device, client_id)
);
CREATE INDEX dedup_by_expiry ON dedup (expires);

-- A group message or change, stored once; refs counts its queue rows and
-- the row goes with the last. id is the seq of its first queue row.
CREATE TABLE shared (
	id          bigint NOT NULL PRIMARY KEY,
	refs        bigint NOT NULL CHECK (refs >= 0),
	expires     bigint NOT NULL,
	group_id    bytea  NOT NULL,
	from_user   text   NOT NULL,
	from_device bigint NOT NULL,
	client_id   bytea  NOT NULL, -- empty for a change
	sent        bigint NOT NULL,
	payload     bytea  NOT NULL
);
CREATE INDEX shared_by_expiry ON shared (expires);

CREATE TABLE groups (
	id    bytea  NOT NULL PRIMARY KEY,
	seq   bigint NOT NULL, -- the head: the seq of the last change
	state bytea  NOT NULL
);

CREATE TABLE group_log (
	group_id bytea  NOT NULL,
	seq      bigint NOT NULL,
	change   bytea  NOT NULL,
	PRIMARY KEY (group_id, seq)
);

CREATE TABLE signed_prekeys (
	user_name text     NOT NULL,
	device    bigint   NOT NULL,
	kind      smallint NOT NULL, -- 1 signed EC prekey, 2 last-resort Kyber prekey
	id        bigint   NOT NULL,
	key       bytea    NOT NULL,
	signature bytea    NOT NULL,
	PRIMARY KEY (user_name, device, kind),
	FOREIGN KEY (user_name, device) REFERENCES devices (user_name, id) ON DELETE CASCADE
);

CREATE TABLE one_time_prekeys (
	user_name text     NOT NULL,
	device    bigint   NOT NULL,
	kind      smallint NOT NULL, -- 1 EC, 2 Kyber (signed)
	id        bigint   NOT NULL,
	key       bytea    NOT NULL,
	signature bytea    NOT NULL DEFAULT '',
	PRIMARY KEY (user_name, device, kind, id),
	FOREIGN KEY (user_name, device) REFERENCES devices (user_name, id) ON DELETE CASCADE
);

-- +goose Down
DROP TABLE one_time_prekeys, signed_prekeys, group_log, groups, shared, dedup,
	sender_counts, queue, devices, users;
DROP SEQUENCE queue_seq;
