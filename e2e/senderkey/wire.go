package senderkey

import (
	"fmt"
	"iter"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/xeddsa"
)

// The two message encodings, byte for byte as libsignal v0.90.0 writes
// them (protocol.rs:456-740; wire.proto:29-42):
//
//	DistributionMessage = 0x33 ‖ protobuf SenderKeyDistributionMessage {
//	    1 distribution_uuid (16 bytes), 2 chain_id, 3 iteration,
//	    4 chain_key (32 bytes), 5 signing_key (33 bytes: 0x05 ‖ X25519) }
//	Message = 0x33 ‖ protobuf SenderKeyMessage {
//	    1 distribution_uuid, 2 chain_id, 3 iteration, 4 ciphertext }
//	    ‖ XEdDSA signature (64 bytes) over everything before it
//
// The first byte is (message version << 4) | 3; a reader takes the message
// version from the high nibble and ignores the low one. The protobufs are
// proto2 with every field optional, and libsignal (prost) writes all of
// them, in field-number order. Decoding follows prost: unknown fields are
// skipped, a repeated field keeps its last value, a known field of the
// wrong wire type is an error, and a uint32 read from a wider varint is
// truncated. libsignal requires every field to be present.

// minMessageSize is libsignal's first check of both encodings: a version
// byte and 64 more (a signature; or, in a DistributionMessage, "at least
// a X25519 key and a chain key", protocol.rs:686-687).
const minMessageSize = 1 + 64

// versionByte is ((Version & 0xF) << 4) | Version (protocol.rs:485, :624).
const versionByte = Version<<4 | Version

// Field numbers, the same in both messages.
const (
	fieldDistributionID = 1
	fieldChainID        = 2
	fieldIteration      = 3
	fieldCiphertext     = 4 // Message
	fieldChainKey       = 4 // DistributionMessage
	fieldSigningKey     = 5 // DistributionMessage
)

// DistributionMessage hands a chain to a member device: with it, the member
// can decrypt the chain's messages from Iteration on.
type DistributionMessage struct {
	DistributionID DistributionID
	ChainID        uint32
	Iteration      uint32
	ChainKey       [32]byte // the chain key at Iteration
	SigningKey     curve.PublicKey
}

func appendHeader(b []byte, id DistributionID, chainID, iteration uint32) []byte {
	b = append(b, versionByte)
	b = protowire.AppendTag(b, fieldDistributionID, protowire.BytesType)
	b = protowire.AppendBytes(b, id[:])
	b = protowire.AppendTag(b, fieldChainID, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(chainID))
	b = protowire.AppendTag(b, fieldIteration, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(iteration))
}

// Marshal encodes the message.
func (m DistributionMessage) Marshal() []byte {
	b := appendHeader(make([]byte, 0, 1+18+12+34+35), m.DistributionID, m.ChainID, m.Iteration)
	b = protowire.AppendTag(b, fieldChainKey, protowire.BytesType)
	b = protowire.AppendBytes(b, m.ChainKey[:])
	b = protowire.AppendTag(b, fieldSigningKey, protowire.BytesType)
	return protowire.AppendBytes(b, m.SigningKey.Serialize())
}

// ParseDistributionMessage decodes a DistributionMessage with libsignal's
// checks (protocol.rs:682-740).
func ParseDistributionMessage(b []byte) (DistributionMessage, error) {
	var m DistributionMessage
	f, err := parseMessage("SenderKeyDistributionMessage", b, 0,
		protowire.BytesType, protowire.VarintType, protowire.VarintType, protowire.BytesType, protowire.BytesType)
	if err != nil {
		return m, err
	}
	key, sig := f[fieldChainKey-1], f[fieldSigningKey-1]
	if !key.seen || !sig.seen {
		return m, fmt.Errorf("%w: SenderKeyDistributionMessage lacks a required field", ErrInvalidMessage)
	}
	if len(key.data) != 32 || len(sig.data) != curve.SerializedPublicKeySize {
		return m, fmt.Errorf("%w: chain key of %d bytes or signing key of %d bytes", ErrInvalidMessage, len(key.data), len(sig.data))
	}
	if m.SigningKey, err = curve.ParsePublicKey(sig.data); err != nil {
		return m, fmt.Errorf("%w: signing key: %v", ErrInvalidMessage, err)
	}
	m.DistributionID = DistributionID(f[fieldDistributionID-1].data)
	m.ChainID = uint32(f[fieldChainID-1].v)
	m.Iteration = uint32(f[fieldIteration-1].v)
	m.ChainKey = [32]byte(key.data)
	return m, nil
}

// Message is a parsed group message. Its Ciphertext shares memory with the
// bytes it was parsed from.
type Message struct {
	DistributionID DistributionID
	ChainID        uint32
	Iteration      uint32
	Ciphertext     []byte
	serialized     []byte // all of it, signature included
}

