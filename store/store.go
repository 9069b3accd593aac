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
	"fmt"
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
	// ErrSenderShare: a recipient device's queue holds as many of the
	// sender's items as one sender may (Enqueue.SenderShare).
	ErrSenderShare = errors.New("store: the recipient holds as many undelivered messages from this sender as one sender may")
	// ErrStorageFull: the disk under the store is full; nothing was
	// written. Retrying once space returns succeeds.
	ErrStorageFull = errors.New("store: the disk is full")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("store: closed")
	// ErrMismatchedDevices: per-device payloads do not name exactly the
	// recipient's current devices; the error is a *MismatchError.
	ErrMismatchedDevices = errors.New("store: recipient devices changed")
	// ErrKeyLimit: an upload would store more one-time prekeys than allowed.
	ErrKeyLimit = errors.New("store: too many one-time prekeys")
	// ErrNoKeys: the device has not uploaded its identity and prekeys yet.
	ErrNoKeys = errors.New("store: device has no keys")
	// ErrIdentityConflict: an upload names an identity key other than the
	// account's while other devices of the account have keys (all devices
	// of an account share its identity).
	ErrIdentityConflict = errors.New("store: identity key differs from the account's")
	// ErrConflict: a GroupChange does not extend the log's head (another
	// change was appended first), or Seq 0 names a group that exists.
	ErrConflict = errors.New("store: the group changed meanwhile")
)

// MismatchError says how a per-device send's device list differs from the
// recipient's devices, so the sender can fetch bundles for the missing ones,
// drop the extra ones and rebuild sessions with the stale ones (re-registered
// devices), then retry (the Sesame algorithm's device-list reconciliation).
type MismatchError struct {
	Missing []uint32 // devices the sender left out
	Extra   []uint32 // devices named that do not exist (or have no keys)
	Stale   []uint32 // devices whose registration id differs
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("store: recipient devices changed (missing %v, extra %v, stale %v)", e.Missing, e.Extra, e.Stale)
}

// Is makes errors.Is(err, ErrMismatchedDevices) true.
func (e *MismatchError) Is(target error) bool { return target == ErrMismatchedDevices }

// KeySize is the size of a device's Noise static public key (X25519).
const KeySize = 32

// ClientIDSize is the size of a client-chosen message id.
const ClientIDSize = 16

// GroupIDSize is the size of a group id.
const GroupIDSize = 16

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
	// RegistrationID is the end-to-end layer's id for this installation
	// (Signal's registration id, 14 bits); 0 until keys are uploaded.
	RegistrationID uint32
}

// User is a registered account.
type User struct {
	Name    string
	Devices []Device // ordered by device id
	Created time.Time
	// Identity is the account's end-to-end identity key (Signal
	// serialization), nil until a device uploads keys.
	Identity []byte
}

// Kind says what a queued item is.
type Kind uint8

const (
	// KindMessage is an envelope from another device; Payload is opaque.
	KindMessage Kind = 1
	// KindReceipt says that the message ClientID sent by this device was
	// delivered to (and acknowledged by) device From. Payload is empty.
	KindReceipt Kind = 2
	// KindGroupMessage is a group message. Payload is the sender's one
	// ciphertext for every member device; From, ClientID and Sent are as
	// for KindMessage; Group names the group.
	KindGroupMessage Kind = 3
	// KindGroupChange is a change appended to a group's log. Payload is
	// the signed change; From is its author's device; Group names the
	// group.
	KindGroupChange Kind = 4
)

// Message is one item in one device's delivery queue.
type Message struct {
	Seq      uint64 // assigned by the store; increases in commit order
	To       DeviceAddr
	Kind     Kind
	From     DeviceAddr // sender (KindMessage, KindGroupMessage), delivering device (KindReceipt) or author (KindGroupChange)
	ClientID [ClientIDSize]byte
	Payload  []byte
	Sent     time.Time // when the server accepted it
	Expires  time.Time
	Group    [GroupIDSize]byte // KindGroupMessage, KindGroupChange: the group; zero otherwise
}

