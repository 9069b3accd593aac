package ratchet

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/magpie-im/magpie/e2e/curve"
)

// The two message encodings, byte for byte as libsignal v0.90.0 writes
// them (rust/protocol/src/protocol.rs, proto/wire.proto). Both are one
// version byte followed by a proto2 message; a SignalMessage also has an
// 8-byte MAC at the end.
//
// libsignal encodes with prost, which writes the fields that are present
// in ascending field-number order, whatever their order in the .proto
// (prost-derive sorts fields by tag). It sets every field of a
// SignalMessage but pq_ratchet, which it omits when empty
// (protocol.rs:88-98), and every field of a PreKeySignalMessage but
// pre_key_id when there is no one-time pre-key and the Kyber pair when
// there is no Kyber pre-key (protocol.rs:296-307; never for version 4).
// The hand-rolled encoders below do the same, so output is deterministic
// and identical to libsignal's.
//
// Decoding follows proto2 as prost does it: unknown fields are skipped, a
// repeated scalar field keeps its last value, a field of the wrong wire
// type is an error, and a uint32 read from a wider varint is truncated.

// Field numbers of wire.proto's SignalMessage (wire.proto:10-16).
const (
	smRatchetKey      = 1
	smCounter         = 2
	smPreviousCounter = 3
	smCiphertext      = 4
	smPQRatchet       = 5
)

// Field numbers of wire.proto's PreKeySignalMessage (wire.proto:18-27).
const (
	pkPreKeyID        = 1
	pkBaseKey         = 2
	pkIdentityKey     = 3
	pkMessage         = 4
	pkRegistrationID  = 5
	pkSignedPreKeyID  = 6
	pkKyberPreKeyID   = 7
	pkKyberCiphertext = 8
)

// versionByte is ((message version & 0xF) << 4) | current version
// (protocol.rs:100 and :309).
func versionByte(v uint8) byte { return (v&0xF)<<4 | CurrentVersion }

// signalMessage is a parsed SignalMessage.
type signalMessage struct {
	version         uint8
	ratchetKey      curve.PublicKey
	counter         uint32
	previousCounter uint32
	ciphertext      []byte
	pqRatchet       []byte // ignored: Magpie does not implement SPQR
	serialized      []byte // all of it, MAC included
}

// encodeSignalMessage returns version ‖ protobuf, without the MAC.
func encodeSignalMessage(version uint8, ratchetKey curve.PublicKey, counter, previousCounter uint32, ciphertext []byte) []byte {
	b := make([]byte, 0, 1+2+33+2*6+3+len(ciphertext)+macLen)
	b = append(b, versionByte(version))
	b = protowire.AppendTag(b, smRatchetKey, protowire.BytesType)
	b = protowire.AppendBytes(b, ratchetKey.Serialize())
	b = protowire.AppendTag(b, smCounter, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(counter))
	b = protowire.AppendTag(b, smPreviousCounter, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(previousCounter))
	b = protowire.AppendTag(b, smCiphertext, protowire.BytesType)
	b = protowire.AppendBytes(b, ciphertext)
	// pq_ratchet (5) is empty, so absent.
	return b
}

// checkVersion applies libsignal's version rule to the first byte of a
// message (protocol.rs:214-224 and :391-401): the high nibble is the
// message version.
func checkVersion(first byte) (uint8, error) {
	v := first >> 4
	if v < 3 {
		return 0, fmt.Errorf("%w: version %d", ErrLegacyVersion, v)
	}
	if v > CurrentVersion {
		return 0, fmt.Errorf("%w: version %d", ErrUnsupportedVersion, v)
	}
	return v, nil
}

