package blobstore

import (
	"crypto/sha256"
	"fmt"
	"io"
	"time"
)

// Blobs is what the server asks of a blob store: the contract of the
// package comment (Life of a blob, Errors) without its files. Store keeps
// blobs in one directory; blobstore/pgblobs keeps them in PostgreSQL, which
// several server processes share. blobstore/blobstoretest checks an
// implementation against this contract.
//
// Every implementation:
//   - returns this package's sentinel errors (wrapped only where the
//     sentinel's doc says numbers are added), so that callers map them
//     alike; ErrNotFound itself is returned bare, the same for every
//     reason a blob is not usable;
//   - charges Cost(size) of the owner's quota from Create until the blob
//     is deleted, and counts an owner's incomplete blobs against
//     Options.MaxIncomplete;
//   - takes the limits and lifetimes of Options, and reads the time from
//     Options.Now;
//   - is safe for concurrent use.
type Blobs interface {
	// Create starts a blob of exactly size bytes owned by owner,
	// reserving Cost(size) of the owner's quota.
	Create(owner string, size int64) (ID, error)
	// Append writes data (at most MaxChunk bytes) at offset, which must
	// be the confirmed length, and makes it durable before returning the
	// new confirmed length. Only the owner may append. Of two Appends at
	// one offset, at most one succeeds. On ErrOffset (an *OffsetError)
	// and ErrComplete the returned length is the confirmed one.
	Append(id ID, owner string, offset int64, data []byte) (int64, error)
	// Status tells the owner the confirmed length, the declared size and
	// whether the blob is complete.
	Status(id ID, owner string) (confirmed, size int64, complete bool, err error)
	// Complete checks that all declared bytes are present and that their
	// SHA-256 is digest, and publishes the blob. On a mismatch the blob
	// is deleted (ErrDigest). Completing a complete blob again with the
	// same digest succeeds.
	Complete(id ID, owner string, digest [32]byte) error
	// ExpectFetches adds n device copies to wait for (see the package
	// comment); durable when it returns.
	ExpectFetches(id ID, owner string, n int) error
	// Open opens a complete, live blob for reading by anyone who has its
	// id, and returns its size. The caller closes the reader.
	Open(id ID) (io.ReadSeekCloser, int64, error)
	// Fetched records that device downloaded the complete blob in full;
	// each device counts once.
	Fetched(id ID, device string) error
	// GC deletes expired, idle incomplete and fully fetched blobs and
	// returns how many it deleted. It is safe to run while the store is
	// in use (and, for a shared store, on several processes at once).
	GC() (removed int, err error)
}

var _ Blobs = (*Store)(nil)

// Live reports whether a blob in the given state is still usable at now
// (neither expired, nor idle too long while incomplete, nor fetched by
// every expected device), under opts' TTLs: the one rule every
// implementation applies. Options must have their defaults filled in
// (WithDefaults).
func Live(opts Options, now, created, lastActive time.Time, complete bool, expected, fetched int) bool {
	if !now.Before(created.Add(opts.TTL)) {
		return false
	}
	if !complete {
		return now.Before(lastActive.Add(opts.IncompleteTTL))
	}
	return !(expected > 0 && fetched >= expected)
}

// WithDefaults returns opts with its zero (or negative) fields set to the
// defaults, as Open does.
func (opts Options) WithDefaults() Options {
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.Quota <= 0 {
		opts.Quota = DefaultQuota
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.IncompleteTTL <= 0 {
		opts.IncompleteTTL = DefaultIncompleteTTL
	}
	if opts.MaxIncomplete <= 0 {
		opts.MaxIncomplete = DefaultMaxIncomplete
	}
	if opts.MaxFetches <= 0 {
		opts.MaxFetches = DefaultMaxFetches
	}
	if opts.MinFree == 0 {
		opts.MinFree = DefaultMinFree
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return opts
}

// CheckCreate checks Create's arguments against opts: the errors that do
// not depend on what is stored.
func CheckCreate(opts Options, owner string, size int64) error {
	if owner == "" || len(owner) > MaxOwnerLen {
		return ErrBadOwner
	}
	if size < 0 {
		return ErrBadSize
	}
	if size > opts.MaxSize {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, size, opts.MaxSize)
	}
	return nil
}

// NewID returns a new random blob id.
func NewID() ID { return newID() }

// FetchRecord is what a store keeps of one device's fetch of blob id: a
// truncated SHA-256 of the id and the device name, so that device names
// are not kept in clear.
func FetchRecord(id ID, device string) [FetchRecordSize]byte {
	sum := sha256.Sum256(append(id[:], device...))
	return [FetchRecordSize]byte(sum[:FetchRecordSize])
}

// FetchRecordSize is the size of a FetchRecord.
const FetchRecordSize = 8
