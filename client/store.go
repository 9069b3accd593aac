package client

import (
	"context"
	"errors"
)

// Store keeps one client's state: its keys, sessions, history, outbox and
// transfers. The Client seals every value before it reaches the Store
// (only the header needed to unlock it stays in clear), so a Store never
// holds plaintext or keys; keys of records (namespaces, user names, local
// sequence numbers) are not secret.
//
// The contract, which client/storetest checks:
//   - Update runs fn in a transaction. When Update returns nil, everything fn
//     wrote is durable: it survives a crash or a power cut. When fn returns
//     an error, or the commit fails, nothing fn wrote is kept. Updates run
//     one at a time.
//   - View runs fn over a consistent snapshot. It may run concurrently with
//     other Views and with an Update, and never sees an uncommitted write.
//   - Within a namespace, keys are ordered bytewise.
//   - A Tx or ReadTx is valid only while its fn runs.
//   - A write that fails because the disk is full returns an error matching
//     ErrStorageFull, so the client can say so and wait for space.
//
// NewSQLiteStore is the default, used when Options.Store is nil;
// NewMemoryStore keeps nothing on disk.
type Store interface {
	Update(ctx context.Context, fn func(Tx) error) error
	View(ctx context.Context, fn func(ReadTx) error) error
	Close() error
}

// ReadTx reads a Store.
type ReadTx interface {
	// Get returns the value of key in namespace ns, or nil and no error
	// when there is none (an empty value is an empty, non-nil slice).
	Get(ns, key string) ([]byte, error)
	// Scan calls fn with each key of ns in [from, to), in ascending order,
	// or descending with reverse; to == "" means no upper bound. It stops
	// when fn returns false or an error, which Scan returns. fn may Get
	// from the same transaction; it must not keep value after it returns.
	Scan(ns, from, to string, reverse bool, fn func(key string, value []byte) (bool, error)) error
}

// Tx reads and writes a Store inside Update.
type Tx interface {
	ReadTx
	Put(ns, key string, value []byte) error
	Delete(ns, key string) error
}

// ErrStorageFull means the client's disk is full: nothing new can be stored,
// so nothing new is acknowledged to the server until space returns (it keeps
// the messages meanwhile).
var ErrStorageFull = errors.New("client: the disk holding the client's state is full")

// prefixEnd is the smallest key greater than every key that starts with
// prefix, for Scan's upper bound ("" if there is none).
func prefixEnd(prefix string) string {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return ""
}
