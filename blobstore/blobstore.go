// Package blobstore keeps attachment blobs on the Magpie server: end-to-end
// encrypted ciphertext that clients upload in chunks, resumably, and that
// recipients download by id. The store never interprets the bytes.
//
// # Life of a blob
//
// The owner (the uploading user) calls Create with the declared size, which
// reserves quota; Append adds chunks at the confirmed length, each made
// durable before Append returns; Complete checks the SHA-256 of the whole
// file and publishes the blob. Anyone holding the id may then Open it. When
// the server queues the message carrying the blob it calls ExpectFetches
// with the number of device copies; each device that downloads the blob in
// full is reported with Fetched, and once all have, the blob is gone. GC,
// called periodically by the server, deletes fully fetched blobs, blobs
// older than Options.TTL, and incomplete blobs idle for
// Options.IncompleteTTL, and returns their quota.
//
// # On disk
//
//	dir/LOCK               flock: one process per directory
//	dir/meta/<id>          JSON metadata (owner, size, created, fetches, digest)
//	dir/incomplete/<id>    data of an upload in progress; its length is the confirmed length
//	dir/complete/<id>      data of a verified blob
//
// <id> is the unpadded base64url id. Metadata is written atomically (temp
// file, fsync, rename, directory fsync). Which data directory holds the file
// is what says whether a blob is complete, so completion is one rename.
// Open rebuilds everything, quota included, from these files and removes
// what a crash left half made.
//
// # Errors
//
// Open, Status, Append and the others answer ErrNotFound alike for a blob
// that never existed, is still incomplete (to anyone but its owner), has
// expired, was fully fetched, or belongs to someone else: an id is either
// usable or it is not, with nothing in between to probe.
package blobstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/magpie-im/magpie/internal/atomicfile"
	"github.com/magpie-im/magpie/internal/flock"
)

// Sentinel errors that callers branch on. Errors that carry numbers wrap
// these, so test them with errors.Is.
var (
	// ErrNotFound: no such blob for this caller (see the package comment).
	ErrNotFound = errors.New("blobstore: not found")
	// ErrTooLarge: the declared size exceeds Options.MaxSize.
	ErrTooLarge = errors.New("blobstore: blob too large")
	// ErrBadSize: the declared size is negative.
	ErrBadSize = errors.New("blobstore: invalid size")
	// ErrQuota: the owner's blobs would exceed Options.Quota.
	ErrQuota = errors.New("blobstore: quota exceeded")
	// ErrNoSpace: the disk has less free space than Options.MinFree, kept
	// for the message store; nothing was written.
	ErrNoSpace = errors.New("blobstore: the disk is (nearly) full")
	// ErrTooManyUploads: the owner already has Options.MaxIncomplete
	// incomplete blobs.
	ErrTooManyUploads = errors.New("blobstore: too many incomplete uploads")
	// ErrBadOwner: the owner name is empty or longer than MaxOwnerLen.
	ErrBadOwner = errors.New("blobstore: invalid owner")
	// ErrOffset: Append at an offset other than the confirmed length; the
	// error is an *OffsetError that carries that length.
	ErrOffset = errors.New("blobstore: offset is not the confirmed length")
	// ErrChunkTooLarge: one Append of more than MaxChunk bytes.
	ErrChunkTooLarge = errors.New("blobstore: chunk too large")
	// ErrOverflow: the data would go past the declared size.
	ErrOverflow = errors.New("blobstore: data beyond the declared size")
	// ErrComplete: Append to a blob that is already complete.
	ErrComplete = errors.New("blobstore: blob already complete")
	// ErrIncomplete: Complete before all declared bytes were appended.
	ErrIncomplete = errors.New("blobstore: blob not fully uploaded")
	// ErrDigest: the SHA-256 of the uploaded bytes is not the one given to
	// Complete. The incomplete blob has been deleted and its quota returned:
	// the bytes are append-only, so no retry could fix them; upload again.
	ErrDigest = errors.New("blobstore: digest mismatch")
	// ErrDamaged: an I/O error left the blob in an unknown state; delete it
	// and upload again.
	ErrDamaged = errors.New("blobstore: blob damaged by an I/O error")
	// ErrFetches: ExpectFetches with a count below 1, or a total above
	// Options.MaxFetches.
	ErrFetches = errors.New("blobstore: invalid number of expected fetches")
	// ErrLocked: another process has the directory open.
	ErrLocked = errors.New("blobstore: directory in use by another process")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("blobstore: closed")
)