// parseSignalMessage decodes a SignalMessage. It checks structure only;
// the MAC is checked by the session that decrypts it.
func parseSignalMessage(b []byte) (*signalMessage, error) {
	if len(b) < 1+macLen {
		return nil, fmt.Errorf("%w: SignalMessage of %d bytes is too short", ErrInvalidMessage, len(b))
	}
	v, err := checkVersion(b[0])
	if err != nil {
		return nil, err
	}
	m := &signalMessage{version: v, serialized: b}
	var haveKey, haveCounter, haveCiphertext bool
	var rawKey []byte
	err = walkFields(b[1:len(b)-macLen], func(num protowire.Number, typ protowire.Type, varint uint64, bytes []byte) error {
		switch num {
		case smRatchetKey:
			if typ != protowire.BytesType {
				return errWireType
			}
			rawKey, haveKey = bytes, true
		case smCounter:
			if typ != protowire.VarintType {
				return errWireType
			}
			m.counter, haveCounter = uint32(varint), true
		case smPreviousCounter:
			if typ != protowire.VarintType {
				return errWireType
			}
			m.previousCounter = uint32(varint)
		case smCiphertext:
			if typ != protowire.BytesType {
				return errWireType
			}
			m.ciphertext, haveCiphertext = bytes, true
		case smPQRatchet:
			if typ != protowire.BytesType {
				return errWireType
			}
			m.pqRatchet = bytes
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: SignalMessage protobuf: %v", ErrInvalidMessage, err)
	}
	if !haveKey || !haveCounter || !haveCiphertext {
		return nil, fmt.Errorf("%w: SignalMessage lacks a required field", ErrInvalidMessage)
	}
	if m.ratchetKey, err = curve.ParsePublicKey(rawKey); err != nil {
		return nil, fmt.Errorf("%w: ratchet key: %v", ErrInvalidMessage, err)
	}
	return m, nil
}

// preKeySignalMessage is a parsed PreKeySignalMessage.
type preKeySignalMessage struct {
	version         uint8
	registrationID  uint32
	preKeyID        *uint32
	signedPreKeyID  uint32
	hasKyber        bool
	kyberPreKeyID   uint32
	kyberCiphertext []byte
	baseKey         curve.PublicKey
	identityKey     curve.PublicKey
	message         *signalMessage
}

// encodePreKeySignalMessage returns the whole PreKeySignalMessage; inner
// is a complete SignalMessage (MAC included).
func encodePreKeySignalMessage(version uint8, registrationID uint32, preKeyID *uint32, signedPreKeyID, kyberPreKeyID uint32, kyberCiphertext []byte, baseKey, identityKey curve.PublicKey, inner []byte) []byte {
	b := make([]byte, 0, 1+6+2*36+3+len(inner)+3*6+3+len(kyberCiphertext))
	b = append(b, versionByte(version))
	if preKeyID != nil {
		b = protowire.AppendTag(b, pkPreKeyID, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(*preKeyID))
	}
	b = protowire.AppendTag(b, pkBaseKey, protowire.BytesType)
	b = protowire.AppendBytes(b, baseKey.Serialize())
	b = protowire.AppendTag(b, pkIdentityKey, protowire.BytesType)
	b = protowire.AppendBytes(b, identityKey.Serialize())
	b = protowire.AppendTag(b, pkMessage, protowire.BytesType)
	b = protowire.AppendBytes(b, inner)
	b = protowire.AppendTag(b, pkRegistrationID, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(registrationID))
	b = protowire.AppendTag(b, pkSignedPreKeyID, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(signedPreKeyID))
	b = protowire.AppendTag(b, pkKyberPreKeyID, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(kyberPreKeyID))
	b = protowire.AppendTag(b, pkKyberCiphertext, protowire.BytesType)
	b = protowire.AppendBytes(b, kyberCiphertext)
	return b
}

// parsePreKeySignalMessage decodes a PreKeySignalMessage and the
// SignalMessage inside it (protocol.rs:383-453).
func parsePreKeySignalMessage(b []byte) (*preKeySignalMessage, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty PreKeySignalMessage", ErrInvalidMessage)
	}
	v, err := checkVersion(b[0])
	if err != nil {
		return nil, err
	}
	m := &preKeySignalMessage{version: v}
	var rawBase, rawIdentity, rawMessage []byte
	var haveBase, haveIdentity, haveMessage, haveSigned, haveKyberID, haveKyberCT bool
	err = walkFields(b[1:], func(num protowire.Number, typ protowire.Type, varint uint64, bytes []byte) error {
		want := protowire.VarintType
		switch num {
		case pkBaseKey, pkIdentityKey, pkMessage, pkKyberCiphertext:
			want = protowire.BytesType
		case pkPreKeyID, pkRegistrationID, pkSignedPreKeyID, pkKyberPreKeyID:
		default:
			return nil
		}
		if typ != want {
			return errWireType
		}
		switch num {
		case pkPreKeyID:
			id := uint32(varint)
			m.preKeyID = &id
		case pkBaseKey:
			rawBase, haveBase = bytes, true
		case pkIdentityKey:
			rawIdentity, haveIdentity = bytes, true
		case pkMessage:
			rawMessage, haveMessage = bytes, true
		case pkRegistrationID:
			m.registrationID = uint32(varint)
		case pkSignedPreKeyID:
			m.signedPreKeyID, haveSigned = uint32(varint), true
		case pkKyberPreKeyID:
			m.kyberPreKeyID, haveKyberID = uint32(varint), true
		case pkKyberCiphertext:
			m.kyberCiphertext, haveKyberCT = bytes, true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: PreKeySignalMessage protobuf: %v", ErrInvalidMessage, err)
	}
	if !haveBase || !haveIdentity || !haveMessage || !haveSigned {
		return nil, fmt.Errorf("%w: PreKeySignalMessage lacks a required field", ErrInvalidMessage)
	}
	switch {
	case haveKyberID && haveKyberCT:
		m.hasKyber = true
	case !haveKyberID && !haveKyberCT && v <= 3:
	case !haveKyberID && !haveKyberCT:
		return nil, fmt.Errorf("%w: Kyber pre-key must be present for version %d", ErrInvalidMessage, v)
	default:
		return nil, fmt.Errorf("%w: both or neither of Kyber pre-key id and ciphertext must be present", ErrInvalidMessage)
	}
	if m.baseKey, err = curve.ParsePublicKey(rawBase); err != nil {
		return nil, fmt.Errorf("%w: base key: %v", ErrInvalidMessage, err)
	}
	if m.identityKey, err = curve.ParsePublicKey(rawIdentity); err != nil {
		return nil, fmt.Errorf("%w: identity key: %v", ErrInvalidMessage, err)
	}
	if m.message, err = parseSignalMessage(rawMessage); err != nil {
		return nil, err
	}
	return m, nil
}

var errWireType = fmt.Errorf("wrong wire type")

// walkFields calls fn for each field of a protobuf message: with its
// value for varints and its contents for length-delimited fields. Fields
// of other wire types (fixed32, fixed64, groups) are skipped, and fn sees
// their type so it can refuse them for a known field number.
func walkFields(b []byte, fn func(num protowire.Number, typ protowire.Type, varint uint64, bytes []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var varint uint64
		var bytes []byte
		switch typ {
		case protowire.VarintType:
			varint, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			bytes, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, varint, bytes); err != nil {
			return err
		}
	}
	return nil
}
