-- Attachment blobs (blobstore/pgblobs). Times are Unix nanoseconds from
-- the nodes' clocks (Options.Now), as in store/pgstore.

-- +goose Up
CREATE TABLE blobs (
	id          bytea   NOT NULL PRIMARY KEY,
	owner       text    NOT NULL,
	size        bigint  NOT NULL CHECK (size >= 0),
	created     bigint  NOT NULL,
	last_active bigint  NOT NULL,
	-- The confirmed length: the sum of the blob's chunks, which Append
	-- adds in the transaction that locks this row.
	length      bigint  NOT NULL DEFAULT 0 CHECK (length BETWEEN 0 AND size),
	complete    boolean NOT NULL DEFAULT false,
	digest      bytea,
	expected    integer NOT NULL DEFAULT 0 CHECK (expected >= 0),
	fetched     integer NOT NULL DEFAULT 0 CHECK (fetched >= 0)
);

-- One row an Append, at most blobstore.MaxChunk bytes, keyed by where it
-- starts: a read finds the chunk holding an offset by the primary key.
CREATE TABLE blob_chunks (
	blob bytea  NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
	off  bigint NOT NULL,
	data bytea  NOT NULL,
	PRIMARY KEY (blob, off)
);
-- Ciphertext does not compress: store it out of line without trying.
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- The devices that fetched a blob in full, by blobstore.FetchRecord (not
-- their names).
CREATE TABLE blob_fetches (
	blob   bytea NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
	device bytea NOT NULL,
	PRIMARY KEY (blob, device)
);

-- An owner's row is its quota's lock and counter: Create locks it, and
-- every change to the owner's blobs updates it in the same transaction.
CREATE TABLE blob_owners (
	owner      text    NOT NULL PRIMARY KEY,
	bytes      bigint  NOT NULL DEFAULT 0 CHECK (bytes >= 0),
	incomplete integer NOT NULL DEFAULT 0 CHECK (incomplete >= 0)
);

-- +goose Down
DROP TABLE blob_owners;
DROP TABLE blob_fetches;
DROP TABLE blob_chunks;
DROP TABLE blobs;
