// Package ratchet is Magpie's Signal-protocol session layer: PQXDH session
// setup (Signal's PQXDH specification, revision 3) and the Double Ratchet
// (Signal's Double Ratchet specification, revision 4), in the message
// formats of libsignal v0.90.0, so that a session can be started in either
// direction with a libsignal client.
//
// A Record holds everything known about the session with one remote device:
// the current session state and up to ArchivedStatesMax previous ones, so
// that late messages for a replaced session still decrypt. Records are
// plain values: MarshalBinary and UnmarshalBinary move them to and from
// storage, and Decrypt is transactional (on any error the Record is left
// exactly as it was).
//
// Magpie does not implement SPQR, the sparse post-quantum ratchet that
// libsignal 0.90.0 runs beside the Double Ratchet. Magpie sends no
// pq_ratchet field, which libsignal treats as SPQR version 0: it negotiates
// down and derives every message key classically (see DESIGN notes in
// session.go). Identity trust (is this the key we expected for this
// address?) is the caller's decision: RemoteIdentity reports the key.
//
// This package never logs.
package ratchet

import (
	"errors"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/kem"
)

// Limits, as libsignal v0.90.0 rust/protocol/src/consts.rs:8-11.
const (
	// MaxForwardJumps is how far ahead of its receiving chain a message
	// counter may be (except in a session with oneself).
	MaxForwardJumps = 25_000
	// MaxMessageKeys is how many skipped message keys one receiving
	// chain keeps; the oldest are dropped first.
	MaxMessageKeys = 2000
	// MaxReceiverChains is how many receiving chains a state keeps; the
	// oldest is dropped first.
	MaxReceiverChains = 5
	// ArchivedStatesMax is how many previous session states a Record
	// keeps besides the current one; the oldest is dropped first.
	ArchivedStatesMax = 40
)

// CurrentVersion is the session and message version this package speaks:
// 4, PQXDH (libsignal protocol.rs:18). Version 3 (X3DH) is refused.
const CurrentVersion = 4

// MessageType tells which of the two encodings a ciphertext has. The
// values are libsignal's CiphertextMessageType (protocol.rs:34-39), so they
// can travel in an envelope unchanged.
type MessageType uint8

const (
	// WhisperMessage is a SignalMessage: a message in an established
	// session.
	WhisperMessage MessageType = 2
	// PreKeyMessage is a PreKeySignalMessage: a SignalMessage wrapped with
	// what the recipient needs to create the session (PQXDH). The
	// initiator sends these until it first receives a message.
	PreKeyMessage MessageType = 3
)

func (t MessageType) String() string {
	switch t {
	case WhisperMessage:
		return "whisper"
	case PreKeyMessage:
		return "prekey"
	}
	return "unknown"
}

// Errors. Every error returned by this package wraps one of these (use
// errors.Is), and may also wrap the error of a PreKeyStore.
var (
	// ErrInvalidMessage reports a malformed message, or one that no
	// session state can decrypt for a reason other than those below.
	ErrInvalidMessage = errors.New("ratchet: invalid message")
	// ErrInvalidMAC reports a message whose authentication code does not
	// verify: tampered, or not meant for this session.
	ErrInvalidMAC = errors.New("ratchet: message authentication failed")
	// ErrDuplicateMessage reports a message whose key was already used
	// (a replay), or was dropped because it was too old to keep.
	ErrDuplicateMessage = errors.New("ratchet: duplicate message")
	// ErrNoSession reports that the Record has no session to encrypt or
	// decrypt a SignalMessage with.
	ErrNoSession = errors.New("ratchet: no session")
	// ErrInvalidSignature reports a pre-key in a Bundle whose signature by
	// the bundle's identity key does not verify.
	ErrInvalidSignature = errors.New("ratchet: invalid pre-key signature")
	// ErrInvalidBundle reports a Bundle that is incomplete or holds a
	// key that cannot be used.
	ErrInvalidBundle = errors.New("ratchet: invalid bundle")
	// ErrUnknownPreKey reports a PreKeySignalMessage naming a pre-key that
	// the PreKeyStore does not have (the store's error is wrapped too).
	ErrUnknownPreKey = errors.New("ratchet: unknown pre-key")
	// ErrLegacyVersion reports a message of a version below 4 (X3DH and
	// older), which libsignal 0.90.0 no longer accepts for new sessions.
	ErrLegacyVersion = errors.New("ratchet: legacy message version")
	// ErrUnsupportedVersion reports a message of a version above 4.
	ErrUnsupportedVersion = errors.New("ratchet: unsupported message version")
	// ErrTooFarInFuture reports a message counter more than
	// MaxForwardJumps ahead of its chain.
	ErrTooFarInFuture = errors.New("ratchet: message too far in the future")
	// ErrInvalidRecord reports bytes that UnmarshalBinary cannot decode.
	ErrInvalidRecord = errors.New("ratchet: invalid record encoding")
)

// IdentityKeyPair is a device's long-term identity key pair. Its public
// half is serialized with the 0x05 type byte wherever it appears.
type IdentityKeyPair = curve.KeyPair

// Bundle is what the server hands out for one remote device: the public
// keys needed to start a session with it by PQXDH.
type Bundle struct {
	RegistrationID uint32
	DeviceID       uint32
	IdentityKey    curve.PublicKey

	SignedPreKeyID  uint32
	SignedPreKey    curve.PublicKey
	SignedPreKeySig [64]byte // XEdDSA by IdentityKey over SignedPreKey.Serialize()

	KyberPreKeyID  uint32
	KyberPreKey    *kem.PublicKey
	KyberPreKeySig [64]byte // XEdDSA by IdentityKey over KyberPreKey.Serialize()

	// The one-time pre-key is optional: both set or both nil.
	PreKeyID *uint32
	PreKey   *curve.PublicKey
}

// PreKeyStore gives the private pre-keys of the local device, by id, to
// Decrypt when it processes a PreKeySignalMessage. A lookup of an unknown
// id must return an error.
type PreKeyStore interface {
	SignedPreKey(id uint32) (curve.KeyPair, error)
	KyberPreKey(id uint32) (*kem.PrivateKey, error)
	// PreKey returns a one-time pre-key. The caller deletes it once a
	// Decrypt that reports it in UsedPreKeys has been committed.
	PreKey(id uint32) (curve.KeyPair, error)
}

// UsedPreKeys reports what a successful Decrypt of a PreKeySignalMessage
// consumed. NewSession is false when the message belonged to a session
// that already existed (a repeated PreKeySignalMessage), in which case no
// pre-key was used and the other fields are zero.
type UsedPreKeys struct {
	NewSession     bool
	SignedPreKeyID uint32
	KyberPreKeyID  uint32
	// PreKeyID is the one-time pre-key to delete, if one was used.
	PreKeyID *uint32
	// BaseKey is the initiator's base key. A caller that reuses
	// last-resort Kyber pre-keys can record (KyberPreKeyID,
	// SignedPreKeyID, BaseKey) to refuse a second session with the same
	// triple, as libsignal's mark_kyber_pre_key_used does.
	BaseKey curve.PublicKey
}
