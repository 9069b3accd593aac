package natsbus

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/router"
	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/username"
)

func sampleMessages() [][]byte {
	sent := time.Unix(1_700_000_000, 123456789)
	e := &router.Ephemeral{From: store.DeviceAddr{User: "alice", Device: 3}, ClientID: [16]byte{1, 2, 3}, Payload: []byte("typing"), Sent: sent}
	g := *e
	g.Group = [16]byte{9, 9}
	pd := *e
	pd.Payload, pd.Payloads = nil, map[uint32][]byte{1: []byte("one"), 7: {}}
	bob := store.DeviceAddr{User: "bob", Device: 2}
	push, _ := encodePush(42, bob, router.Push{Ephemeral: &g})
	keys, _ := encodePush(42, bob, router.Push{KeysLow: &store.KeyCounts{PreKeys: 3, KyberPreKeys: 1}})
	return [][]byte{
		encodeWake(42, "bob", []uint32{1, 2, 1 << 31}),
		encodeAttached(42, bob, router.Handshake{Began: time.Unix(1700000000, 23456789), Done: time.Unix(1700000000, 123456789), Attempt: 1<<62 + 5}),
		encodeEphemeral(42, "bob", e),
		encodeEphemeral(42, "bob", &pd),
		push, keys,
		encodeRecheck(42),
	}
}

func TestCodecRoundTrip(t *testing.T) {
	sent := time.Unix(1_700_000_000, 123456789)
	alice := store.DeviceAddr{User: "alice", Device: 3}
	want := []*message{
		{kind: kindWake, node: 42, user: "bob", devices: []uint32{1, 2, 1 << 31}},
		{kind: kindAttached, node: 42, user: "bob", devices: []uint32{2}, hs: router.Handshake{Began: time.Unix(1700000000, 23456789), Done: sent, Attempt: 1<<62 + 5}},
		{kind: kindEphemeral, node: 42, user: "bob", eph: &router.Ephemeral{From: alice, ClientID: [16]byte{1, 2, 3}, Payload: []byte("typing"), Sent: sent}},
		{kind: kindEphemeral, node: 42, user: "bob", eph: &router.Ephemeral{From: alice, ClientID: [16]byte{1, 2, 3}, Payloads: map[uint32][]byte{1: []byte("one"), 7: {}}, Sent: sent}},
		{kind: kindPush, node: 42, user: "bob", devices: []uint32{2}, eph: &router.Ephemeral{From: alice, ClientID: [16]byte{1, 2, 3}, Payload: []byte("typing"), Sent: sent, Group: [16]byte{9, 9}}},
		{kind: kindPush, node: 42, user: "bob", devices: []uint32{2}, keys: &store.KeyCounts{PreKeys: 3, KyberPreKeys: 1}},
		{kind: kindRecheck, node: 42},
	}
	for i, data := range sampleMessages() {
		m, err := decode(data)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !m.hs.Began.Equal(want[i].hs.Began) || !m.hs.Done.Equal(want[i].hs.Done) || m.hs.Attempt != want[i].hs.Attempt {
			t.Fatalf("%d: handshake %v, want %v", i, m.hs, want[i].hs)
		}
		m.hs = want[i].hs
		if m.eph != nil {
			if !m.eph.Sent.Equal(want[i].eph.Sent) {
				t.Fatalf("%d: sent %v, want %v", i, m.eph.Sent, want[i].eph.Sent)
			}
			m.eph.Sent = want[i].eph.Sent
		}
		if !reflect.DeepEqual(m, want[i]) {
			t.Fatalf("%d: decoded %+v\nwant %+v", i, m, want[i])
		}
		// Every truncation, and trailing garbage, is refused; but for the
		// one at the end of what an older node sends (no dial attempt).
		for n := range len(data) {
			if m.kind == kindAttached && n == len(data)-binary.PutUvarint(make([]byte, 10), want[i].hs.Attempt) {
				if old, err := decode(data[:n]); err != nil || old.hs.Attempt != 0 || !old.hs.Done.Equal(sent) {
					t.Fatalf("%d: an older node's attached message: %+v, %v", i, old, err)
				}
				continue
			}
			if _, err := decode(data[:n]); err == nil {
				t.Fatalf("%d: decoded a message cut to %d of %d bytes", i, n, len(data))
			}
		}
		if _, err := decode(append(data[:len(data):len(data)], 0)); err == nil {
			t.Fatalf("%d: decoded a message with a trailing byte", i)
		}
	}
}

