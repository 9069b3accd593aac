package ratchet

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/magpie-im/magpie/e2e/curve"
)

// The encodings put the fields libsignal sets in ascending field-number
// order (prost), with nothing else.
func TestWireFieldOrder(t *testing.T) {
	p := newPair(t, true)
	m := encrypt(t, p.a, &p.aRec, "hello")
	if m.ct[0] != 0x44 {
		t.Fatalf("version byte %#x, want 0x44", m.ct[0])
	}
	fieldNums := func(b []byte) (nums []protowire.Number) {
		err := walkFields(b, func(num protowire.Number, _ protowire.Type, _ uint64, _ []byte) error {
			nums = append(nums, num)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return nums
	}
	if got := fmt.Sprint(fieldNums(m.ct[1:])); got != "[1 2 3 4 5 6 7 8]" {
		t.Fatalf("PreKeySignalMessage fields %s", got)
	}
	pk, err := parsePreKeySignalMessage(m.ct)
	if err != nil {
		t.Fatal(err)
	}
	if len(pk.kyberCiphertext) != 1569 {
		t.Fatalf("Kyber ciphertext of %d bytes, want 1569", len(pk.kyberCiphertext))
	}
	inner := pk.message.serialized
	if inner[0] != 0x44 {
		t.Fatalf("inner version byte %#x", inner[0])
	}
	if got := fmt.Sprint(fieldNums(inner[1 : len(inner)-macLen])); got != "[1 2 3 4]" {
		t.Fatalf("SignalMessage fields %s", got)
	}
	// Without a one-time pre-key, field 1 is absent.
	p2 := newPair(t, false)
	m2 := encrypt(t, p2.a, &p2.aRec, "hello")
	if got := fmt.Sprint(fieldNums(m2.ct[1:])); got != "[2 3 4 5 6 7 8]" {
		t.Fatalf("PreKeySignalMessage without one-time pre-key: fields %s", got)
	}
	// previous_counter 0 is still written (proto2 presence).
	if !bytes.Contains(inner, []byte{0x18, 0x00}) {
		t.Fatal("previous_counter = 0 is not encoded")
	}
}

func TestWireDecodingRules(t *testing.T) {
	key := mustKeyPair(t).Public
	body := encodeSignalMessage(4, key, 7, 3, make([]byte, 16))
	withMAC := func(b []byte) []byte { return append(b, make([]byte, macLen)...) }
	// Unknown fields (varint, fixed64, bytes, fixed32) are skipped.
	extra := bytes.Clone(body)
	extra = protowire.AppendTag(extra, 9, protowire.VarintType)
	extra = protowire.AppendVarint(extra, 5)
	extra = protowire.AppendTag(extra, 10, protowire.Fixed64Type)
	extra = protowire.AppendFixed64(extra, 5)
	extra = protowire.AppendTag(extra, 11, protowire.BytesType)
	extra = protowire.AppendBytes(extra, []byte("x"))
	extra = protowire.AppendTag(extra, 12, protowire.Fixed32Type)
	extra = protowire.AppendFixed32(extra, 5)
	m, err := parseSignalMessage(withMAC(extra))
	if err != nil || m.counter != 7 || m.previousCounter != 3 || m.ratchetKey != key {
		t.Fatalf("unknown fields: %+v, %v", m, err)
	}
	// A repeated scalar keeps the last value; a wide varint is truncated.
	rep := protowire.AppendTag(bytes.Clone(body), smCounter, protowire.VarintType)
	rep = protowire.AppendVarint(rep, 1<<32+9)
	if m, err := parseSignalMessage(withMAC(rep)); err != nil || m.counter != 9 {
		t.Fatalf("repeated counter: %+v, %v", m, err)
	}
	bad := map[string][]byte{
		"wrong wire type": protowire.AppendVarint(protowire.AppendTag(bytes.Clone(body), smCiphertext, protowire.VarintType), 1),
		"truncated field": append(bytes.Clone(body), 0x22, 0x05, 0x01),
		"no ciphertext":   encodeWithout(t, body, smCiphertext),
		"no counter":      encodeWithout(t, body, smCounter),
		"no ratchet key":  encodeWithout(t, body, smRatchetKey),
		"field zero":      append(bytes.Clone(body), 0x00, 0x00),
	}
	for name, b := range bad {
		if _, err := parseSignalMessage(withMAC(b)); !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// previous_counter is optional.
	if m, err := parseSignalMessage(withMAC(encodeWithout(t, body, smPreviousCounter))); err != nil || m.previousCounter != 0 {
		t.Errorf("no previous_counter: %v", err)
	}
	// Kyber fields: both or neither, and neither only below version 4.
	inner := withMAC(body)
	full := encodePreKeySignalMessage(4, 1, nil, 2, 3, []byte{8, 1}, key, key, inner)
	if _, err := parsePreKeySignalMessage(full); err != nil {
		t.Fatal(err)
	}
	for _, drop := range []protowire.Number{pkKyberPreKeyID, pkKyberCiphertext, pkSignedPreKeyID, pkBaseKey, pkIdentityKey, pkMessage} {
		b := append([]byte{full[0]}, encodeWithout(t, full, drop)[1:]...)
		if _, err := parsePreKeySignalMessage(b); !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("PreKeySignalMessage without field %d: %v", drop, err)
		}
	}
	if _, err := parsePreKeySignalMessage(append([]byte{full[0]}, encodeWithout(t, full, pkRegistrationID)[1:]...)); err != nil {
		t.Errorf("registration_id is optional: %v", err)
	}
	// A key with another type byte, or trailing bytes, is refused.
	badKey := append([]byte{0x44}, protowire.AppendBytes(protowire.AppendTag(nil, smRatchetKey, protowire.BytesType), append([]byte{0x06}, key[:]...))...)
	badKey = append(badKey, body[1+35:]...)
	if _, err := parseSignalMessage(withMAC(badKey)); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("key type 6: %v", err)
	}
}

// encodeWithout returns b (version byte + protobuf) without field num.
func encodeWithout(t *testing.T, b []byte, num protowire.Number) []byte {
	t.Helper()
	out := []byte{b[0]}
	err := walkFields(b[1:], func(n protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
		if n == num {
			return nil
		}
		out = protowire.AppendTag(out, n, typ)
		if typ == protowire.VarintType {
			out = protowire.AppendVarint(out, v)
		} else {
			out = protowire.AppendBytes(out, bs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var genFuzzSeeds = flag.Bool("gen-fuzz-seeds", false, "write the fuzz seed corpus to testdata/fuzz")

// TestGenerateFuzzSeeds writes real messages and records as seeds when run
// with -gen-fuzz-seeds.
func TestGenerateFuzzSeeds(t *testing.T) {
	if !*genFuzzSeeds {
		t.Skip("run with -gen-fuzz-seeds to regenerate testdata/fuzz")
	}
	p := newPair(t, true)
	pre := encrypt(t, p.a, &p.aRec, "seed prekey message")
	recA, _ := p.aRec.MarshalBinary()
	decrypt(t, p.b, &p.bRec, pre)
	w := encrypt(t, p.b, &p.bRec, "seed whisper message")
	decrypt(t, p.a, &p.aRec, w)
	for range 3 {
		encrypt(t, p.a, &p.aRec, "skipped")
	}
	decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &p.aRec, "x"))
	recB, _ := p.bRec.MarshalBinary()
	write := func(target, name string, data []byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("FuzzParseSignalMessage", "whisper", w.ct)
	write("FuzzParseSignalMessage", "short", w.ct[:9])
	write("FuzzParsePreKeySignalMessage", "prekey", pre.ct)
	write("FuzzParsePreKeySignalMessage", "version3", append([]byte{0x33}, pre.ct[1:]...))
	write("FuzzUnmarshalRecord", "alice-pending", recA)
	write("FuzzUnmarshalRecord", "bob-skipped", recB)
	write("FuzzUnmarshalRecord", "empty", []byte("MGSR\x01\x00\x00"))
}

func FuzzParseSignalMessage(f *testing.F) {
	f.Add([]byte{0x44, 0x0a, 0x21, 0x05})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseSignalMessage(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidMessage) && !errors.Is(err, ErrLegacyVersion) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if m.version < 3 || m.version > 4 || len(m.serialized) != len(b) {
			t.Fatalf("parsed %+v", m)
		}
		// Re-encoding the parsed fields parses to the same fields.
		re := append(encodeSignalMessage(m.version, m.ratchetKey, m.counter, m.previousCounter, m.ciphertext), make([]byte, macLen)...)
		m2, err := parseSignalMessage(re)
		if err != nil || m2.counter != m.counter || m2.ratchetKey != m.ratchetKey || !bytes.Equal(m2.ciphertext, m.ciphertext) {
			t.Fatalf("re-encoding: %v", err)
		}
	})
}

func FuzzParsePreKeySignalMessage(f *testing.F) {
	f.Add([]byte{0x44})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parsePreKeySignalMessage(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidMessage) && !errors.Is(err, ErrLegacyVersion) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if m.message == nil || (m.version == 4 && !m.hasKyber) {
			t.Fatalf("parsed %+v", m)
		}
		re := encodePreKeySignalMessage(m.version, m.registrationID, m.preKeyID, m.signedPreKeyID, m.kyberPreKeyID, m.kyberCiphertext, m.baseKey, m.identityKey, m.message.serialized)
		if m.hasKyber {
			m2, err := parsePreKeySignalMessage(re)
			if err != nil || m2.baseKey != m.baseKey || m2.identityKey != m.identityKey || !bytes.Equal(m2.message.serialized, m.message.serialized) {
				t.Fatalf("re-encoding: %v", err)
			}
		}
	})
}

func FuzzUnmarshalRecord(f *testing.F) {
	f.Add([]byte("MGSR\x01\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		if err := r.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		out, err := r.MarshalBinary()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("a decoded record does not re-encode to its input (%v)", err)
		}
		// Using a decoded record never panics.
		var id IdentityKeyPair
		_, _, _ = r.Encrypt(id, []byte("x"), nil)
		_, _, _ = r.Decrypt(id, 1, &device{}, WhisperMessage, append(encodeSignalMessage(4, curve.PublicKey{9}, 1, 0, make([]byte, 16)), make([]byte, macLen)...))
	})
}

