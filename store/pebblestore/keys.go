package pebblestore

import (
	"encoding/binary"
	"errors"

	"github.com/magpie-im/magpie/store"
)

// Key space. Every key starts with one byte naming its table; numbers are
// big-endian so that keys sort in numeric order.
//
//	q dev seq            a queue item (item); dev is devKey
//	e expires seq        expiry index of a 1:1 item or receipt → its dev
//	s id                 a shared group item's header (shared); id is its first seq
//	p id                 the shared item's payload, apart so that dropping
//	                     a reference does not rewrite it
//	t id                 the devices a shared item was queued for, with
//	                     their seqs (for expiry)
//	h expires id         expiry index of shared items
//	d dev cid            deduplication record → sent, expires
//	f expires dev cid    expiry index of deduplication records
//	g group              a group's head seq and state
//	l group seq          a group's log
//	m                    the next seq to assign
const (
	tQueue       = 'q'
	tItemExpiry  = 'e'
	tShared      = 's'
	tPayload     = 'p'
	tTargets     = 't'
	tSharedExp   = 'h'
	tDedup       = 'd'
	tDedupExpiry = 'f'
	tGroup       = 'g'
	tGroupLog    = 'l'
	tMeta        = 'm'
)

var metaNextSeq = []byte{tMeta, 's'}

// appendDev appends a device's key part: the user name's length (one
// byte; names are at most 32 bytes), the name and the device id, so that
// no device's part is a prefix of another's.
func appendDev(b []byte, d store.DeviceAddr) []byte {
	b = append(b, byte(len(d.User)))
	b = append(b, d.User...)
	return binary.BigEndian.AppendUint32(b, d.Device)
}

// readDev parses appendDev's output at the start of b and returns the rest.
func readDev(b []byte) (store.DeviceAddr, []byte, error) {
	if len(b) < 1 || len(b) < 1+int(b[0])+4 {
		return store.DeviceAddr{}, nil, errCorrupt
	}
	n := int(b[0])
	d := store.DeviceAddr{User: string(b[1 : 1+n]), Device: binary.BigEndian.Uint32(b[1+n:])}
	return d, b[1+n+4:], nil
}

var errCorrupt = errors.New("pebblestore: malformed record")

func queueKey(b []byte, d store.DeviceAddr, seq uint64) []byte {
	b = append(b, tQueue)
	b = appendDev(b, d)
	return binary.BigEndian.AppendUint64(b, seq)
}

// queuePrefix is the prefix of d's queue keys.
func queuePrefix(d store.DeviceAddr) []byte { return appendDev([]byte{tQueue}, d) }

func u64Key(b []byte, table byte, n uint64) []byte {
	b = append(b, table)
	return binary.BigEndian.AppendUint64(b, n)
}

func expiryKey(b []byte, table byte, expires int64, n uint64) []byte {
	b = append(b, table)
	b = binary.BigEndian.AppendUint64(b, expiresKey(expires))
	return binary.BigEndian.AppendUint64(b, n)
}

// expiresKey orders expiry times as unsigned keys; times before 1970 (a
// test's zero time) sort first, as they expired first.
func expiresKey(ns int64) uint64 { return uint64(ns) ^ (1 << 63) }

func dedupKey(b []byte, from store.DeviceAddr, cid [store.ClientIDSize]byte) []byte {
	b = append(b, tDedup)
	b = appendDev(b, from)
	return append(b, cid[:]...)
}

func dedupExpiryKey(b []byte, expires int64, from store.DeviceAddr, cid [store.ClientIDSize]byte) []byte {
	b = append(b, tDedupExpiry)
	b = binary.BigEndian.AppendUint64(b, expiresKey(expires))
	b = appendDev(b, from)
	return append(b, cid[:]...)
}

func groupKey(b []byte, id [store.GroupIDSize]byte) []byte {
	b = append(b, tGroup)
	return append(b, id[:]...)
}