func TestCodecRefuses(t *testing.T) {
	for name, data := range map[string][]byte{
		"bad user":       encodeWake(1, "bo.b", []uint32{1}),
		"no user":        encodeWake(1, "", []uint32{1}),
		"no devices":     encodeWake(1, "bob", nil),
		"long user":      encodeAttached(1, store.DeviceAddr{User: "a234567890123456789012345678901234", Device: 1}, router.Handshake{}),
		"other version":  append([]byte{2}, encodeRecheck(1)[1:]...),
		"unknown kind":   appendHeader(nil, 99, 1, "bob"),
		"user recheck":   appendHeader(nil, kindRecheck, 1, "bob"),
		"too many":       appendHeader(nil, kindWake, 1, "bob"),
		"too large":      make([]byte, maxMessage+1),
		"big payload":    encodeEphemeral(1, "bob", &router.Ephemeral{From: store.DeviceAddr{User: "al", Device: 1}, Payload: make([]byte, maxPayload+1)}),
		"bad from":       encodeEphemeral(1, "bob", &router.Ephemeral{From: store.DeviceAddr{User: "al ice", Device: 1}}),
		"device > 2^32":  append(appendHeader(nil, kindAttached, 1, "bob"), 0x80, 0x80, 0x80, 0x80, 0x10),
		"push sub-kind":  append(append(appendHeader(nil, kindPush, 1, "bob"), 1), 7),
		"empty":          nil,
		"header only":    {version},
		"count too high": append(appendHeader(nil, kindWake, 1, "bob"), 0x81, 0x40),
	} {
		if _, err := decode(data); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// FuzzDecode: no input makes decode panic or keep more than it was given,
// and what it accepts encodes back to an equal message.
func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decode(data)
		if err != nil {
			return
		}
		var again []byte
		switch m.kind {
		case kindWake:
			again = encodeWake(m.node, m.user, m.devices)
		case kindAttached:
			again = encodeAttached(m.node, store.DeviceAddr{User: m.user, Device: m.devices[0]}, m.hs)
		case kindEphemeral:
			again = encodeEphemeral(m.node, m.user, m.eph)
		case kindPush:
			again, _ = encodePush(m.node, store.DeviceAddr{User: m.user, Device: m.devices[0]}, router.Push{Ephemeral: m.eph, KeysLow: m.keys})
		case kindRecheck:
			again = encodeRecheck(m.node)
		}
		if len(again) > len(data)+16 {
			t.Fatalf("%d bytes decoded to a message of %d", len(data), len(again))
		}
		m2, err := decode(again)
		if err != nil {
			t.Fatalf("re-encoded message refused: %v", err)
		}
		if m.eph != nil {
			m2.eph.Sent = m.eph.Sent
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("decoded %+v, re-decoded %+v", m, m2)
		}
	})
}

// Usernames are safe in a subject exactly when they are 1 to MaxLen
// letters, digits or underscores: every end of each range is in, and the
// characters next to them are out.
func TestSubjectSafe(t *testing.T) {
	for _, u := range []string{"a", "z", "A", "Z", "0", "9", "_", "az_AZ09", strings.Repeat("z", username.MaxLen)} {
		if !subjectSafe(u) {
			t.Errorf("%q refused", u)
		}
	}
	for _, u := range []string{"", "`", "{", "@", "[", "/", ":", "^", "a.b", "a*", "a>", "a b", "é", strings.Repeat("z", username.MaxLen+1)} {
		if subjectSafe(u) {
			t.Errorf("%q accepted", u)
		}
	}
}