// OffsetError is the ErrOffset error: Confirmed is the length the store
// holds, where the client resumes.
type OffsetError struct{ Confirmed int64 }

func (e *OffsetError) Error() string {
	return fmt.Sprintf("blobstore: offset is not the confirmed length %d", e.Confirmed)
}

// Is makes errors.Is(err, ErrOffset) true.
func (e *OffsetError) Is(target error) bool { return target == ErrOffset }

// Limits that are not options.
const (
	// MaxChunk is the most data one Append accepts.
	MaxChunk = 1 << 20
	// MaxOwnerLen is the longest owner name accepted.
	MaxOwnerLen = 255
	// blockSize is the unit of quota accounting (see Cost).
	blockSize = 4096
)

// Defaults for zero Options fields.
const (
	DefaultMaxSize       = 2 << 30
	DefaultQuota         = 10 << 30
	DefaultTTL           = 30 * 24 * time.Hour
	DefaultIncompleteTTL = 7 * 24 * time.Hour
	DefaultMaxIncomplete = 32
	DefaultMaxFetches    = 8192
	DefaultMinFree       = 64 << 20
)

// Options configure a Store. Zero (or negative) fields take the defaults.
type Options struct {
	MaxSize       int64         // largest declared size of one blob
	Quota         int64         // per owner, across incomplete and complete blobs, in Cost units
	TTL           time.Duration // a blob is deleted this long after Create, fetched or not
	IncompleteTTL time.Duration // an incomplete blob is deleted after this long without an Append
	MaxIncomplete int           // incomplete blobs per owner
	MaxFetches    int           // total ExpectFetches per blob (bounds its fetch records)
	// MinFree is the free disk space below which uploads are refused
	// (ErrNoSpace), left to the message store that shares the disk
	// (64 MiB; negative: none).
	MinFree int64
	Now     func() time.Time
	Logger  *slog.Logger // recovery and GC problems only; never ids beyond ID.Short, never content
}

// Cost is what a blob of the given size counts against its owner's quota:
// the size rounded up to 4 KiB blocks plus one block for its metadata, about
// what it takes on disk, so that a flood of tiny blobs is limited too.
func Cost(size int64) int64 {
	return (size+blockSize-1)/blockSize*blockSize + blockSize
}

// Store is a blob store on one directory. Its methods are safe for
// concurrent use; appends to different blobs proceed in parallel.
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger
	lock *os.File

	// mu guards the maps and closed. Lock order: blob.mu, then mu; never
	// hold mu across I/O on blob data.
	mu     sync.Mutex
	closed bool
	blobs  map[ID]*blob
	owners map[string]*ownerUse

	// free is the disk's free space as last read, at freeAt (space.go).
	spaceMu sync.Mutex
	free    int64
	freeAt  time.Time
}

type ownerUse struct {
	bytes      int64 // sum of Cost over the owner's blobs
	incomplete int
}

// blob is one blob in memory. id and meta.Owner, meta.Size, meta.Created
// never change; the rest is guarded by mu.
type blob struct {
	id         ID
	mu         sync.Mutex
	meta       meta
	complete   bool
	length     int64 // confirmed bytes: the data file's length
	lastActive time.Time
	gone       bool // deleted from the store
	damaged    bool
}

