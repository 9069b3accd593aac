package senderkey

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/magpie-im/magpie/e2e/curve"
)

func testDistribution() DistributionMessage {
	m := DistributionMessage{ChainID: 0x7fffffff, Iteration: 300}
	for i := range m.DistributionID {
		m.DistributionID[i] = byte(0xd0 + i)
	}
	for i := range m.ChainKey {
		m.ChainKey[i] = byte(i)
		m.SigningKey[i] = byte(0x80 + i)
	}
	return m
}

// The encodings, byte for byte: 0x33, then every field in field-number
// order, zero values included (proto2 presence).
func TestWireEncoding(t *testing.T) {
	m := testDistribution()
	want := []byte{0x33, 0x0a, 0x10}
	want = append(want, m.DistributionID[:]...)
	want = append(want, 0x10, 0xff, 0xff, 0xff, 0xff, 0x07) // chain_id 2^31-1
	want = append(want, 0x18, 0xac, 0x02)                   // iteration 300
	want = append(want, 0x22, 0x20)
	want = append(want, m.ChainKey[:]...)
	want = append(want, 0x2a, 0x21, 0x05)
	want = append(want, m.SigningKey[:]...)
	if got := m.Marshal(); !bytes.Equal(got, want) {
		t.Fatalf("DistributionMessage encoding\n got %x\nwant %x", got, want)
	}
	m.ChainID, m.Iteration = 0, 0
	if got := m.Marshal(); !bytes.Equal(got[19:23], []byte{0x10, 0x00, 0x18, 0x00}) {
		t.Fatalf("chain id and iteration 0 are not written: %x", got[19:23])
	}

	kp, err := curve.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	msg := signMessage(m.DistributionID, 5, 0, []byte("sixteen bytes!!!"), kp.Private, [64]byte{})
	want = append([]byte{0x33, 0x0a, 0x10}, m.DistributionID[:]...)
	want = append(want, 0x10, 0x05, 0x18, 0x00, 0x22, 0x10)
	want = append(want, "sixteen bytes!!!"...)
	if len(msg) != len(want)+SignatureSize || !bytes.Equal(msg[:len(want)], want) {
		t.Fatalf("Message encoding\n got %x\nwant %x‖signature", msg, want)
	}
	p, err := ParseMessage(msg)
	if err != nil || !p.VerifySignature(kp.Public) || !bytes.Equal(p.Bytes(), msg) {
		t.Fatalf("the signature does not cover the message: %v", err)
	}
}