// previous_counter is the index of the last message sent on the sending
// chain that a DH ratchet step replaces, or 0 if none was sent on it
// (libsignal session_cipher.rs:720-726: max(index, 1) - 1). Magpie does
// not read it, but libsignal clients see what Magpie writes.
func TestPreviousCounterIsTheOldChainsLastIndex(t *testing.T) {
	p := newPair(t, true)
	prev := func(m sealed) uint32 {
		t.Helper()
		sm, err := parseMessageOfType(m.typ, m.ct)
		if err != nil {
			t.Fatal(err)
		}
		return sm.previousCounter
	}
	var fromA []sealed
	for i := range 4 {
		fromA = append(fromA, encrypt(t, p.a, &p.aRec, msg(i)))
	}
	if got := prev(fromA[3]); got != 0 {
		t.Fatalf("Alice's first chain: previous_counter %d, want 0", got)
	}
	decrypt(t, p.b, &p.bRec, fromA[0])
	// Bob had sent nothing on the chain his first ratchet step replaced.
	var fromB []sealed
	for i := range 3 {
		fromB = append(fromB, encrypt(t, p.b, &p.bRec, msg(10+i)))
	}
	if got := prev(fromB[0]); got != 0 {
		t.Fatalf("Bob, nothing sent before the step: previous_counter %d, want 0", got)
	}
	for _, m := range fromB {
		decrypt(t, p.a, &p.aRec, m)
	}
	// Alice sent counters 0 to 3 on the chain she leaves.
	m := encrypt(t, p.a, &p.aRec, "after Bob's replies")
	if got := prev(m); got != 3 {
		t.Fatalf("Alice after sending 4: previous_counter %d, want 3", got)
	}
	decrypt(t, p.b, &p.bRec, m)
	// Bob sent counters 0 to 2.
	if got := prev(encrypt(t, p.b, &p.bRec, "again")); got != 2 {
		t.Fatalf("Bob after sending 3: previous_counter %d, want 2", got)
	}
}