// meta is the sidecar file's content.
type meta struct {
	Version  int       `json:"v"`
	Owner    string    `json:"owner"`
	Size     int64     `json:"size"`
	Created  time.Time `json:"created"`
	Expected int       `json:"expected,omitempty"` // device copies queued (ExpectFetches)
	// Fetched holds one 8-byte record per device that fetched the blob in
	// full: SHA-256(id || device name), truncated, so that device names are
	// not kept in clear. Base64, concatenated.
	Fetched string `json:"fetched,omitempty"`
	Digest  string `json:"digest,omitempty"` // hex SHA-256, set by Complete
}

func (m *meta) fetchedCount() int {
	return base64.StdEncoding.DecodedLen(len(m.Fetched)) / FetchRecordSize
}

// Open opens (creating if need be, mode 0700) the store in dir, removes
// what a crash left half made, and recomputes every owner's usage.
func Open(dir string, opts Options) (*Store, error) {
	opts = opts.WithDefaults()
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{dir, filepath.Join(dir, "meta"), filepath.Join(dir, "incomplete"), filepath.Join(dir, "complete")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("blobstore: %w", err)
		}
	}
	lock, err := flock.Lock(filepath.Join(dir, "LOCK"))
	if err != nil {
		if errors.Is(err, flock.ErrLocked) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("blobstore: lock: %w", err)
	}
	s := &Store{
		dir:    dir,
		opts:   opts,
		log:    log,
		lock:   lock,
		blobs:  make(map[ID]*blob),
		owners: make(map[string]*ownerUse),
	}
	if err := s.recover(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("blobstore: recovery: %w", err)
	}
	return s, nil
}

func (s *Store) metaPath(id ID) string { return filepath.Join(s.dir, "meta", id.String()) }

func (s *Store) dataPath(id ID, complete bool) string {
	if complete {
		return filepath.Join(s.dir, "complete", id.String())
	}
	return filepath.Join(s.dir, "incomplete", id.String())
}