// Decoding follows prost and libsignal's checks (protocol.rs:548-594,
// :682-740).
func TestWireDecodingRules(t *testing.T) {
	good := testDistribution()
	enc := good.Marshal()
	if m, err := ParseDistributionMessage(enc); err != nil || m != good {
		t.Fatalf("round trip: %+v, %v", m, err)
	}
	// Unknown fields of every wire type are skipped; a repeated field
	// keeps its last value; a wide varint is truncated to 32 bits; the low
	// nibble of the version byte is ignored.
	extra := bytes.Clone(enc)
	extra = protowire.AppendVarint(protowire.AppendTag(extra, 9, protowire.VarintType), 5)
	extra = protowire.AppendFixed64(protowire.AppendTag(extra, 10, protowire.Fixed64Type), 5)
	extra = protowire.AppendBytes(protowire.AppendTag(extra, 11, protowire.BytesType), []byte("x"))
	extra = protowire.AppendFixed32(protowire.AppendTag(extra, 12, protowire.Fixed32Type), 5)
	extra = protowire.AppendVarint(protowire.AppendTag(extra, fieldIteration, protowire.VarintType), 1<<32+7)
	extra[0] = 0x3f
	want := good
	want.Iteration = 7
	if m, err := ParseDistributionMessage(extra); err != nil || m != want {
		t.Fatalf("prost's rules: %+v, %v", m, err)
	}
	short := []byte{0x10, 0x01}
	for name, tc := range map[string]struct {
		b   []byte
		err error
	}{
		"empty":               {nil, ErrInvalidMessage},
		"64 bytes":            {enc[:64], ErrInvalidMessage},
		"version 2":           {append([]byte{0x23}, enc[1:]...), ErrLegacyVersion},
		"version 4":           {append([]byte{0x43}, enc[1:]...), ErrUnsupportedVersion},
		"truncated field":     {append(bytes.Clone(enc), 0x22, 0x05, 0x01), ErrInvalidMessage},
		"field zero":          {append(bytes.Clone(enc), 0x00, 0x00), ErrInvalidMessage},
		"wrong wire type":     {protowire.AppendVarint(protowire.AppendTag(bytes.Clone(enc), fieldChainKey, protowire.VarintType), 1), ErrInvalidMessage},
		"no distribution id":  {without(t, enc, 0, fieldDistributionID), ErrInvalidMessage},
		"no chain id":         {without(t, enc, 0, fieldChainID), ErrInvalidMessage},
		"no iteration":        {without(t, enc, 0, fieldIteration), ErrInvalidMessage},
		"no chain key":        {without(t, enc, 0, fieldChainKey), ErrInvalidMessage},
		"no signing key":      {without(t, enc, 0, fieldSigningKey), ErrInvalidMessage},
		"15-byte id":          {replaced(t, enc, 0, fieldDistributionID, make([]byte, 15)), ErrInvalidMessage},
		"17-byte id":          {replaced(t, enc, 0, fieldDistributionID, make([]byte, 17)), ErrInvalidMessage},
		"31-byte chain key":   {replaced(t, enc, 0, fieldChainKey, make([]byte, 31)), ErrInvalidMessage},
		"33-byte chain key":   {replaced(t, enc, 0, fieldChainKey, make([]byte, 33)), ErrInvalidMessage},
		"32-byte signing key": {replaced(t, enc, 0, fieldSigningKey, good.SigningKey[:]), ErrInvalidMessage},
		"34-byte signing key": {replaced(t, enc, 0, fieldSigningKey, append(good.SigningKey.Serialize(), 0)), ErrInvalidMessage},
		"signing key type 6":  {replaced(t, enc, 0, fieldSigningKey, append([]byte{6}, good.SigningKey[:]...)), ErrInvalidMessage},
		"only a chain id":     {append([]byte{0x33}, bytes.Repeat(short, 33)...), ErrInvalidMessage},
	} {
		if _, err := ParseDistributionMessage(tc.b); !errors.Is(err, tc.err) {
			t.Errorf("DistributionMessage, %s: %v, want %v", name, err, tc.err)
		}
	}

	kp, err := curve.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	msg := signMessage(good.DistributionID, 9, 4, make([]byte, 32), kp.Private, [64]byte{})
	m, err := ParseMessage(msg)
	if err != nil || m.DistributionID != good.DistributionID || m.ChainID != 9 || m.Iteration != 4 || len(m.Ciphertext) != 32 {
		t.Fatalf("Message round trip: %+v, %v", m, err)
	}
	sig := msg[len(msg)-SignatureSize:]
	body := msg[:len(msg)-SignatureSize]
	withSig := func(b []byte) []byte { return append(bytes.Clone(b), sig...) }
	for name, tc := range map[string]struct {
		b   []byte
		err error
	}{
		"empty":              {nil, ErrInvalidMessage},
		"signature only":     {append([]byte{0x33}, sig...), ErrInvalidMessage},
		"64 bytes":           {msg[:64], ErrInvalidMessage},
		"version 2":          {append([]byte{0x23}, msg[1:]...), ErrLegacyVersion},
		"version 15":         {append([]byte{0xf3}, msg[1:]...), ErrUnsupportedVersion},
		"no distribution id": {withSig(without(t, body, 0, fieldDistributionID)), ErrInvalidMessage},
		"no chain id":        {withSig(without(t, body, 0, fieldChainID)), ErrInvalidMessage},
		"no iteration":       {withSig(without(t, body, 0, fieldIteration)), ErrInvalidMessage},
		"no ciphertext":      {withSig(without(t, body, 0, fieldCiphertext)), ErrInvalidMessage},
		"16-byte id as 4":    {withSig(replaced(t, body, 0, fieldDistributionID, []byte("uuid"))), ErrInvalidMessage},
		"truncated":          {msg[:len(msg)-1], ErrInvalidMessage},
	} {
		if _, err := ParseMessage(tc.b); !errors.Is(err, tc.err) {
			t.Errorf("Message, %s: %v, want %v", name, err, tc.err)
		}
	}
	// An empty ciphertext parses (libsignal refuses it only when
	// decrypting, after the signature).
	if m, err := ParseMessage(withSig(replaced(t, body, 0, fieldCiphertext, nil))); err != nil || len(m.Ciphertext) != 0 {
		t.Fatalf("empty ciphertext: %v", err)
	}
}

// without re-encodes a protobuf (after skip leading bytes) with field num
// left out.
func without(t *testing.T, b []byte, skip int, num protowire.Number) []byte {
	t.Helper()
	return rewrite(t, b, skip, num, nil, false)
}

// replaced re-encodes it with field num's contents replaced.
func replaced(t *testing.T, b []byte, skip int, num protowire.Number, v []byte) []byte {
	t.Helper()
	return rewrite(t, b, skip, num, v, true)
}

func rewrite(t *testing.T, b []byte, skip int, num protowire.Number, v []byte, keep bool) []byte {
	t.Helper()
	out := bytes.Clone(b[:skip+1])
	var err error
	for f := range fields(b[skip+1:], &err) {
		switch {
		case f.num == num && keep:
			out = protowire.AppendBytes(protowire.AppendTag(out, num, protowire.BytesType), v)
		case f.num == num:
		case f.typ == protowire.VarintType:
			out = protowire.AppendVarint(protowire.AppendTag(out, f.num, f.typ), f.v)
		default:
			out = protowire.AppendBytes(protowire.AppendTag(out, f.num, f.typ), f.data)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}
