package client

import (
	"bytes"
	"context"
	"slices"
	"sync"
)

// NewMemoryStore returns a Store that keeps everything in memory: for tests,
// and for clients whose state may vanish with the process (it loses its
// sessions and history when the process ends, so its contacts must start
// new sessions with it). It satisfies the Store contract except durability.
func NewMemoryStore() Store { return &memStore{data: map[string][]byte{}} }

// memStore is copy-on-write: an Update works on a private copy of the map
// and swaps it in on success, so a failed fn leaves nothing behind and
// Views read an immutable snapshot.
type memStore struct {
	write sync.Mutex // one Update at a time
	mu    sync.RWMutex
	data  map[string][]byte // ns + "\x00" + key → value; never modified in place
}

func memKey(ns, key string) string { return ns + "\x00" + key }

func (m *memStore) snapshot() map[string][]byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.data
}

func (m *memStore) Update(ctx context.Context, fn func(Tx) error) error {
	m.write.Lock()
	defer m.write.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	tx := &memTx{data: m.snapshot(), writes: map[string][]byte{}}
	if err := fn(tx); err != nil {
		return err
	}
	next := make(map[string][]byte, len(tx.data)+len(tx.writes))
	for k, v := range tx.data {
		next[k] = v
	}
	for k, v := range tx.writes {
		if v == nil {
			delete(next, k)
		} else {
			next[k] = v
		}
	}
	m.mu.Lock()
	m.data = next
	m.mu.Unlock()
	return nil
}

func (m *memStore) View(ctx context.Context, fn func(ReadTx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return fn(&memTx{data: m.snapshot()})
}

func (m *memStore) Close() error { return nil }

type memTx struct {
	data   map[string][]byte
	writes map[string][]byte // pending; nil value = deleted (nil map in a View)
}

func (t *memTx) Get(ns, key string) ([]byte, error) {
	k := memKey(ns, key)
	if v, ok := t.writes[k]; ok {
		return bytes.Clone(v), nil
	}
	if v, ok := t.data[k]; ok {
		return bytes.Clone(v), nil
	}
	return nil, nil
}

func (t *memTx) Scan(ns, from, to string, reverse bool, fn func(string, []byte) (bool, error)) error {
	prefix := ns + "\x00"
	var keys []string
	seen := map[string]bool{}
	add := func(k string) {
		if seen[k] || len(k) < len(prefix) || k[:len(prefix)] != prefix {
			return
		}
		key := k[len(prefix):]
		if key < from || (to != "" && key >= to) {
			return
		}
		seen[k] = true
		keys = append(keys, key)
	}
	for k := range t.data {
		add(k)
	}
	for k := range t.writes {
		add(k)
	}
	slices.Sort(keys)
	if reverse {
		slices.Reverse(keys)
	}
	for _, key := range keys {
		v, _ := t.Get(ns, key)
		if v == nil {
			continue // deleted in this transaction
		}
		if more, err := fn(key, v); err != nil || !more {
			return err
		}
	}
	return nil
}

func (t *memTx) Put(ns, key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	t.writes[memKey(ns, key)] = bytes.Clone(value)
	return nil
}

func (t *memTx) Delete(ns, key string) error {
	t.writes[memKey(ns, key)] = nil
	return nil
}