// recover loads every blob from meta/, deleting metadata whose data file is
// missing (a crash inside Create or a delete), then deletes data files that
// have no metadata and leftover temporary files.
func (s *Store) recover() error {
	metaDir := filepath.Join(s.dir, "meta")
	entries, err := os.ReadDir(metaDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(metaDir, name)
		if strings.HasPrefix(name, ".tmp-") {
			os.Remove(path)
			continue
		}
		id, err := ParseID(name)
		if err != nil || !e.Type().IsRegular() {
			s.log.Warn("blobstore: ignoring unexpected file in meta/", "name", safeName(name))
			continue
		}
		if err := s.load(id); err != nil {
			return err
		}
	}
	for _, complete := range []bool{false, true} {
		d := filepath.Dir(s.dataPath(ID{}, complete))
		entries, err := os.ReadDir(d)
		if err != nil {
			return err
		}
		for _, e := range entries {
			id, err := ParseID(e.Name())
			if err != nil {
				s.log.Warn("blobstore: ignoring unexpected data file", "dir", filepath.Base(d), "name", safeName(e.Name()))
				continue
			}
			if b, ok := s.blobs[id]; ok && b.complete == complete {
				continue
			}
			if err := os.Remove(filepath.Join(d, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			s.log.Info("blobstore: removed data left without metadata by a crash", "id", id.Short())
		}
	}
	for _, b := range s.blobs {
		s.charge(b)
	}
	return nil
}

// load reads one blob's metadata and data file into s.blobs, or removes a
// blob that cannot be used.
func (s *Store) load(id ID) error {
	raw, err := os.ReadFile(s.metaPath(id))
	if err != nil {
		return err
	}
	var m meta
	if err := json.Unmarshal(raw, &m); err != nil || m.Version != 1 || m.Owner == "" || m.Size < 0 {
		// Metadata is written atomically, so this is outside damage. Without
		// owner and size the blob cannot be accounted or served.
		s.log.Error("blobstore: deleting blob with unreadable metadata", "id", id.Short())
		return s.removeFiles(id)
	}
	b := &blob{id: id, meta: m, lastActive: m.Created}
	fi, err := os.Stat(s.dataPath(id, true))
	switch {
	case err == nil:
		b.complete = true
		if fi.Size() != m.Size || m.Digest == "" {
			s.log.Error("blobstore: deleting complete blob of the wrong size", "id", id.Short())
			return s.removeFiles(id)
		}
	case errors.Is(err, fs.ErrNotExist):
		fi, err = os.Stat(s.dataPath(id, false))
		if errors.Is(err, fs.ErrNotExist) {
			// A crash between writing the metadata and creating the data
			// file, or in the middle of a delete.
			return os.Remove(s.metaPath(id))
		}
		if err != nil {
			return err
		}
		if fi.Size() > m.Size {
			// Appends never go past the declared size; trim outside damage.
			if err := os.Truncate(s.dataPath(id, false), m.Size); err != nil {
				return err
			}
			fi, err = os.Stat(s.dataPath(id, false))
			if err != nil {
				return err
			}
		}
		if mt := fi.ModTime(); mt.After(b.lastActive) {
			b.lastActive = mt
		}
	default:
		return err
	}
	b.length = fi.Size()
	s.blobs[id] = b
	return nil
}

// safeName shortens a file name for a log line: names in the store's
// directories may be ids.
func safeName(name string) string {
	if len(name) > 6 {
		return name[:6] + "…"
	}
	return name
}

// charge adds b to its owner's usage. s.mu held (or not yet shared).
func (s *Store) charge(b *blob) {
	u := s.owners[b.meta.Owner]
	if u == nil {
		u = &ownerUse{}
		s.owners[b.meta.Owner] = u
	}
	u.bytes += Cost(b.meta.Size)
	if !b.complete {
		u.incomplete++
	}
}

// Create starts a blob of exactly size bytes owned by owner, reserving
// Cost(size) of the owner's quota until the blob is deleted.
func (s *Store) Create(owner string, size int64) (ID, error) {
	if err := CheckCreate(s.opts, owner, size); err != nil {
		return ID{}, err
	}
	if s.lowOnSpace() {
		return ID{}, ErrNoSpace
	}
	cost := Cost(size)
	now := s.opts.Now()
	b := &blob{
		meta:       meta{Version: 1, Owner: owner, Size: size, Created: now.UTC()},
		lastActive: now,
	}

	// Reserve under mu, write the files outside it.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ID{}, ErrClosed
	}
	u := s.owners[owner]
	if u == nil {
		u = &ownerUse{}
		s.owners[owner] = u
	}
	if u.incomplete >= s.opts.MaxIncomplete {
		s.mu.Unlock()
		return ID{}, fmt.Errorf("%w: the limit is %d", ErrTooManyUploads, s.opts.MaxIncomplete)
	}
	if u.bytes+cost > s.opts.Quota {
		used := u.bytes
		s.dropOwnerIfIdle(owner)
		s.mu.Unlock()
		return ID{}, fmt.Errorf("%w: %d bytes in use of %d, %d more needed", ErrQuota, used, s.opts.Quota, cost)
	}
	u.bytes += cost
	u.incomplete++
	for {
		b.id = newID()
		if _, taken := s.blobs[b.id]; !taken {
			break
		}
	}
	// Hold b.mu until the files exist, so nothing can use the blob early.
	b.mu.Lock()
	defer b.mu.Unlock()
	s.blobs[b.id] = b
	s.mu.Unlock()

	if err := s.createFiles(b); err != nil {
		s.removeFiles(b.id)
		s.forget(b)
		return ID{}, fmt.Errorf("blobstore: create: %w", err)
	}
	return b.id, nil
}

// createFiles writes the metadata, then the empty data file: a crash in
// between leaves metadata without data, which Open removes.
func (s *Store) createFiles(b *blob) error {
	if err := s.writeMeta(b.id, &b.meta); err != nil {
		return err
	}
	path := s.dataPath(b.id, false)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func (s *Store) writeMeta(id ID, m *meta) error {
	raw, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return atomicfile.Write(s.metaPath(id), raw, 0o600)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// lookup finds a blob, checking the owner when owner is not "".
func (s *Store) lookup(id ID, owner string) (*blob, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	b := s.blobs[id]
	if b == nil || (owner != "" && b.meta.Owner != owner) {
		return nil, ErrNotFound
	}
	return b, nil
}

// live reports whether b can be used at now. b.mu held.
func (s *Store) live(b *blob, now time.Time) bool {
	return !b.gone && Live(s.opts, now, b.meta.Created, b.lastActive, b.complete, b.meta.Expected, b.meta.fetchedCount())
}

// Append writes data at offset, which must be the confirmed length, and
// makes it durable before returning the new confirmed length. Only the
// owner may append. On ErrOffset (an *OffsetError) and ErrComplete the
// returned length is the confirmed one, where a client resumes.
func (s *Store) Append(id ID, owner string, offset int64, data []byte) (int64, error) {
	if len(data) > MaxChunk {
		return 0, fmt.Errorf("%w: %d bytes, the limit is %d", ErrChunkTooLarge, len(data), MaxChunk)
	}
	b, err := s.lookup(id, owner)
	if err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := s.opts.Now()
	if !s.live(b, now) {
		return 0, ErrNotFound
	}
	if b.complete {
		return b.length, ErrComplete
	}
	if b.damaged {
		return b.length, ErrDamaged
	}
	if offset != b.length {
		return b.length, &OffsetError{Confirmed: b.length}
	}
	if int64(len(data)) > b.meta.Size-offset {
		return b.length, fmt.Errorf("%w: %d bytes at %d, the declared size is %d", ErrOverflow, len(data), offset, b.meta.Size)
	}
	if len(data) == 0 {
		return b.length, nil
	}
	if s.lowOnSpace() {
		return b.length, ErrNoSpace
	}
	if err := s.writeAt(b, offset, data); err != nil {
		return b.length, err
	}
	b.length += int64(len(data))
	b.lastActive = now
	return b.length, nil
}

// writeAt writes and syncs one chunk. On failure it cuts the file back to
// the confirmed length, or marks the blob damaged if it cannot. b.mu held.
func (s *Store) writeAt(b *blob, offset int64, data []byte) error {
	f, err := os.OpenFile(s.dataPath(b.id, false), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("blobstore: append: %w", err)
	}
	_, err = f.WriteAt(data, offset)
	if err == nil {
		err = datasync(f)
	}
	if err != nil {
		if f.Truncate(offset) != nil || datasync(f) != nil {
			b.damaged = true
		}
		f.Close()
		return fmt.Errorf("blobstore: append: %w", err)
	}
	if err := f.Close(); err != nil {
		// The data is already synced; a close error cannot undo that.
		s.log.Warn("blobstore: close after append", "id", b.id.Short(), "err", err)
	}
	return nil
}

// Status tells the owner how far an upload got: confirmed bytes, declared
// size, and whether it is complete.
func (s *Store) Status(id ID, owner string) (confirmed, size int64, complete bool, err error) {
	b, err := s.lookup(id, owner)
	if err != nil {
		return 0, 0, false, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !s.live(b, s.opts.Now()) {
		return 0, 0, false, ErrNotFound
	}
	return b.length, b.meta.Size, b.complete, nil
}

// Complete checks that all declared bytes are present and that their
// SHA-256 is digest, then publishes the blob (one rename from incomplete/
// to complete/). On a mismatch the blob is deleted and ErrDigest returned
// (see ErrDigest). Completing a complete blob again with the same digest
// succeeds, so a client that lost the reply can retry.
func (s *Store) Complete(id ID, owner string, digest [32]byte) error {
	b, err := s.lookup(id, owner)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !s.live(b, s.opts.Now()) {
		return ErrNotFound
	}
	want := fmt.Sprintf("%x", digest)
	if b.complete {
		if b.meta.Digest != want {
			return ErrDigest
		}
		return nil
	}
	if b.damaged {
		return ErrDamaged
	}
	if b.length != b.meta.Size {
		return fmt.Errorf("%w: %d of %d bytes", ErrIncomplete, b.length, b.meta.Size)
	}
	got, err := s.hash(b.dataPath(s))
	if err != nil {
		return fmt.Errorf("blobstore: complete: %w", err)
	}
	if got != digest {
		if err := s.remove(b); err != nil {
			s.log.Warn("blobstore: removing blob after digest mismatch", "id", b.id.Short(), "err", err)
		}
		return ErrDigest
	}
	m := b.meta
	m.Digest = want
	if err := s.writeMeta(b.id, &m); err != nil {
		return fmt.Errorf("blobstore: complete: %w", err)
	}
	b.meta = m
	// The data is already durable (every Append synced it).
	if err := os.Rename(s.dataPath(b.id, false), s.dataPath(b.id, true)); err != nil {
		return fmt.Errorf("blobstore: complete: %w", err)
	}
	b.complete = true
	s.mu.Lock()
	s.owners[b.meta.Owner].incomplete--
	s.mu.Unlock()
	if err := syncDir(filepath.Dir(s.dataPath(b.id, true))); err != nil {
		return fmt.Errorf("blobstore: complete: %w", err)
	}
	if err := syncDir(filepath.Dir(s.dataPath(b.id, false))); err != nil {
		return fmt.Errorf("blobstore: complete: %w", err)
	}
	return nil
}

func (b *blob) dataPath(s *Store) string { return s.dataPath(b.id, b.complete) }

func (s *Store) hash(path string) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	h.Sum(sum[:0])
	return sum, nil
}

// Open opens a complete blob for reading, for anyone who has its id, and
// returns its size. The reader stays valid if the blob is deleted
// meanwhile. The caller closes it.
func (s *Store) Open(id ID) (io.ReadSeekCloser, int64, error) {
	b, err := s.lookup(id, "")
	if err != nil {
		return nil, 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.complete || !s.live(b, s.opts.Now()) {
		return nil, 0, ErrNotFound
	}
	f, err := os.Open(s.dataPath(id, true))
	if err != nil {
		return nil, 0, fmt.Errorf("blobstore: open: %w", err)
	}
	return f, b.meta.Size, nil
}

// ExpectFetches records that the server queued n more device copies of a
// message carrying the blob (call it before acknowledging that send, once
// per send). The blob is deleted once that many distinct devices were
// reported with Fetched. Until the first call the blob lives for the TTL.
// It returns when the count is durable.
func (s *Store) ExpectFetches(id ID, owner string, n int) error {
	b, err := s.lookup(id, owner)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !s.live(b, s.opts.Now()) {
		return ErrNotFound
	}
	if n < 1 || n > s.opts.MaxFetches-b.meta.Expected {
		return fmt.Errorf("%w: %d more, %d already, the limit is %d", ErrFetches, n, b.meta.Expected, s.opts.MaxFetches)
	}
	m := b.meta
	m.Expected += n
	if err := s.writeMeta(id, &m); err != nil {
		return fmt.Errorf("blobstore: expect fetches: %w", err)
	}
	b.meta = m
	return nil
}

// Fetched records that device (any stable name of one recipient device,
// such as "bob.2") downloaded the complete blob in full. Each device counts
// once however often it is reported. When every expected copy was fetched,
// the blob is no longer served, and the next GC deletes it.
func (s *Store) Fetched(id ID, device string) error {
	b, err := s.lookup(id, "")
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.complete || !s.live(b, s.opts.Now()) {
		return ErrNotFound
	}
	rec := FetchRecord(id, device)
	records, err := base64.StdEncoding.DecodeString(b.meta.Fetched)
	if err != nil {
		return fmt.Errorf("blobstore: fetch records: %w", err)
	}
	for i := 0; i+FetchRecordSize <= len(records); i += FetchRecordSize {
		if bytes.Equal(records[i:i+FetchRecordSize], rec[:]) {
			return nil
		}
	}
	if len(records)/FetchRecordSize >= s.opts.MaxFetches {
		return fmt.Errorf("%w: more fetches than the limit of %d", ErrFetches, s.opts.MaxFetches)
	}
	m := b.meta
	m.Fetched = base64.StdEncoding.EncodeToString(append(records, rec[:]...))
	if err := s.writeMeta(id, &m); err != nil {
		return fmt.Errorf("blobstore: fetched: %w", err)
	}
	b.meta = m
	return nil
}

// Delete deletes one of the owner's blobs, complete or not (an upload the
// client gave up, or an attachment it retracts), and returns its quota.
func (s *Store) Delete(id ID, owner string) error {
	b, err := s.lookup(id, owner)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gone {
		return ErrNotFound
	}
	return s.remove(b)
}

// GC deletes the blobs that are past their TTL, incomplete blobs idle for
// IncompleteTTL, and fully fetched blobs, returning their quota. The server
// calls it periodically (every few minutes is plenty). Errors are joined;
// a blob whose files could not be removed is still forgotten, and Open
// removes its leftovers.
func (s *Store) GC() (removed int, err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, ErrClosed
	}
	all := make([]*blob, 0, len(s.blobs))
	for _, b := range s.blobs {
		all = append(all, b)
	}
	s.mu.Unlock()

	now := s.opts.Now()
	var errs []error
	for _, b := range all {
		b.mu.Lock()
		if !b.gone && !s.live(b, now) {
			if err := s.remove(b); err != nil {
				errs = append(errs, err)
				s.log.Warn("blobstore: gc", "id", b.id.Short(), "err", err)
			}
			removed++
		}
		b.mu.Unlock()
	}
	if removed > 0 {
		for _, sub := range []string{"meta", "incomplete", "complete"} {
			if err := syncDir(filepath.Join(s.dir, sub)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return removed, errors.Join(errs...)
}

// remove deletes b's files and forgets it. b.mu held. The metadata goes
// first: once it is gone the blob is gone, whatever a crash leaves behind.
func (s *Store) remove(b *blob) error {
	err := s.removeFiles(b.id)
	s.forget(b)
	return err
}

func (s *Store) removeFiles(id ID) error {
	var errs []error
	for _, p := range []string{s.metaPath(id), s.dataPath(id, false), s.dataPath(id, true)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// forget drops b from the maps and returns its quota. b.mu held.
func (s *Store) forget(b *blob) {
	b.gone = true
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.blobs, b.id)
	u := s.owners[b.meta.Owner]
	u.bytes -= Cost(b.meta.Size)
	if !b.complete {
		u.incomplete--
	}
	s.dropOwnerIfIdle(b.meta.Owner)
}

// dropOwnerIfIdle forgets an owner with nothing stored. s.mu held.
func (s *Store) dropOwnerIfIdle(owner string) {
	if u := s.owners[owner]; u != nil && u.bytes == 0 && u.incomplete == 0 {
		delete(s.owners, owner)
	}
}

// Usage returns what the owner's blobs, incomplete and complete, count
// against the quota (the sum of Cost over them).
func (s *Store) Usage(owner string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.owners[owner]; u != nil {
		return u.bytes
	}
	return 0
}

// Close closes the store and releases the directory lock once the calls in
// flight have finished; later calls return ErrClosed. Readers from Open
// stay usable.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	all := make([]*blob, 0, len(s.blobs))
	for _, b := range s.blobs {
		all = append(all, b)
	}
	s.mu.Unlock()
	for _, b := range all {
		b.mu.Lock()
		//lint:ignore SA2001 taking the lock is the point: it waits for an Append or Complete in progress
		b.mu.Unlock()
	}
	return s.lock.Close()
}
