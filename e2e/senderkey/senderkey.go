// Package senderkey is Signal's group cipher, Sender Keys, in the formats
// of libsignal v0.90.0 (rust/protocol/src/sender_keys.rs, group_cipher.rs,
// protocol.rs and proto/wire.proto), so that a group member on Magpie and
// one on libsignal read each other's messages.
//
// Each sending device keeps one chain per distribution id (a group, or a
// group's current epoch): a chain id, a symmetric chain key that it
// ratchets forward once per message, and a signing key pair. It hands the
// chain key, its iteration and the public signing key to every member
// device in a DistributionMessage, which travels inside the 1:1 Signal
// sessions (that is the caller's job: the message itself is neither
// encrypted nor signed). It then encrypts each group message once: a
// Message carries the chain id, the iteration, the AES-256-CBC ciphertext
// and an XEdDSA signature by the signing key over all of it.
//
// A Record holds what one device knows for one (sender device,
// distribution id): up to MaxStates chains, newest first. For the sender
// itself it is the chain it sends on (with the private signing key); for a
// receiver, the chains that sender has distributed. Records are plain
// values: MarshalBinary and UnmarshalBinary move them to and from storage
// (in libsignal's own storage.proto encoding), and Decrypt is
// transactional (on any error the Record is left exactly as it was).
//
// The package is pure: no I/O, and it never logs.
package senderkey

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// Limits, as libsignal v0.90.0 rust/protocol/src/consts.rs:8-12.
const (
	// MaxForwardJumps is how far ahead of its chain a message's iteration
	// may be: exactly MaxForwardJumps ahead is accepted.
	MaxForwardJumps = 25_000
	// MaxMessageKeys is how many keys of skipped messages a chain keeps;
	// when there are more, the oldest (the first skipped) are dropped.
	MaxMessageKeys = 2000
	// MaxStates is how many chains a Record keeps. Adding a chain to a
	// full Record drops the one least recently added (or re-added).
	MaxStates = 5
)

// MessageType is libsignal's CiphertextMessageType for a Message
// (protocol.rs:37), for callers that tag what they carry as the 1:1
// envelopes do.
const MessageType = 7

// Version is the message version of both encodings, SENDERKEY_MESSAGE_
// CURRENT_VERSION (protocol.rs:21). Both start with the byte
// (Version << 4) | Version = 0x33.
const Version = 3

// SignatureSize is the size of the XEdDSA signature that ends a Message.
const SignatureSize = 64

// Errors. Every error returned by this package wraps one of these (use
// errors.Is).
var (
	// ErrInvalidMessage reports a malformed Message or DistributionMessage,
	// or a Message whose ciphertext does not decrypt (bad length or
	// padding) although its signature verified.
	ErrInvalidMessage = errors.New("senderkey: invalid message")
	// ErrLegacyVersion reports a message of a version below 3.
	ErrLegacyVersion = errors.New("senderkey: legacy message version")
	// ErrUnsupportedVersion reports a message of a version above 3.
	ErrUnsupportedVersion = errors.New("senderkey: unsupported message version")
	// ErrNoSenderKey reports that no chain is known for the message's
	// sender, distribution id and chain id: no DistributionMessage for it
	// has been processed, or its chain was dropped for newer ones. The
	// remedy is to ask the sender for its DistributionMessage. Encrypt
	// returns it for a Record with no chain.
	ErrNoSenderKey = errors.New("senderkey: no sender key for this chain")
	// ErrInvalidSignature reports a Message whose signature does not
	// verify with its chain's signing key: tampered, or forged.
	ErrInvalidSignature = errors.New("senderkey: invalid signature")
	// ErrDuplicateMessage reports a Message whose iteration is behind its
	// chain and whose key is not kept: a replay, or a message so late
	// that its key was dropped.
	ErrDuplicateMessage = errors.New("senderkey: duplicate message")
	// ErrTooFarInFuture reports a Message more than MaxForwardJumps
	// iterations ahead of its chain.
	ErrTooFarInFuture = errors.New("senderkey: message too far in the future")
	// ErrChainExhausted reports a chain whose iteration cannot advance
	// (it is at 2^32-1; libsignal's "Sender chain is too long").
	ErrChainExhausted = errors.New("senderkey: chain exhausted")
	// ErrCannotSend reports an Encrypt with a Record whose newest chain
	// has no private signing key: it belongs to another device.
	ErrCannotSend = errors.New("senderkey: not a chain this device sends on")
	// ErrInvalidRecord reports bytes that UnmarshalBinary cannot decode.
	ErrInvalidRecord = errors.New("senderkey: invalid record encoding")
)

// DistributionID names a sender's chains for one group: a UUID, 16 bytes
// on the wire.
type DistributionID [16]byte

// NewDistributionID returns a random RFC 4122 version 4 UUID (RFC 4122
// §4.4: 122 random bits, the version nibble 0100 and the variant bits 10).
// libsignal's core takes any 16 bytes, but its Node binding (0.90.0)
// formats the id with the uuid package, which refuses one whose version
// or variant bits are not RFC 4122's.
func NewDistributionID(random io.Reader) (DistributionID, error) {
	var id DistributionID
	if _, err := io.ReadFull(random, id[:]); err != nil {
		return id, fmt.Errorf("senderkey: reading randomness: %w", err)
	}
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	return id, nil
}

// String formats the id as a UUID is written: 8-4-4-4-12 lower-case hex
// digits.
func (id DistributionID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:36], id[10:16])
	return string(b[:])
}
