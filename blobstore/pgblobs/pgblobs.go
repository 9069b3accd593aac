// Package pgblobs implements blobstore.Blobs on PostgreSQL, so that the
// server processes of a cluster, sharing one database, share attachments:
// a blob uploaded through one is downloaded through any, and survives the
// loss of any.
//
// A blob is a row of blobs and its data rows of blob_chunks, one an
// Append, keyed by (blob, offset). Each Append is one transaction that
// locks the blob's row, checks the offset against the confirmed length
// and adds the chunk: confirmed once committed, and of two Appends at one
// offset, from any processes, one wins. An owner's quota and count of
// incomplete uploads are a row of blob_owners, locked and updated in the
// transaction that changes the owner's blobs, so the limits hold across
// processes. Nothing is kept in process memory.
//
// The schema is pgblobs' own goose migration set, recorded in its own
// version table (goose_pgblobs): it shares a database with store/pgstore
// but not its migrations, so either can change without the other.
//
// Options.MinFree does not apply: the database has the disk, and its
// disk_full error becomes blobstore.ErrNoSpace.
package pgblobs

import (
	"context"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/internal/closegate"
	"github.com/magpie-im/magpie/internal/pgkit"
)

//go:embed migrations/*.sql
var migrations embed.FS

// VersionTable is the goose version table of pgblobs' migrations.
const VersionTable = "goose_pgblobs"

// Store is a blobstore.Blobs in a PostgreSQL database. Its methods are
// safe for concurrent use, and several Stores (processes) may share one
// database.
type Store struct {
	opts blobstore.Options
	log  *slog.Logger
	pool *pgxpool.Pool

	// gate lets Close wait for the calls in flight and refuse later ones.
	gate closegate.Gate
}

var _ blobstore.Blobs = (*Store)(nil)

// Open connects to the database at url (postgres://…), brings pgblobs'
// tables up to date and returns the store. Zero fields of opts take
// blobstore's defaults.
func Open(ctx context.Context, url string, opts blobstore.Options) (*Store, error) {
	opts = opts.WithDefaults()
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("pgblobs: open: %w", err)
	}
	pool, err := pgkit.Pool(ctx, url, 0, sub, VersionTable, log)
	if err != nil {
		return nil, fmt.Errorf("pgblobs: open: %w", err)
	}
	return &Store{opts: opts, log: log, pool: pool}, nil
}

// Close waits for the calls in flight and closes the connections; later
// calls, and reads of readers from Open, return blobstore.ErrClosed.
func (s *Store) Close() error {
	if !s.gate.Close() {
		return blobstore.ErrClosed
	}
	s.pool.Close()
	return nil
}

// enter marks a call in flight; the caller must call s.gate.Leave.
func (s *Store) enter() error {
	if !s.gate.Enter() {
		return blobstore.ErrClosed
	}
	return nil
}

func ns(t time.Time) int64     { return t.UnixNano() }
func fromNS(n int64) time.Time { return time.Unix(0, n) }

// inTx runs fn in a transaction, retried after deadlocks and
// serialization failures, and wraps the error.
func (s *Store) inTx(what string, fn func(ctx context.Context, tx pgx.Tx) error) error {
	ctx := context.Background()
	return wrap(what, pgkit.InTx(ctx, s.pool, s.log, what, func(tx pgx.Tx) error { return fn(ctx, tx) }))
}

// wrap adds context to err. blobstore's errors pass unchanged, so that
// ErrNotFound stays bare; a full disk becomes blobstore.ErrNoSpace.
func wrap(what string, err error) error {
	if err == nil || isBlobstoreErr(err) {
		return err
	}
	if pgkit.SQLState(err) == pgkit.CodeDiskFull {
		return fmt.Errorf("pgblobs: %s: %w: %w", what, blobstore.ErrNoSpace, err)
	}
	return fmt.Errorf("pgblobs: %s: %w", what, err)
}

