package natsbus

import (
	"encoding/binary"
	"errors"
	"math"
	"time"

	"github.com/magpie-im/magpie/router"
	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/username"
	"github.com/magpie-im/magpie/wire"
)

// The messages between nodes, in a fixed binary form (all integers are
// varints unless said otherwise):
//
//	version (1 byte, 1) · kind (1 byte) · node (8 bytes, big endian) · user (string)
//	wake:      count · that many devices
//	attached:  device · handshake began · handshake done (signed, Unix ns)
//	ephemeral: ephemeral envelope (for all of user's devices)
//	push:      device · 0 · pre-keys · kyber pre-keys        (KeysLow)
//	           device · 1 · ephemeral envelope               (one device)
//	recheck:   nothing (user is empty)
//
//	ephemeral envelope: from user (string) · from device · client id (16 bytes) ·
//	  sent (signed, Unix ns) · flags (1 byte: 1 group, 2 per device) ·
//	  [group (16 bytes)] · payload (bytes), or with flag 2: count · that many (device · payload)
//
// A string or bytes is its length and then its bytes. node is a random id
// of the sending process, so that a node can tell its own messages.
const version = 1

// Message kinds.
const (
	kindWake      byte = 1
	kindAttached  byte = 2
	kindEphemeral byte = 3
	kindPush      byte = 4
	kindRecheck   byte = 5
)

var kindNames = [...]string{kindWake: "wake", kindAttached: "attached", kindEphemeral: "ephemeral", kindPush: "push", kindRecheck: "recheck"}

// Bounds the decoder enforces.
const (
	maxMessage = 2 << 20       // a whole message
	maxDevices = 4096          // devices in a wake, payloads in a per-device ephemeral
	maxPayload = wire.MaxFrame // one payload
)

const (
	flagGroup     = 1
	flagPerDevice = 2
)

// message is one message between nodes, decoded.
type message struct {
	kind    byte
	node    uint64
	user    string
	devices []uint32 // wake: the devices; attached and push: the one device
	eph     *router.Ephemeral
	keys    *store.KeyCounts
	hs      router.Handshake // attached
}

var errMalformed = errors.New("natsbus: malformed message")