// ParseMessage decodes a Message with libsignal's checks
// (protocol.rs:548-594). It checks structure only: Record.Decrypt checks
// the signature.
func ParseMessage(b []byte) (*Message, error) {
	f, err := parseMessage("SenderKeyMessage", b, SignatureSize,
		protowire.BytesType, protowire.VarintType, protowire.VarintType, protowire.BytesType)
	if err != nil {
		return nil, err
	}
	ct := f[fieldCiphertext-1]
	if !ct.seen {
		return nil, fmt.Errorf("%w: SenderKeyMessage lacks a required field", ErrInvalidMessage)
	}
	return &Message{
		DistributionID: DistributionID(f[fieldDistributionID-1].data),
		ChainID:        uint32(f[fieldChainID-1].v),
		Iteration:      uint32(f[fieldIteration-1].v),
		Ciphertext:     ct.data,
		serialized:     b,
	}, nil
}

// Bytes returns the encoded message.
func (m *Message) Bytes() []byte { return m.serialized }

// VerifySignature reports whether the message is signed by key.
func (m *Message) VerifySignature(key curve.PublicKey) bool {
	n := len(m.serialized) - SignatureSize
	return xeddsa.Verify(key, m.serialized[:n], [SignatureSize]byte(m.serialized[n:]))
}

// signMessage encodes and signs a Message.
func signMessage(id DistributionID, chainID, iteration uint32, ciphertext []byte, key curve.PrivateKey, random [64]byte) []byte {
	b := appendHeader(make([]byte, 0, 1+18+12+3+len(ciphertext)+SignatureSize), id, chainID, iteration)
	b = protowire.AppendTag(b, fieldCiphertext, protowire.BytesType)
	b = protowire.AppendBytes(b, ciphertext)
	sig := xeddsa.Sign(key, b, random)
	return append(b, sig[:]...)
}

// parseMessage applies the checks both encodings share: the size, the
// version, the protobuf, and the presence of the distribution id (16 bytes),
// chain id and iteration. The protobuf is b without its first byte and
// its last trailer bytes.
func parseMessage(what string, b []byte, trailer int, types ...protowire.Type) ([]field, error) {
	if len(b) < minMessageSize {
		return nil, fmt.Errorf("%w: %s of %d bytes is too short", ErrInvalidMessage, what, len(b))
	}
	switch v := b[0] >> 4; {
	case v < Version:
		return nil, fmt.Errorf("%w: version %d", ErrLegacyVersion, v)
	case v > Version:
		return nil, fmt.Errorf("%w: version %d", ErrUnsupportedVersion, v)
	}
	f, err := lastValues(b[1:len(b)-trailer], types...)
	if err != nil {
		return nil, fmt.Errorf("%w: %s protobuf: %v", ErrInvalidMessage, what, err)
	}
	id := f[fieldDistributionID-1]
	if !id.seen || !f[fieldChainID-1].seen || !f[fieldIteration-1].seen {
		return nil, fmt.Errorf("%w: %s lacks a required field", ErrInvalidMessage, what)
	}
	if len(id.data) != len(DistributionID{}) {
		return nil, fmt.Errorf("%w: distribution id of %d bytes", ErrInvalidMessage, len(id.data))
	}
	return f, nil
}

// field is one field of a protobuf message, as read from the wire.
type field struct {
	num  protowire.Number
	typ  protowire.Type
	seen bool   // set by lastValues
	v    uint64 // a varint's value
	data []byte // a length-delimited field's contents
}

// fields iterates over the fields of a protobuf message. A field of a wire
// type other than varint and length-delimited is skipped over but still
// yielded, so that a decoder can refuse it for a field it knows. On a
// malformed encoding the iteration stops and *err is set.
func fields(b []byte, err *error) iter.Seq[field] {
	return func(yield func(field) bool) {
		for len(b) > 0 {
			var f field
			var n int
			if f.num, f.typ, n = protowire.ConsumeTag(b); n >= 0 {
				b = b[n:]
				switch f.typ {
				case protowire.VarintType:
					f.v, n = protowire.ConsumeVarint(b)
				case protowire.BytesType:
					f.data, n = protowire.ConsumeBytes(b)
				default:
					n = protowire.ConsumeFieldValue(f.num, f.typ, b)
				}
			}
			if n < 0 {
				*err = protowire.ParseError(n)
				return
			}
			b = b[n:]
			if !yield(f) {
				return
			}
		}
	}
}

// lastValues decodes a message whose known fields are numbered 1 to
// len(types), types[i] being the wire type of field i+1. It returns the
// last occurrence of each (seen is false for one that is absent).
func lastValues(b []byte, types ...protowire.Type) ([]field, error) {
	out := make([]field, len(types))
	var err error
	for f := range fields(b, &err) {
		if f.num < 1 || int(f.num) > len(types) {
			continue
		}
		if f.typ != types[f.num-1] {
			return nil, fmt.Errorf("field %d has wire type %d", f.num, f.typ)
		}
		f.seen = true
		out[f.num-1] = f
	}
	return out, err
}