var sentinels = []error{blobstore.ErrNotFound, blobstore.ErrTooLarge, blobstore.ErrBadSize, blobstore.ErrQuota,
	blobstore.ErrNoSpace, blobstore.ErrTooManyUploads, blobstore.ErrBadOwner, blobstore.ErrOffset,
	blobstore.ErrChunkTooLarge, blobstore.ErrOverflow, blobstore.ErrComplete, blobstore.ErrIncomplete,
	blobstore.ErrDigest, blobstore.ErrDamaged, blobstore.ErrFetches, blobstore.ErrClosed}

func isBlobstoreErr(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// row is a blob's row.
type row struct {
	owner               string
	size, length        int64
	created, lastActive time.Time
	complete            bool
	digest              []byte
	expected, fetched   int
}

const rowColumns = `owner, size, length, created, last_active, complete, digest, expected, fetched`

// Row locks for get.
const (
	noLock     = ""
	lock       = " FOR UPDATE"
	lockOrSkip = " FOR UPDATE SKIP LOCKED" // no row if another holds it
)

// get reads blob id's row, with the lock named. A missing row is
// blobstore.ErrNotFound.
func get(ctx context.Context, tx pgx.Tx, id blobstore.ID, lock string) (row, error) {
	var r row
	var created, active int64
	err := tx.QueryRow(ctx, `SELECT `+rowColumns+` FROM blobs WHERE id = $1`+lock, id[:]).Scan(&r.owner, &r.size, &r.length, &created, &active, &r.complete, &r.digest, &r.expected, &r.fetched)
	if errors.Is(err, pgx.ErrNoRows) {
		return row{}, blobstore.ErrNotFound
	}
	r.created, r.lastActive = fromNS(created), fromNS(active)
	return r, err
}

// usable reads (with the lock named) blob id's row for a call of owner
// ("" for anyone), answering ErrNotFound for every reason the package
// comment of blobstore lists.
func (s *Store) usable(ctx context.Context, tx pgx.Tx, id blobstore.ID, owner string, lock string) (row, error) {
	r, err := get(ctx, tx, id, lock)
	if err != nil {
		return row{}, err
	}
	if owner != "" && r.owner != owner || !s.live(r) {
		return row{}, blobstore.ErrNotFound
	}
	return r, nil
}

func (s *Store) live(r row) bool {
	return blobstore.Live(s.opts, s.opts.Now(), r.created, r.lastActive, r.complete, r.expected, r.fetched)
}

// Create implements blobstore.Blobs.
func (s *Store) Create(owner string, size int64) (blobstore.ID, error) {
	if err := blobstore.CheckCreate(s.opts, owner, size); err != nil {
		return blobstore.ID{}, err
	}
	if err := s.enter(); err != nil {
		return blobstore.ID{}, err
	}
	defer s.gate.Leave()
	cost := blobstore.Cost(size)
	now := ns(s.opts.Now())
	id := blobstore.NewID()
	err := s.inTx("create", func(ctx context.Context, tx pgx.Tx) error {
		// Creates the owner's row or locks it: concurrent Creates of one
		// owner, on any process, queue here.
		var used int64
		var incomplete int
		err := tx.QueryRow(ctx, `INSERT INTO blob_owners (owner) VALUES ($1)
			ON CONFLICT (owner) DO UPDATE SET owner = EXCLUDED.owner
			RETURNING bytes, incomplete`, owner).Scan(&used, &incomplete)
		if err != nil {
			return err
		}
		if incomplete >= s.opts.MaxIncomplete {
			return fmt.Errorf("%w: the limit is %d", blobstore.ErrTooManyUploads, s.opts.MaxIncomplete)
		}
		if used+cost > s.opts.Quota {
			return fmt.Errorf("%w: %d bytes in use of %d, %d more needed", blobstore.ErrQuota, used, s.opts.Quota, cost)
		}
		if _, err := tx.Exec(ctx, `UPDATE blob_owners SET bytes = bytes + $2, incomplete = incomplete + 1 WHERE owner = $1`, owner, cost); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO blobs (id, owner, size, created, last_active) VALUES ($1, $2, $3, $4, $4)`, id[:], owner, size, now)
		return err
	})
	if err != nil {
		return blobstore.ID{}, err
	}
	return id, nil
}

// Append implements blobstore.Blobs. The chunk and the new length commit
// together, so the confirmed length is durable when Append returns.
func (s *Store) Append(id blobstore.ID, owner string, offset int64, data []byte) (int64, error) {
	if len(data) > blobstore.MaxChunk {
		return 0, fmt.Errorf("%w: %d bytes, the limit is %d", blobstore.ErrChunkTooLarge, len(data), blobstore.MaxChunk)
	}
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.gate.Leave()
	var length int64
	err := s.inTx("append", func(ctx context.Context, tx pgx.Tx) error {
		length = 0
		// The row lock orders Appends to one blob across processes: the
		// second sees the first's length, and ErrOffset.
		r, err := s.usable(ctx, tx, id, owner, lock)
		if err != nil {
			return err
		}
		length = r.length
		switch {
		case r.complete:
			return blobstore.ErrComplete
		case offset != r.length:
			return &blobstore.OffsetError{Confirmed: r.length}
		case int64(len(data)) > r.size-offset:
			return fmt.Errorf("%w: %d bytes at %d, the declared size is %d", blobstore.ErrOverflow, len(data), offset, r.size)
		case len(data) == 0:
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO blob_chunks (blob, off, data) VALUES ($1, $2, $3)`, id[:], offset, data); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE blobs SET length = $2, last_active = $3 WHERE id = $1`,
			id[:], offset+int64(len(data)), ns(s.opts.Now())); err != nil {
			return err
		}
		length = offset + int64(len(data))
		return nil
	})
	if err != nil && !errors.Is(err, blobstore.ErrComplete) && !errors.Is(err, blobstore.ErrOffset) && !errors.Is(err, blobstore.ErrOverflow) {
		// The transaction was rolled back: what the caller resumes from
		// is not known here.
		length = 0
	}
	return length, err
}

// Status implements blobstore.Blobs.
func (s *Store) Status(id blobstore.ID, owner string) (confirmed, size int64, complete bool, err error) {
	if err := s.enter(); err != nil {
		return 0, 0, false, err
	}
	defer s.gate.Leave()
	var r row
	err = s.inTx("status", func(ctx context.Context, tx pgx.Tx) error {
		var err error
		r, err = s.usable(ctx, tx, id, owner, noLock)
		return err
	})
	if err != nil {
		return 0, 0, false, err
	}
	return r.length, r.size, r.complete, nil
}

// Complete implements blobstore.Blobs. It reads the chunks in order
// through SHA-256 while holding the blob's row, so no Append or second
// Complete runs meanwhile.
func (s *Store) Complete(id blobstore.ID, owner string, digest [32]byte) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	mismatch := false
	err := s.inTx("complete", func(ctx context.Context, tx pgx.Tx) error {
		mismatch = false
		r, err := s.usable(ctx, tx, id, owner, lock)
		if err != nil {
			return err
		}
		if r.complete {
			if string(r.digest) != string(digest[:]) {
				return blobstore.ErrDigest
			}
			return nil
		}
		if r.length != r.size {
			return fmt.Errorf("%w: %d of %d bytes", blobstore.ErrIncomplete, r.length, r.size)
		}
		sum, err := hashChunks(ctx, tx, id, r.size)
		if err != nil {
			return err
		}
		if sum != digest {
			// Documented: the bytes cannot be fixed, so the blob goes, and
			// the deletion commits before ErrDigest is returned.
			mismatch = true
			return deleteBlob(ctx, tx, id, r)
		}
		if _, err := tx.Exec(ctx, `UPDATE blobs SET complete = true, digest = $2 WHERE id = $1`, id[:], digest[:]); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE blob_owners SET incomplete = incomplete - 1 WHERE owner = $1`, r.owner)
		return err
	})
	if err == nil && mismatch {
		return blobstore.ErrDigest
	}
	return err
}

