// Package store defines what the Magpie server keeps durably: accounts, their
// devices, and one delivery queue per device.
//
// The interface is deliberately narrow so that the embedded SQLite
// implementation (store/sqlite) and a later PostgreSQL one can both satisfy it
// and be checked by the same conformance suite (store/storetest).
//
// Payloads are opaque: a Store never parses them.
package store

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors that callers branch on.
var (
	// ErrNotFound: no such user or device.
	ErrNotFound = errors.New("store: not found")
	// ErrUserExists: the username is already registered.
	ErrUserExists = errors.New("store: username already registered")
	// ErrKeyInUse: the device key is already registered to a device.
	ErrKeyInUse = errors.New("store: device key already registered")
	// ErrQueueFull: a recipient device's queue is at its limit.
	ErrQueueFull = errors.New("store: recipient queue full")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("store: closed")
)

// KeySize is the size of a device's Noise static public key (X25519).
const KeySize = 32

// ClientIDSize is the size of a client-chosen message id.
const ClientIDSize = 16

// DeviceAddr names one device of one user.
type DeviceAddr struct {
	User   string // normalized username (see package username)
	Device uint32 // 1 for the device that registered the account
}

// Device is a registered device.
type Device struct {
	DeviceAddr
	Key     [KeySize]byte // Noise static public key; unique across all devices
	Created time.Time
}

// User is a registered account.
type User struct {
	Name    string
	Devices []Device // ordered by device id
	Created time.Time
}

// Kind says what a queued item is.
type Kind uint8

const (
	// KindMessage is an envelope from another device; Payload is opaque.
	KindMessage Kind = 1
	// KindReceipt says that the message ClientID sent by this device was
	// delivered to (and acknowledged by) device From. Payload is empty.
	KindReceipt Kind = 2
)

// Message is one item in one device's delivery queue.
type Message struct {
	Seq      uint64 // assigned by the store; increases in commit order
	To       DeviceAddr
	Kind     Kind
	From     DeviceAddr // sender (KindMessage) or delivering device (KindReceipt)
	ClientID [ClientIDSize]byte
	Payload  []byte
	Sent     time.Time // when the server accepted it
	Expires  time.Time
}

// Enqueue asks for one copy of Payload to be queued for every device of user
// To. Its result fields are filled in by Store.Commit.
type Enqueue struct {
	From       DeviceAddr
	ClientID   [ClientIDSize]byte
	To         string
	Payload    []byte
	Expires    time.Time
	QueueLimit int // maximum items per recipient device queue; 0 means no limit

	// Results.
	Err       error     // nil, ErrNotFound (unknown recipient) or ErrQueueFull
	Duplicate bool      // (From, ClientID) was accepted before; nothing new was queued
	Sent      time.Time // accept time of this (or, for a duplicate, the original) send
	Queued    []Message // the copies queued, one per recipient device; nil for a duplicate
}

// Ack removes delivered items from one device's queue. Its result fields are
// filled in by Store.Commit.
type Ack struct {
	Device  DeviceAddr
	Seqs    []uint64  // items of Device's queue; unknown seqs are ignored
	Expires time.Time // expiry of the receipts this creates

	// Results.
	Receipts []Message // receipts queued for the senders of the KindMessage items removed
}

// Batch is a group of writes committed together in one durable transaction
// (group commit: one sync for many messages).
type Batch struct {
	Now      time.Time
	Enqueues []*Enqueue
	Acks     []*Ack
}

// Store is the server's durable state.
//
// Implementations must be safe for concurrent use. Commit is durable when it
// returns nil: a crash (kill -9) afterwards loses nothing it committed.
type Store interface {
	// CreateUser registers name with its first device (id 1) and key.
	// It returns ErrUserExists or ErrKeyInUse.
	CreateUser(ctx context.Context, name string, key [KeySize]byte, now time.Time) (Device, error)
	// DeviceByKey finds the device registered with key, or ErrNotFound.
	DeviceByKey(ctx context.Context, key [KeySize]byte) (Device, error)
	// User returns an account and its devices, or ErrNotFound.
	User(ctx context.Context, name string) (User, error)

	// Commit applies b in one transaction: the enqueues in order, then the
	// acks. A failing Enqueue (Err set) leaves the rest of the batch intact.
	// Enqueues are deduplicated on (From, ClientID) until their Expires.
	// A non-nil error means nothing in b was applied.
	Commit(ctx context.Context, b *Batch) error
	// Pending returns up to limit unexpired items of dev's queue with
	// Seq > after, in Seq order.
	Pending(ctx context.Context, dev DeviceAddr, after uint64, limit int, now time.Time) ([]Message, error)
	// Expire deletes items and deduplication records that expired before now
	// and returns how many queue items it removed.
	Expire(ctx context.Context, now time.Time) (int, error)

	Close() error
}