// Enqueue asks for one copy of Payload to be queued for every device of user
// To or, when Devices is set, for exactly the devices it names, each with its
// own payload (end-to-end ciphertext is different per device). Its result
// fields are filled in by Store.Commit.
type Enqueue struct {
	From     DeviceAddr
	ClientID [ClientIDSize]byte
	To       string
	Payload  []byte
	// Devices, when non-nil (even empty), must name every device of To that has keys,
	// except the sending device when To is the sender's own account, with
	// each one's current registration id; otherwise Err is a *MismatchError
	// and nothing is queued.
	Devices    []DevicePayload
	Expires    time.Time
	QueueLimit int // maximum items per recipient device queue; 0 means no limit
	// SenderShare is the most items of From's account one recipient device
	// may hold (0: no share): past it, Err is ErrSenderShare and nothing is
	// queued. Sends to one's own account are exempt.
	SenderShare int

	// Results.
	Err       error     // nil, ErrNotFound (unknown recipient), ErrQueueFull, *MismatchError or ErrNoKeys (no device of To has keys)
	Duplicate bool      // (From, ClientID) was accepted before; nothing new was queued
	Sent      time.Time // accept time of this (or, for a duplicate, the original) send
	Queued    []Message // the copies queued, one per recipient device; nil for a duplicate
}

// DevicePayload is one device's copy in a per-device Enqueue.
type DevicePayload struct {
	Device         uint32
	RegistrationID uint32
	Payload        []byte
}

// SignedPreKey is a public prekey with its owner's XEdDSA signature, all as
// the end-to-end layer serializes them (the store does not interpret them).
type SignedPreKey struct {
	ID        uint32
	Key       []byte
	Signature []byte
}

// PreKey is a one-time EC prekey.
type PreKey struct {
	ID  uint32
	Key []byte
}

// Keys is an upload of a device's end-to-end public keys. Nil and empty
// fields leave what is stored unchanged; one-time keys are added (an id
// already stored is replaced).
type Keys struct {
	IdentityKey     []byte // the account's identity key; replaces the stored one
	RegistrationID  uint32
	SignedPreKey    *SignedPreKey
	LastResortKyber *SignedPreKey
	PreKeys         []PreKey
	KyberPreKeys    []SignedPreKey
}

// KeyCounts says how many one-time prekeys a device has left on the server.
type KeyCounts struct {
	PreKeys      int
	KyberPreKeys int
}

// Bundle is what a sender needs to start a session with one device. PreKey
// is nil when the device's one-time EC prekeys ran out; KyberPreKey is then
// a one-time Kyber prekey if any is left, else the last-resort one.
type Bundle struct {
	Device         uint32
	RegistrationID uint32
	SignedPreKey   SignedPreKey
	KyberPreKey    SignedPreKey
	PreKey         *PreKey
}

// Ack removes delivered items from one device's queue. Its result fields are
// filled in by Store.Commit. A group item's shared payload is deleted with
// its last reference.
type Ack struct {
	Device  DeviceAddr
	Seqs    []uint64  // items of Device's queue; unknown seqs are ignored
	Expires time.Time // expiry of the receipts this creates

	// Results.
	Receipts []Message // receipts queued for the senders of the KindMessage and KindGroupMessage items removed
}

// GroupSend queues one ciphertext for many devices, stored once: each
// device's queue holds a reference to it, and it is deleted with the last
// reference (acknowledged or expired). Its result fields are filled in by
// Store.Commit.
type GroupSend struct {
	From     DeviceAddr
	ClientID [ClientIDSize]byte
	Group    [GroupIDSize]byte
	Payload  []byte
	// To is the member devices to deliver to (the server computes them):
	// not empty, and no device twice.
	To         []DeviceAddr
	Expires    time.Time
	QueueLimit int // per device; 0 means no limit. A device whose queue is full is skipped (listed in Full); the others are queued
	// SenderShare is the most items of From's account one device may hold
	// (0: no share); a device holding that many is skipped like a full one.
	SenderShare int

	// Results.
	// Err is ErrNotFound if a device of To does not exist, ErrQueueFull
	// if every one's queue is full, or another error if To is empty or
	// names a device twice; nothing is queued then, and a retry is not a
	// duplicate.
	Err       error
	Duplicate bool         // (From, ClientID) was accepted before, by a GroupSend or an Enqueue (one namespace per sender device); nothing new was queued
	Sent      time.Time    // accept time of this (or, for a duplicate, the original) send
	Queued    []Message    // one per device queued, in the order of To; Payload aliases GroupSend.Payload
	Full      []DeviceAddr // the devices skipped because their queue was full, in the order of To
}