// hashChunks returns the SHA-256 of blob id's chunks, read one row at a
// time, checking that they follow each other up to size.
func hashChunks(ctx context.Context, tx pgx.Tx, id blobstore.ID, size int64) ([32]byte, error) {
	var sum [32]byte
	rows, err := tx.Query(ctx, `SELECT off, data FROM blob_chunks WHERE blob = $1 ORDER BY off`, id[:])
	if err != nil {
		return sum, err
	}
	defer rows.Close()
	h := sha256.New()
	var pos int64
	for rows.Next() {
		var off int64
		var data []byte
		if err := rows.Scan(&off, &data); err != nil {
			return sum, err
		}
		if off != pos {
			return sum, fmt.Errorf("%w: a chunk at %d where %d was expected", blobstore.ErrDamaged, off, pos)
		}
		h.Write(data)
		pos += int64(len(data))
	}
	if err := rows.Err(); err != nil {
		return sum, err
	}
	if pos != size {
		return sum, fmt.Errorf("%w: chunks of %d bytes for a length of %d", blobstore.ErrDamaged, pos, size)
	}
	h.Sum(sum[:0])
	return sum, nil
}

// deleteBlob deletes blob id (its chunks and fetch records with it) and
// returns its quota. The blob's row is locked.
func deleteBlob(ctx context.Context, tx pgx.Tx, id blobstore.ID, r row) error {
	if _, err := tx.Exec(ctx, `DELETE FROM blobs WHERE id = $1`, id[:]); err != nil {
		return err
	}
	incomplete := 1
	if r.complete {
		incomplete = 0
	}
	_, err := tx.Exec(ctx, `UPDATE blob_owners SET bytes = bytes - $2, incomplete = incomplete - $3 WHERE owner = $1`,
		r.owner, blobstore.Cost(r.size), incomplete)
	return err
}

