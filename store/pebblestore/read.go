package pebblestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/magpie-im/magpie/store"
)

func putBE64(b []byte, n uint64) { binary.BigEndian.PutUint64(b, n) }

// Pending implements store.Store. A limit <= 0 returns no items; an
// unknown device has an empty queue.
func (s *Store) Pending(ctx context.Context, dev store.DeviceAddr, after uint64, limit int, now time.Time) ([]store.Message, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if limit <= 0 || after >= math.MaxInt64 {
		return nil, nil
	}
	prefix := queuePrefix(dev)
	snap := s.db.NewSnapshot()
	defer snap.Close()
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("pebblestore: pending: %w", err)
	}
	defer it.Close()
	t := now.UnixNano()
	var (
		out     []store.Message
		headers map[uint64]sharedRead
	)
	for it.SeekGE(queueKey(nil, dev, after+1)); it.Valid() && len(out) < limit; it.Next() {
		k := it.Key()
		seq := binary.BigEndian.Uint64(k[len(k)-8:])
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("pebblestore: pending: %w", err)
		}
		m, err := decodeItem(v)
		if err != nil {
			return nil, fmt.Errorf("pebblestore: pending: item %d: %w", seq, err)
		}
		msg := store.Message{Seq: seq, To: dev, Kind: m.kind}
		if m.shared == 0 {
			if m.expires <= t {
				continue
			}
			msg.From, msg.ClientID = m.from, m.cid
			msg.Payload = append([]byte{}, m.payload...)
			msg.Sent, msg.Expires = time.Unix(0, m.sent), time.Unix(0, m.expires)
		} else {
			h, ok := headers[m.shared]
			if !ok {
				if h, err = readShared(snap, m.shared); err != nil {
					return nil, fmt.Errorf("pebblestore: pending: item %d: %w", seq, err)
				}
				if headers == nil {
					headers = make(map[uint64]sharedRead)
				}
				headers[m.shared] = h
			}
			if h.expires <= t {
				continue
			}
			msg.From, msg.ClientID, msg.Group = h.from, h.cid, h.group
			msg.Payload = h.payload // shared by the items of this call; callers do not change payloads
			msg.Sent, msg.Expires = time.Unix(0, h.sent), time.Unix(0, h.expires)
		}
		out = append(out, msg)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("pebblestore: pending: %w", err)
	}
	return out, nil
}

type sharedRead struct {
	shared
	payload []byte
}

func readShared(r pebble.Reader, id uint64) (sharedRead, error) {
	hv, err := getCopy(r, u64Key(nil, tShared, id))
	if err != nil {
		return sharedRead{}, fmt.Errorf("shared %d: %w", id, err)
	}
	h, err := decodeShared(hv)
	if err != nil {
		return sharedRead{}, err
	}
	p, err := getCopy(r, u64Key(nil, tPayload, id))
	if err != nil {
		return sharedRead{}, fmt.Errorf("shared payload %d: %w", id, err)
	}
	return sharedRead{h, p}, nil
}

func getCopy(r pebble.Reader, key []byte) ([]byte, error) {
	v, closer, err := r.Get(key)
	if err != nil {
		return nil, err
	}
	out := append([]byte{}, v...)
	return out, closer.Close()
}

// Group implements store.Store.
func (s *Store) Group(ctx context.Context, id [store.GroupIDSize]byte) (uint64, []byte, error) {
	if err := s.enter(); err != nil {
		return 0, nil, err
	}
	defer s.gate.Leave()
	v, err := getCopy(s.db, groupKey(nil, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil, store.ErrNotFound
	}
	if err != nil {
		return 0, nil, fmt.Errorf("pebblestore: group: %w", err)
	}
	if len(v) < 8 {
		return 0, nil, fmt.Errorf("pebblestore: group: %w", errCorrupt)
	}
	return be64(v), v[8:], nil
}

// GroupLog implements store.Store.
func (s *Store) GroupLog(ctx context.Context, id [store.GroupIDSize]byte, from uint64, limit int) ([][]byte, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if limit <= 0 || from > math.MaxInt64 {
		return nil, nil
	}
	prefix := append([]byte{tGroupLog}, id[:]...)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("pebblestore: group log: %w", err)
	}
	defer it.Close()
	var out [][]byte
	for it.SeekGE(groupLogKey(nil, id, from)); it.Valid() && len(out) < limit; it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("pebblestore: group log: %w", err)
		}
		out = append(out, append([]byte{}, v...))
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("pebblestore: group log: %w", err)
	}
	return out, nil
}

// CountPayload counts the stored values that hold exactly payload (as a
// queue item's payload or a shared record's): how many copies of a
// message the store keeps, for tests that check a group message is stored
// once. It reads the whole database.
func (s *Store) CountPayload(ctx context.Context, payload []byte) (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.gate.Leave()
	it, err := s.db.NewIter(nil)
	if err != nil {
		return 0, err
	}
	n := 0
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return 0, err
		}
		switch it.Key()[0] {
		case tPayload:
			if bytes.Equal(v, payload) {
				n++
			}
		case tQueue:
			if m, err := decodeItem(v); err == nil && m.shared == 0 && bytes.Equal(m.payload, payload) {
				n++
			}
		}
	}
	return n, it.Close()
}

// LiveBytes is the size of every key and value the queue database holds:
// what it stores, before Pebble's compression and apart from its log and
// not yet compacted deletions. It reads the whole database.
func (s *Store) LiveBytes(ctx context.Context) (int64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.gate.Leave()
	it, err := s.db.NewIter(nil)
	if err != nil {
		return 0, err
	}
	var n int64
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return 0, err
		}
		n += int64(len(it.Key()) + len(v))
	}
	return n, it.Close()
}