// The version rule of libsignal's decoders (protocol.rs:214-224): below 3
// is refused as legacy before anything else, while a version-3 message is
// decoded like a version-4 one (a malformed one is an invalid message, as
// libsignal's InvalidProtobufEncoding) and refused as legacy only by the
// session.
func TestVersionThreeIsDecodedBeforeItIsRefused(t *testing.T) {
	key := mustKeyPair(t).Public
	good := append(encodeSignalMessage(4, key, 1, 0, make([]byte, 16)), make([]byte, macLen)...)
	withVersion := func(b []byte, v byte) []byte { b = bytes.Clone(b); b[0] = v; return b }
	malformed := append([]byte{0x44, 0x0a, 0x21}, make([]byte, macLen)...) // a ratchet key cut short
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"version 3, well-formed", withVersion(good, 0x34), nil},
		{"version 3, malformed", withVersion(malformed, 0x34), ErrInvalidMessage},
		{"version 2, well-formed", withVersion(good, 0x24), ErrLegacyVersion},
		{"version 2, malformed", withVersion(malformed, 0x24), ErrLegacyVersion},
	}
	for _, c := range cases {
		m, err := parseSignalMessage(c.b)
		if c.want == nil {
			if err != nil || m.version != 3 {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if !errors.Is(err, c.want) || (c.want == ErrInvalidMessage && errors.Is(err, ErrLegacyVersion)) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// The session refuses the well-formed one as legacy.
	p := newPair(t, true)
	mustFail(t, p.b, &p.bRec, WhisperMessage, withVersion(good, 0x34), ErrLegacyVersion)
}

// pq_ratchet (field 5) is bytes: it is ignored when it is (Magpie does not
// run SPQR; the MAC still covers it), and a message with it under another
// wire type is malformed, as for prost.
func TestPQRatchetFieldIsIgnoredButTyped(t *testing.T) {
	key := mustKeyPair(t).Public
	body := encodeSignalMessage(4, key, 7, 3, make([]byte, 16))
	withMAC := func(b []byte) []byte { return append(b, make([]byte, macLen)...) }
	asBytes := protowire.AppendBytes(protowire.AppendTag(bytes.Clone(body), smPQRatchet, protowire.BytesType), []byte("spqr"))
	if m, err := parseSignalMessage(withMAC(asBytes)); err != nil || m.counter != 7 || string(m.pqRatchet) != "spqr" {
		t.Fatalf("pq_ratchet as bytes: %+v, %v", m, err)
	}
	asVarint := protowire.AppendVarint(protowire.AppendTag(bytes.Clone(body), smPQRatchet, protowire.VarintType), 1)
	if _, err := parseSignalMessage(withMAC(asVarint)); !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("pq_ratchet as a varint: %v, want ErrInvalidMessage", err)
	}
}

// A PreKeySignalMessage carries a Kyber pre-key from version 4 on
// (protocol.rs:383-453): a version-4 one with neither Kyber field is
// malformed, while a version-3 one without them decodes and is refused as
// legacy by the session.
func TestKyberFieldsRequiredFromVersionFour(t *testing.T) {
	key := mustKeyPair(t).Public
	inner := append(encodeSignalMessage(4, key, 0, 0, make([]byte, 16)), make([]byte, macLen)...)
	full := encodePreKeySignalMessage(4, 1, nil, 2, 3, []byte{8, 1}, key, key, inner)
	noKyber := encodeWithout(t, encodeWithout(t, full, pkKyberPreKeyID), pkKyberCiphertext)
	if _, err := parsePreKeySignalMessage(noKyber); !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("version 4 without Kyber: %v, want ErrInvalidMessage", err)
	}
	v3 := append([]byte{0x33}, noKyber[1:]...)
	m, err := parsePreKeySignalMessage(v3)
	if err != nil || m.version != 3 || m.hasKyber {
		t.Fatalf("version 3 without Kyber: %+v, %v", m, err)
	}
	b := newDevice(t, "bob", 2, 200, true)
	var rec Record
	mustFail(t, b, &rec, PreKeyMessage, v3, ErrLegacyVersion)
}