func appendHeader(b []byte, kind byte, node uint64, user string) []byte {
	b = append(b, version, kind)
	b = binary.BigEndian.AppendUint64(b, node)
	return appendString(b, user)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func encodeWake(node uint64, user string, devices []uint32) []byte {
	b := appendHeader(make([]byte, 0, 16+len(user)+5*len(devices)), kindWake, node, user)
	b = binary.AppendUvarint(b, uint64(len(devices)))
	for _, d := range devices {
		b = binary.AppendUvarint(b, uint64(d))
	}
	return b
}

func encodeAttached(node uint64, d store.DeviceAddr, h router.Handshake) []byte {
	b := appendHeader(make([]byte, 0, 36+len(d.User)), kindAttached, node, d.User)
	b = binary.AppendUvarint(b, uint64(d.Device))
	b = binary.AppendVarint(b, h.Began.UnixNano())
	b = binary.AppendVarint(b, h.Done.UnixNano())
	return binary.AppendUvarint(b, h.Attempt)
}

func encodeRecheck(node uint64) []byte { return appendHeader(nil, kindRecheck, node, "") }

func encodeEphemeral(node uint64, to string, e *router.Ephemeral) []byte {
	b := appendHeader(make([]byte, 0, 64+ephemeralSize(e)), kindEphemeral, node, to)
	return appendEphemeral(b, e)
}

// encodePush encodes p for device d: a KeysLow or an Ephemeral push (ok
// false for anything else, which does not cross nodes).
func encodePush(node uint64, d store.DeviceAddr, p router.Push) (b []byte, ok bool) {
	switch {
	case p.KeysLow != nil:
		b = appendHeader(make([]byte, 0, 32+len(d.User)), kindPush, node, d.User)
		b = binary.AppendUvarint(b, uint64(d.Device))
		b = append(b, 0)
		b = binary.AppendUvarint(b, uint64(max(p.KeysLow.PreKeys, 0)))
		return binary.AppendUvarint(b, uint64(max(p.KeysLow.KyberPreKeys, 0))), true
	case p.Ephemeral != nil:
		b = appendHeader(make([]byte, 0, 64+ephemeralSize(p.Ephemeral)), kindPush, node, d.User)
		b = binary.AppendUvarint(b, uint64(d.Device))
		b = append(b, 1)
		return appendEphemeral(b, p.Ephemeral), true
	}
	return nil, false
}

func ephemeralSize(e *router.Ephemeral) int {
	n := len(e.From.User) + len(e.Payload)
	for _, p := range e.Payloads {
		n += 10 + len(p)
	}
	return n
}

func appendEphemeral(b []byte, e *router.Ephemeral) []byte {
	b = appendString(b, e.From.User)
	b = binary.AppendUvarint(b, uint64(e.From.Device))
	b = append(b, e.ClientID[:]...)
	b = binary.AppendVarint(b, e.Sent.UnixNano())
	var flags byte
	if e.Group != ([16]byte{}) {
		flags |= flagGroup
	}
	if e.Payloads != nil {
		flags |= flagPerDevice
	}
	b = append(b, flags)
	if flags&flagGroup != 0 {
		b = append(b, e.Group[:]...)
	}
	if e.Payloads == nil {
		return appendBytes(b, e.Payload)
	}
	b = binary.AppendUvarint(b, uint64(len(e.Payloads)))
	for d, p := range e.Payloads {
		b = binary.AppendUvarint(b, uint64(d))
		b = appendBytes(b, p)
	}
	return b
}

// reader decodes; its first error sticks, and every later read returns
// zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail() {
	r.err, r.b = errMalformed, nil
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) fixed(n int) []byte {
	if len(r.b) < n {
		r.fail()
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

// uvarint reads an unsigned varint no larger than limit.
func (r *reader) uvarint(limit uint64) uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 || v > limit {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(limit int) []byte { return r.fixed(int(r.uvarint(uint64(limit)))) }

func (r *reader) device() uint32 { return uint32(r.uvarint(1<<32 - 1)) }

// user reads a username: empty, or ASCII letters, digits and underscores,
// as usernames are (so it is safe in a subject).
func (r *reader) user() string {
	u := string(r.bytes(username.MaxLen))
	if !subjectSafe(u) && u != "" {
		r.fail()
		return ""
	}
	return u
}

// subjectSafe reports whether u is a username as the subject needs it:
// 1 to MaxLen letters, digits or underscores.
func subjectSafe(u string) bool {
	if len(u) == 0 || len(u) > username.MaxLen {
		return false
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// decode parses a message. It copies what it keeps, so data may be reused.
func decode(data []byte) (*message, error) {
	if len(data) > maxMessage {
		return nil, errMalformed
	}
	r := &reader{b: data}
	if r.byte() != version {
		return nil, errMalformed
	}
	m := &message{kind: r.byte()}
	node := r.fixed(8)
	if r.err != nil {
		return nil, r.err
	}
	m.node = binary.BigEndian.Uint64(node)
	m.user = r.user()
	if m.user == "" && m.kind != kindRecheck {
		r.fail()
	}
	switch m.kind {
	case kindWake:
		n := r.uvarint(maxDevices)
		if n == 0 {
			r.fail()
		}
		for range n {
			if r.err != nil {
				break
			}
			m.devices = append(m.devices, r.device())
		}
	case kindAttached:
		m.devices = []uint32{r.device()}
		m.hs.Began = time.Unix(0, r.varint())
		m.hs.Done = time.Unix(0, r.varint())
		if len(r.b) > 0 { // absent from a node of an older version
			m.hs.Attempt = r.uvarint(math.MaxUint64)
		}
	case kindEphemeral:
		m.eph = r.ephemeral()
	case kindPush:
		m.devices = []uint32{r.device()}
		switch r.byte() {
		case 0:
			m.keys = &store.KeyCounts{PreKeys: int(r.uvarint(1 << 31)), KyberPreKeys: int(r.uvarint(1 << 31))}
		case 1:
			m.eph = r.ephemeral()
		default:
			r.fail()
		}
	case kindRecheck:
		if m.user != "" {
			r.fail()
		}
	default:
		r.fail()
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail()
	}
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}

func (r *reader) ephemeral() *router.Ephemeral {
	e := &router.Ephemeral{}
	e.From.User = r.user()
	e.From.Device = r.device()
	copy(e.ClientID[:], r.fixed(store.ClientIDSize))
	e.Sent = time.Unix(0, r.varint())
	flags := r.byte()
	if flags&^(flagGroup|flagPerDevice) != 0 || e.From.User == "" {
		r.fail()
	}
	if flags&flagGroup != 0 {
		copy(e.Group[:], r.fixed(16))
	}
	if flags&flagPerDevice == 0 {
		e.Payload = clone(r.bytes(maxPayload))
		return e
	}
	n := r.uvarint(maxDevices)
	e.Payloads = make(map[uint32][]byte, min(n, 64))
	for range n {
		if r.err != nil {
			break
		}
		d := r.device()
		e.Payloads[d] = clone(r.bytes(maxPayload))
	}
	return e
}

// clone copies p, keeping nil and empty apart as the sender had them.
func clone(p []byte) []byte {
	if p == nil {
		return nil
	}
	return append([]byte{}, p...)
}