// sized returns an ephemeral message of exactly n bytes (n well above
// maxPayload), with per-device payloads.
func sized(t *testing.T, n int) []byte {
	t.Helper()
	e := &router.Ephemeral{From: store.DeviceAddr{User: "alice", Device: 1}, Payloads: map[uint32][]byte{1: make([]byte, maxPayload), 2: nil}}
	for k := n - maxPayload; k > 0; {
		e.Payloads[2] = make([]byte, k)
		data := encodeEphemeral(1, "bob", e)
		if len(data) == n {
			return data
		}
		k += n - len(data)
	}
	t.Fatalf("no message of %d bytes", n)
	return nil
}

// Messages at each bound the decoder enforces decode to what was encoded;
// one step past a bound is refused.
func TestCodecAtItsBounds(t *testing.T) {
	longest := strings.Repeat("u", username.MaxLen)
	most := make([]uint32, maxDevices)
	for i := range most {
		most[i] = uint32(i)
	}
	most[0] = 1<<32 - 1
	big := bytes.Repeat([]byte{'p'}, 1000)
	perDevice := map[uint32][]byte{}
	for d := range 64 {
		perDevice[uint32(d)] = big
	}
	from := store.DeviceAddr{User: longest, Device: 1<<32 - 1}
	push, _ := encodePush(1, from, router.Push{Ephemeral: &router.Ephemeral{From: from, Payload: big}})
	for name, c := range map[string]struct {
		data []byte
		user string
		n    int // devices, or payloads of a per-device ephemeral
	}{
		"longest user":           {encodeWake(1, longest, []uint32{7}), longest, 1},
		"most devices":           {encodeWake(1, "bob", most), "bob", maxDevices},
		"largest device":         {encodeAttached(1, from, router.Handshake{}), longest, 1},
		"push of 1000 bytes":     {push, longest, 1},
		"64 per-device payloads": {encodeEphemeral(1, longest, &router.Ephemeral{From: from, Payloads: perDevice}), longest, 64},
		"largest message":        {sized(t, maxMessage), "bob", 2},
	} {
		m, err := decode(c.data)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		n := len(m.devices)
		if m.eph != nil && m.eph.Payloads != nil {
			n = len(m.eph.Payloads)
		}
		if m.user != c.user || n != c.n {
			t.Errorf("%s: decoded for %q with %d, want %q with %d", name, m.user, n, c.user, c.n)
		}
		if m.kind == kindAttached && m.devices[0] != 1<<32-1 || m.kind == kindWake && len(m.devices) == maxDevices && m.devices[0] != 1<<32-1 {
			t.Errorf("%s: device %d, want %d", name, m.devices[0], uint32(1<<32-1))
		}
		if m.eph != nil && m.eph.Payloads == nil && !bytes.Equal(m.eph.Payload, big) {
			t.Errorf("%s: payload of %d bytes, want %d", name, len(m.eph.Payload), len(big))
		}
	}
	device := func(d uint64) []byte { // an attached message for any device number
		b := binary.AppendUvarint(appendHeader(nil, kindAttached, 1, "bob"), d)
		return binary.AppendVarint(binary.AppendVarint(b, 0), 0)
	}
	if _, err := decode(device(1<<32 - 1)); err != nil {
		t.Errorf("device 2³²-1: %v", err)
	}
	for name, data := range map[string][]byte{
		"user too long":       encodeWake(1, longest+"u", []uint32{7}),
		"one device too many": encodeWake(1, "bob", append(most, 1)),
		"device 2³²":          device(1 << 32),
		"one byte too large":  sized(t, maxMessage+1),
	} {
		if _, err := decode(data); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}