func groupLogKey(b []byte, id [store.GroupIDSize]byte, seq uint64) []byte {
	b = append(b, tGroupLog)
	b = append(b, id[:]...)
	return binary.BigEndian.AppendUint64(b, seq)
}

// item is a queue item as stored. A group item holds only its kind and
// its shared record's id; the rest is in the shared record.
type item struct {
	kind    store.Kind
	shared  uint64 // 0 for a 1:1 item or receipt
	sent    int64
	expires int64
	cid     [store.ClientIDSize]byte
	from    store.DeviceAddr
	payload []byte // aliases the buffer decoded from
}

// appendItem encodes it: kind, shared id, then for a 1:1 item sent,
// expires, client id, sender and the payload (the rest of the value).
func appendItem(b []byte, it *item) []byte {
	b = append(b, byte(it.kind))
	b = binary.BigEndian.AppendUint64(b, it.shared)
	if it.shared != 0 {
		return b
	}
	b = binary.BigEndian.AppendUint64(b, uint64(it.sent))
	b = binary.BigEndian.AppendUint64(b, uint64(it.expires))
	b = append(b, it.cid[:]...)
	b = appendDev(b, it.from)
	return append(b, it.payload...)
}

func decodeItem(v []byte) (item, error) {
	var it item
	if len(v) < 9 {
		return it, errCorrupt
	}
	it.kind = store.Kind(v[0])
	it.shared = binary.BigEndian.Uint64(v[1:])
	if it.shared != 0 {
		return it, nil
	}
	v = v[9:]
	if len(v) < 16+store.ClientIDSize {
		return it, errCorrupt
	}
	it.sent = int64(binary.BigEndian.Uint64(v))
	it.expires = int64(binary.BigEndian.Uint64(v[8:]))
	copy(it.cid[:], v[16:])
	var err error
	it.from, it.payload, err = readDev(v[16+store.ClientIDSize:])
	return it, err
}

// shared is the header of a group message or change stored once for many
// devices.
type shared struct {
	refs    uint64 // queue items still referring to it
	expires int64
	sent    int64
	kind    store.Kind
	group   [store.GroupIDSize]byte
	cid     [store.ClientIDSize]byte // zero for a change
	from    store.DeviceAddr
}

func appendShared(b []byte, s *shared) []byte {
	b = binary.BigEndian.AppendUint64(b, s.refs)
	b = binary.BigEndian.AppendUint64(b, uint64(s.expires))
	b = binary.BigEndian.AppendUint64(b, uint64(s.sent))
	b = append(b, byte(s.kind))
	b = append(b, s.group[:]...)
	b = append(b, s.cid[:]...)
	return appendDev(b, s.from)
}

func decodeShared(v []byte) (shared, error) {
	var s shared
	const fixed = 8 + 8 + 8 + 1 + store.GroupIDSize + store.ClientIDSize
	if len(v) < fixed {
		return s, errCorrupt
	}
	s.refs = binary.BigEndian.Uint64(v)
	s.expires = int64(binary.BigEndian.Uint64(v[8:]))
	s.sent = int64(binary.BigEndian.Uint64(v[16:]))
	s.kind = store.Kind(v[24])
	copy(s.group[:], v[25:])
	copy(s.cid[:], v[25+store.GroupIDSize:])
	var err error
	s.from, _, err = readDev(v[fixed:])
	return s, err
}

// appendTarget appends one device a shared item went to, with its seq.
func appendTarget(b []byte, d store.DeviceAddr, seq uint64) []byte {
	b = appendDev(b, d)
	return binary.BigEndian.AppendUint64(b, seq)
}

func readTargets(v []byte, fn func(store.DeviceAddr, uint64)) error {
	for len(v) > 0 {
		d, rest, err := readDev(v)
		if err != nil || len(rest) < 8 {
			return errCorrupt
		}
		fn(d, binary.BigEndian.Uint64(rest))
		v = rest[8:]
	}
	return nil
}
