package senderkey

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/magpie-im/magpie/e2e/curve"
)

// State is one chain of a Record. It is immutable: a Record replaces its
// States rather than editing them, which is what makes Decrypt
// transactional.
type State struct {
	chainID uint32
	chain   ChainKey
	signing curve.PublicKey
	private *curve.PrivateKey // only on the chain's sender
	skipped []skippedKey      // oldest first, at most MaxMessageKeys
}

// skippedKey is the seed of a message not yet received on a chain.
type skippedKey struct {
	iteration uint32
	seed      [32]byte
}

// ChainID returns the chain's id.
func (s *State) ChainID() uint32 { return s.chainID }

// ChainKey returns the chain key of the next message to be sent, or
// received in order.
func (s *State) ChainKey() ChainKey { return s.chain }

// SigningKey returns the public key that the chain's messages are signed
// with.
func (s *State) SigningKey() curve.PublicKey { return s.signing }

// CanSend reports whether the State holds the private signing key, that is,
// whether this device is the chain's sender.
func (s *State) CanSend() bool { return s.private != nil }

// Skipped returns the iterations of the skipped messages whose keys the
// chain keeps, oldest first.
func (s *State) Skipped() []uint32 {
	out := make([]uint32, len(s.skipped))
	for i, k := range s.skipped {
		out[i] = k.iteration
	}
	return out
}

// Record is what one device knows of one sender device's chains for one
// distribution id, newest first. The zero Record is empty.
type Record struct {
	states []*State
}

// States returns the Record's chains, newest first.
func (r *Record) States() []*State { return slices.Clone(r.states) }

// Record encoding: libsignal's storage.proto SenderKeyRecordStructure
// (storage.proto:95-120), a proto3 message, written as prost writes it:
// fields in field-number order, and scalar fields equal to zero and empty
// bytes omitted. So a Record that Magpie and libsignal reached by the same
// steps encodes to the same bytes, and a record moves between the two.
//
//	SenderKeyRecordStructure { repeated SenderKeyStateStructure states = 1 }
//	SenderKeyStateStructure {
//	    uint32 chain_id = 1;
//	    SenderChainKey { uint32 iteration = 1; bytes seed = 2 } sender_chain_key = 2;
//	    SenderSigningKey { bytes public = 1; bytes private = 2 } sender_signing_key = 3;
//	    repeated SenderMessageKey { uint32 iteration = 1; bytes seed = 2 } sender_message_keys = 4;
//	    uint32 message_version = 5 }
//
// Decoding is stricter than prost's, since a record only ever comes from
// MarshalBinary (or libsignal): unknown fields are skipped, but at most
// MaxStates states and MaxMessageKeys message keys per state are accepted,
// every key must have its exact size, the chain key and the signing key
// must be present, once each, and the message version must be 3 (or 0,
// which libsignal reads as 3).
const (
	recStates = 1

	stChainID     = 1
	stChainKey    = 2
	stSigningKey  = 3
	stMessageKeys = 4
	stVersion     = 5

	// The fields of the three small messages inside a state.
	kvIteration = 1 // SenderChainKey, SenderMessageKey
	kvSeed      = 2
	kvPublic    = 1 // SenderSigningKey
	kvPrivate   = 2
)

func appendVarintField(b []byte, num protowire.Number, v uint32) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// appendKey appends a SenderChainKey or SenderMessageKey as field num.
func appendKey(b []byte, num protowire.Number, iteration uint32, seed []byte) []byte {
	inner := appendVarintField(make([]byte, 0, 40), kvIteration, iteration)
	return appendBytesField(b, num, appendBytesField(inner, kvSeed, seed))
}

