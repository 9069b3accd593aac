package senderkey

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// A Record survives its encoding: the sender's (with its private key) and a
// receiver's (several chains, skipped keys), and both carry on afterwards.
func TestRecordRoundTrip(t *testing.T) {
	s := newSender(t)
	r := s.receiver(t)
	other := newSender(t)
	r.Process(other.distribution(t))
	held := s.send(t, "held")
	s.send(t, "lost")
	mustDecrypt(t, r, s.send(t, "third"), "third")
	for _, rec := range []*Record{&s.rec, r, {}} {
		b := marshal(t, rec)
		var back Record
		if err := back.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(marshal(t, &back), b) || len(back.states) != len(rec.states) {
			t.Fatal("the encoding does not round-trip")
		}
		for i, st := range back.states {
			o := rec.states[i]
			if st.chainID != o.chainID || st.chain != o.chain || st.signing != o.signing ||
				st.CanSend() != o.CanSend() || (st.CanSend() && *st.private != *o.private) ||
				!slices.Equal(st.skipped, o.skipped) {
				t.Fatalf("state %d decodes differently", i)
			}
		}
		*rec = back
	}
	mustDecrypt(t, r, held, "held")
	mustDecrypt(t, r, s.send(t, "after"), "after")
	mustDecrypt(t, r, other.send(t, "other"), "other")
}

// The encoding is storage.proto's as prost writes it.
func TestRecordEncoding(t *testing.T) {
	st := &State{
		chainID: 0, // zero scalars are omitted
		chain:   ChainKey{Iteration: 2, Key: [32]byte{1}},
		skipped: []skippedKey{{0, [32]byte{2}}, {1, [32]byte{3}}},
	}
	st.signing[0] = 9
	b := marshal(t, &Record{states: []*State{st}})
	var want []byte
	chain := append([]byte{0x08, 0x02, 0x12, 0x20}, st.chain.Key[:]...)
	signing := append([]byte{0x0a, 0x21}, st.signing.Serialize()...)
	mk0 := append([]byte{0x12, 0x20}, st.skipped[0].seed[:]...) // iteration 0 omitted
	mk1 := append([]byte{0x08, 0x01, 0x12, 0x20}, st.skipped[1].seed[:]...)
	state := append([]byte{0x12, byte(len(chain))}, chain...)
	state = append(append(state, 0x1a, byte(len(signing))), signing...)
	state = append(append(state, 0x22, byte(len(mk0))), mk0...)
	state = append(append(state, 0x22, byte(len(mk1))), mk1...)
	state = append(state, 0x28, 0x03)
	want = append(protowire.AppendVarint(append(want, 0x0a), uint64(len(state))), state...) // 2-byte length
	if !bytes.Equal(b, want) {
		t.Fatalf("record encoding\n got %x\nwant %x", b, want)
	}
}

func TestRecordDecodingRules(t *testing.T) {
	s := newSender(t)
	own := marshal(t, &s.rec)
	ownState := stateBytes(t, own)
	// A state whose fields are given.
	state := func(fs ...[]byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, recStates, protowire.BytesType), bytes.Join(fs, nil))
	}
	field := func(num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
	}
	key := func(iteration byte, seed []byte) []byte {
		return append([]byte{0x08, iteration}, field(kvSeed, seed)...)
	}
	chain := field(stChainKey, key(1, make([]byte, 32)))
	signing := field(stSigningKey, field(kvPublic, s.rec.states[0].signing.Serialize()))
	seed := make([]byte, 32)
	var manyKeys [][]byte
	for range MaxMessageKeys + 1 {
		manyKeys = append(manyKeys, field(stMessageKeys, key(1, seed)))
	}
	// Accepted: unknown fields, version 0 (read as 3), iteration 0
	// omitted.
	for name, b := range map[string][]byte{
		"unknown fields": append(append(bytes.Clone(own), 0x18, 0x01), field(7, []byte("x"))...),
		"version 0":      state(chain, signing, []byte{0x28, 0x00}),
		"no version":     state(chain, signing),
		"2000 keys":      state(chain, signing, bytes.Join(manyKeys[1:], nil)),
	} {
		var r Record
		if err := r.UnmarshalBinary(b); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := map[string][]byte{
		"6 states":             bytes.Repeat(own, MaxStates+1),
		"2001 keys":            state(chain, signing, bytes.Join(manyKeys, nil)),
		"version 2":            state(chain, signing, []byte{0x28, 0x02}),
		"no chain key":         state(signing),
		"no signing key":       state(chain),
		"two chain keys":       state(chain, chain, signing),
		"two signing keys":     state(chain, signing, signing),
		"31-byte chain seed":   state(field(stChainKey, key(1, make([]byte, 31))), signing),
		"no chain seed":        state(field(stChainKey, []byte{0x08, 0x01}), signing),
		"33-byte message seed": state(chain, signing, field(stMessageKeys, key(1, make([]byte, 33)))),
		"32-byte public key":   state(chain, field(stSigningKey, field(kvPublic, make([]byte, 32)))),
		"31-byte private key":  state(chain, field(stSigningKey, append(field(kvPublic, s.rec.states[0].signing.Serialize()), field(kvPrivate, make([]byte, 31))...))),
		"chain id as bytes":    state(chain, signing, field(stChainID, []byte{1})),
		"states as varint":     {0x08, 0x01},
		"truncated":            own[:len(own)-1],
		"truncated state":      state(ownState[:len(ownState)-3]),
	}
	for name, b := range bad {
		r := Record{states: s.rec.states}
		if err := r.UnmarshalBinary(b); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("%s: %v", name, err)
		}
		if len(r.states) != 1 || r.states[0] != s.rec.states[0] {
			t.Errorf("%s: a failed UnmarshalBinary changed the Record", name)
		}
	}
}

// stateBytes returns the contents of the first state of an encoded record.
func stateBytes(t *testing.T, rec []byte) []byte {
	t.Helper()
	var err error
	for f := range fields(rec, &err) {
		return f.data
	}
	t.Fatal("no state", err)
	return nil
}

func FuzzUnmarshalRecord(f *testing.F) {
	s := newSender(f)
	r := s.receiver(f)
	s.send(f, "skipped")
	mustDecrypt(f, r, s.send(f, "x"), "x")
	f.Add(marshal(f, &s.rec))
	f.Add(marshal(f, r))
	f.Fuzz(func(t *testing.T, b []byte) {
		var rec Record
		if err := rec.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if len(rec.states) > MaxStates {
			t.Fatalf("%d states", len(rec.states))
		}
		enc := marshal(t, &rec)
		var again Record
		if err := again.UnmarshalBinary(enc); err != nil || !bytes.Equal(marshal(t, &again), enc) {
			t.Fatalf("re-encoding does not decode to the same: %v", err)
		}
		for _, st := range rec.states {
			if len(st.skipped) > MaxMessageKeys {
				t.Fatalf("%d skipped keys", len(st.skipped))
			}
		}
	})
}