// GroupChange appends a change to a group's log, replaces the group's
// state, and queues the change for every device of the users in Notify,
// stored once (as a GroupSend's payload is). Its result fields are filled
// in by Store.Commit.
type GroupChange struct {
	From    DeviceAddr // the change's author
	Group   [GroupIDSize]byte
	Seq     uint64   // the change's position: 0 creates the group; otherwise the head must be Seq-1
	Change  []byte   // the signed change (opaque)
	State   []byte   // the group's state after the change (opaque; returned by Store.Group)
	Notify  []string // users whose devices get the change (the members before and after it); unknown users are skipped
	Expires time.Time

	// Results.
	// Err is ErrConflict if the change does not extend the head (or Seq
	// is 0 and the group exists), ErrNotFound if Seq > 0 and there is no
	// such group; nothing is written then.
	Err    error
	Queued []Message // one per device notified, users in the order of Notify, each user's devices by id
}

// Batch is the writes committed together in one durable transaction
// (a batched commit: one sync for many messages).
type Batch struct {
	Now          time.Time
	GroupChanges []*GroupChange
	Enqueues     []*Enqueue
	GroupSends   []*GroupSend
	Acks         []*Ack
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

	// Commit applies b in one transaction: the group changes, the
	// enqueues, the group sends, each in order, then the acks (so a change
	// and a message committed together reach every queue in that order).
	// A failing GroupChange, Enqueue or GroupSend (Err set) leaves the rest
	// of the batch intact. Enqueues and GroupSends are deduplicated on
	// (From, ClientID), in one namespace, until their Expires. A non-nil
	// error means nothing in b was applied.
	//
	// Acknowledging a KindMessage or KindGroupMessage item queues a
	// receipt for its sender's device; other kinds queue none.
	Commit(ctx context.Context, b *Batch) error
	// Pending returns up to limit unexpired items of dev's queue with
	// Seq > after, in Seq order. A group item comes with its payload,
	// sender, client id, group and send time, as every device it was
	// queued for gets them.
	Pending(ctx context.Context, dev DeviceAddr, after uint64, limit int, now time.Time) ([]Message, error)
	// Expire deletes items and deduplication records that expired before now
	// and returns how many queue items it removed. A group item's shared
	// payload goes with its last reference, as on an acknowledgement.
	Expire(ctx context.Context, now time.Time) (int, error)

	// SetKeys stores dev's end-to-end public keys. It returns ErrKeyLimit,
	// storing nothing, if either kind of one-time prekey would exceed limit,
	// and ErrIdentityConflict if the identity key differs from the
	// account's while another device of the account has keys (a lone
	// device may replace it: a reinstall).
	SetKeys(ctx context.Context, dev DeviceAddr, k Keys, limit int) (KeyCounts, error)
	// Bundles returns the account's identity key and a bundle for each of
	// the given devices of user (nil: every device with keys). With
	// oneTime, it consumes one one-time EC prekey and one one-time Kyber
	// prekey per device atomically (concurrent callers never get the same
	// one-time key); without, the bundle has no EC prekey and the
	// last-resort Kyber prekey, which sessions can start from too (the
	// server's answer to a requester over its budget of one-time keys).
	// ErrNotFound: no such user; ErrNoKeys: a named device has no keys (or
	// the user has none at all).
	Bundles(ctx context.Context, user string, devices []uint32, oneTime bool) (identity []byte, bundles []Bundle, err error)
	// KeyCounts returns how many one-time prekeys dev has left.
	KeyCounts(ctx context.Context, dev DeviceAddr) (KeyCounts, error)

	// Group returns a group's head (the seq of its last change) and its
	// state after that change; ErrNotFound if there is no such group.
	Group(ctx context.Context, id [GroupIDSize]byte) (seq uint64, state []byte, err error)
	// GroupLog returns up to limit changes of a group's log, from seq from
	// on, in order; none for an unknown group or a limit <= 0.
	GroupLog(ctx context.Context, id [GroupIDSize]byte, from uint64, limit int) ([][]byte, error)
	// QueueDepth returns how many items wait in all device queues (for
	// metrics; it should be cheap).
	QueueDepth(ctx context.Context) (int64, error)

	Close() error
}