// ExpectFetches implements blobstore.Blobs.
func (s *Store) ExpectFetches(id blobstore.ID, owner string, n int) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	return s.inTx("expect fetches", func(ctx context.Context, tx pgx.Tx) error {
		r, err := s.usable(ctx, tx, id, owner, lock)
		if err != nil {
			return err
		}
		if n < 1 || n > s.opts.MaxFetches-r.expected {
			return fmt.Errorf("%w: %d more, %d already, the limit is %d", blobstore.ErrFetches, n, r.expected, s.opts.MaxFetches)
		}
		_, err = tx.Exec(ctx, `UPDATE blobs SET expected = expected + $2 WHERE id = $1`, id[:], n)
		return err
	})
}

// Fetched implements blobstore.Blobs. The blob's row lock makes the check
// for the device's record and its insertion one step, whichever process
// reports the device.
func (s *Store) Fetched(id blobstore.ID, device string) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	rec := blobstore.FetchRecord(id, device)
	return s.inTx("fetched", func(ctx context.Context, tx pgx.Tx) error {
		r, err := s.usable(ctx, tx, id, "", lock)
		if err != nil {
			return err
		}
		if !r.complete {
			return blobstore.ErrNotFound
		}
		var seen bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM blob_fetches WHERE blob = $1 AND device = $2)`, id[:], rec[:]).Scan(&seen); err != nil {
			return err
		}
		if seen {
			return nil
		}
		if r.fetched >= s.opts.MaxFetches {
			return fmt.Errorf("%w: more fetches than the limit of %d", blobstore.ErrFetches, s.opts.MaxFetches)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO blob_fetches (blob, device) VALUES ($1, $2)`, id[:], rec[:]); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE blobs SET fetched = fetched + 1 WHERE id = $1`, id[:])
		return err
	})
}

// Delete deletes one of the owner's blobs, complete or not, and returns
// its quota.
func (s *Store) Delete(id blobstore.ID, owner string) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	return s.inTx("delete", func(ctx context.Context, tx pgx.Tx) error {
		r, err := get(ctx, tx, id, lock)
		if err != nil {
			return err
		}
		if r.owner != owner {
			return blobstore.ErrNotFound
		}
		return deleteBlob(ctx, tx, id, r)
	})
}

// GC implements blobstore.Blobs. Each blob is deleted in a transaction of
// its own that locks its row and checks again that it is dead, so
// processes that collect at once delete each blob once, and count it
// once; a row locked by a call in progress is left to the next GC.
func (s *Store) GC() (removed int, err error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.gate.Leave()
	ctx := context.Background()
	now := s.opts.Now()
	rows, err := s.pool.Query(ctx, `SELECT id FROM blobs
		WHERE created <= $1 OR (NOT complete AND last_active <= $2) OR (complete AND expected > 0 AND fetched >= expected)`,
		ns(now.Add(-s.opts.TTL)), ns(now.Add(-s.opts.IncompleteTTL)))
	if err != nil {
		return 0, wrap("gc", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return 0, wrap("gc", err)
	}
	var errs []error
	for _, raw := range ids {
		id := blobstore.ID(raw)
		deleted := false
		err := s.inTx("gc", func(ctx context.Context, tx pgx.Tx) error {
			deleted = false
			// ErrNotFound: deleted since, or locked by a call in progress.
			r, err := get(ctx, tx, id, lockOrSkip)
			if err != nil || s.live(r) {
				return err
			}
			deleted = true
			return deleteBlob(ctx, tx, id, r)
		})
		switch {
		case errors.Is(err, blobstore.ErrNotFound):
		case err != nil:
			errs = append(errs, err)
			s.log.Warn("pgblobs: gc", "id", id.Short(), "err", err)
		case deleted:
			removed++
		}
	}
	return removed, errors.Join(errs...)
}

// Usage returns what the owner's blobs count against the quota; -1 if
// the database could not be read (logged).
func (s *Store) Usage(owner string) int64 {
	if err := s.enter(); err != nil {
		return -1
	}
	defer s.gate.Leave()
	var used int64
	err := s.pool.QueryRow(context.Background(), `SELECT bytes FROM blob_owners WHERE owner = $1`, owner).Scan(&used)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0
	case err != nil:
		s.log.Error("pgblobs: usage", "err", err)
		return -1
	}
	return used
}

// Open implements blobstore.Blobs. The reader reads the chunk rows a read
// needs, one at a time, when it needs them (never the whole blob); a
// reader of a blob deleted meanwhile fails with blobstore.ErrNotFound
// (the file store's keeps reading its open file).
func (s *Store) Open(id blobstore.ID) (io.ReadSeekCloser, int64, error) {
	if err := s.enter(); err != nil {
		return nil, 0, err
	}
	defer s.gate.Leave()
	var r row
	err := s.inTx("open", func(ctx context.Context, tx pgx.Tx) error {
		var err error
		r, err = s.usable(ctx, tx, id, "", noLock)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	if !r.complete {
		return nil, 0, blobstore.ErrNotFound
	}
	return &reader{s: s, id: id, size: r.size}, r.size, nil
}

// reader reads a complete blob's chunks. It keeps the last chunk read, so
// that a client's sequential small reads cost one query a chunk.
type reader struct {
	s      *Store
	id     blobstore.ID
	size   int64
	pos    int64
	off    int64  // where chunk starts in the blob
	chunk  []byte // the chunk last read, or nil
	closed bool
}

func (r *reader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, errors.New("pgblobs: read after Close")
	}
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.chunk == nil || r.pos < r.off || r.pos >= r.off+int64(len(r.chunk)) {
		if err := r.load(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.chunk[r.pos-r.off:])
	r.pos += int64(n)
	return n, nil
}

// load reads the chunk that holds r.pos: the last one starting at or
// before it.
func (r *reader) load() error {
	if err := r.s.enter(); err != nil {
		return err
	}
	defer r.s.gate.Leave()
	r.chunk = nil
	err := r.s.pool.QueryRow(context.Background(), `SELECT off, data FROM blob_chunks WHERE blob = $1 AND off <= $2 ORDER BY off DESC LIMIT 1`,
		r.id[:], r.pos).Scan(&r.off, &r.chunk)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && r.pos >= r.off+int64(len(r.chunk)) {
		// Deleted since Open (a complete blob has no gaps).
		r.chunk = nil
		return blobstore.ErrNotFound
	}
	if err != nil {
		r.chunk = nil
		return wrap("read", err)
	}
	return nil
}

func (r *reader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.pos + offset
	case io.SeekEnd:
		abs = r.size + offset
	default:
		return 0, errors.New("pgblobs: seek: invalid whence")
	}
	if abs < 0 {
		return 0, errors.New("pgblobs: seek: negative position")
	}
	r.pos = abs
	return abs, nil
}

func (r *reader) Close() error {
	r.closed, r.chunk = true, nil
	return nil
}