// MarshalBinary encodes the Record. It contains chain keys (and, on the
// sender, the private signing key): store it as the secret it is.
func (r *Record) MarshalBinary() ([]byte, error) {
	var b []byte
	for _, s := range r.states {
		st := appendVarintField(make([]byte, 0, 128+40*len(s.skipped)), stChainID, s.chainID)
		st = appendKey(st, stChainKey, s.chain.Iteration, s.chain.Key[:])
		signing := appendBytesField(nil, kvPublic, s.signing.Serialize())
		if s.private != nil {
			signing = appendBytesField(signing, kvPrivate, s.private[:])
		}
		st = appendBytesField(st, stSigningKey, signing)
		for _, k := range s.skipped {
			st = appendKey(st, stMessageKeys, k.iteration, k.seed[:])
		}
		st = appendVarintField(st, stVersion, Version)
		b = appendBytesField(b, recStates, st)
	}
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary (or libsignal's
// SenderKeyRecord.serialize) produced, replacing r's contents. On error r
// is unchanged.
func (r *Record) UnmarshalBinary(data []byte) error {
	var states []*State
	var err error
	for f := range fields(data, &err) {
		if f.num != recStates {
			continue
		}
		if f.typ != protowire.BytesType {
			return fmt.Errorf("%w: states of wire type %d", ErrInvalidRecord, f.typ)
		}
		if len(states) == MaxStates {
			return fmt.Errorf("%w: more than %d states", ErrInvalidRecord, MaxStates)
		}
		s, err := decodeState(f.data)
		if err != nil {
			return fmt.Errorf("%w: state %d: %v", ErrInvalidRecord, len(states), err)
		}
		states = append(states, s)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidRecord, err)
	}
	r.states = states
	return nil
}

func decodeState(b []byte) (*State, error) {
	s := &State{}
	var haveChain, haveSigning bool
	var err error
	for f := range fields(b, &err) {
		want := protowire.BytesType
		switch f.num {
		case stChainID, stVersion:
			want = protowire.VarintType
		case stChainKey, stSigningKey, stMessageKeys:
		default:
			continue
		}
		if f.typ != want {
			return nil, fmt.Errorf("field %d has wire type %d", f.num, f.typ)
		}
		switch f.num {
		case stChainID:
			s.chainID = uint32(f.v)
		case stVersion:
			if v := uint32(f.v); v != 0 && v != Version {
				return nil, fmt.Errorf("message version %d", v)
			}
		case stChainKey:
			if haveChain {
				return nil, fmt.Errorf("two chain keys")
			}
			haveChain = true
			if s.chain.Iteration, s.chain.Key, err = decodeKey(f.data); err != nil {
				return nil, fmt.Errorf("chain key: %v", err)
			}
		case stMessageKeys:
			if len(s.skipped) == MaxMessageKeys {
				return nil, fmt.Errorf("more than %d message keys", MaxMessageKeys)
			}
			var k skippedKey
			if k.iteration, k.seed, err = decodeKey(f.data); err != nil {
				return nil, fmt.Errorf("message key: %v", err)
			}
			s.skipped = append(s.skipped, k)
		case stSigningKey:
			if haveSigning {
				return nil, fmt.Errorf("two signing keys")
			}
			haveSigning = true
			if err = s.decodeSigningKey(f.data); err != nil {
				return nil, err
			}
		}
	}
	if err != nil {
		return nil, err
	}
	if !haveChain || !haveSigning {
		return nil, fmt.Errorf("no chain key or no signing key")
	}
	return s, nil
}

// decodeKey decodes a SenderChainKey or a SenderMessageKey.
func decodeKey(b []byte) (uint32, [32]byte, error) {
	f, err := lastValues(b, protowire.VarintType, protowire.BytesType)
	if err != nil {
		return 0, [32]byte{}, err
	}
	seed := f[kvSeed-1].data
	if len(seed) != 32 {
		return 0, [32]byte{}, fmt.Errorf("seed of %d bytes", len(seed))
	}
	return uint32(f[kvIteration-1].v), [32]byte(seed), nil
}

func (s *State) decodeSigningKey(b []byte) error {
	f, err := lastValues(b, protowire.BytesType, protowire.BytesType)
	if err != nil {
		return err
	}
	if s.signing, err = curve.ParsePublicKey(f[kvPublic-1].data); err != nil {
		return fmt.Errorf("signing key: %v", err)
	}
	switch priv := f[kvPrivate-1].data; len(priv) {
	case 0:
	case curve.KeySize:
		k := curve.PrivateKey(priv)
		s.private = &k
	default:
		return fmt.Errorf("private signing key of %d bytes", len(priv))
	}
	return nil
}
