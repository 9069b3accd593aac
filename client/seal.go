package client

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/magpie-im/magpie/internal/vault"
)

// Sealer encrypts the client's state at rest (internal/vault implements
// it). The additional data binds each value to its namespace and key, so
// sealed values cannot be moved between records.
type Sealer interface {
	Seal(aad, plaintext []byte) []byte
	Open(aad, sealed []byte) ([]byte, error)
}

// Namespaces of the client's state. Only nsMeta is kept in clear: it holds
// what is needed before the state can be unlocked.
const (
	nsMeta     = "meta"     // vault header, schema, counters
	nsSettings = "settings" // device key, invite, account, preferences, endpoints
	nsMsg      = "msg"      // peer + "/" + seq → msgRecord
	nsSeq      = "msg.seq"  // seq → peer
	nsOut      = "msg.out"  // hex id → seq, messages this account sent
	nsIn       = "msg.in"   // peer/device/hex id → seq, messages received
	nsConv     = "conv"     // peer → convRecord
	nsOutbox   = "outbox"   // seq → outboxItem, in the order they are sent
	nsTransfer = "transfer" // seq → transferJob (attachment uploads, downloads)
	nsShown    = "shown"    // user → the safety number last shown

	// Rows of an earlier development build's tables, moved here by
	// NewSQLiteStore and converted by the Client (legacy.go).
	nsLegacySettings = "legacy.settings"
	nsLegacyMessages = "legacy.messages"
)

// inClear reports whether a namespace's values are stored unsealed.
func inClear(ns string) bool {
	return ns == nsMeta || ns == nsLegacySettings || ns == nsLegacyMessages
}

func aad(ns, key string) []byte { return []byte("kv/" + ns + "/" + key) }

// sealedTx is a Tx whose values are sealed before they reach the Store and
// opened after.
type sealedTx struct {
	r ReadTx
	w Tx // nil in a View
	s Sealer
}

func (t sealedTx) Get(ns, key string) ([]byte, error) {
	v, err := t.r.Get(ns, key)
	if err != nil || v == nil || inClear(ns) {
		return v, err
	}
	return t.open(ns, key, v)
}

func (t sealedTx) open(ns, key string, v []byte) ([]byte, error) {
	pt, err := t.s.Open(aad(ns, key), v)
	if err != nil {
		return nil, fmt.Errorf("%w: %s/%s: %w", ErrCorrupt, ns, key, err)
	}
	if pt == nil {
		pt = []byte{} // an empty value is there: nil means no value
	}
	return pt, nil
}

func (t sealedTx) Scan(ns, from, to string, reverse bool, fn func(string, []byte) (bool, error)) error {
	return t.r.Scan(ns, from, to, reverse, func(k string, v []byte) (bool, error) {
		if !inClear(ns) {
			var err error
			if v, err = t.open(ns, k, v); err != nil {
				return false, err
			}
		}
		return fn(k, v)
	})
}

func (t sealedTx) Put(ns, key string, value []byte) error {
	if !inClear(ns) {
		value = t.s.Seal(aad(ns, key), value)
	}
	return t.w.Put(ns, key, value)
}

func (t sealedTx) Delete(ns, key string) error { return t.w.Delete(ns, key) }

// Keys implements e2e.KV.
func (t sealedTx) Keys(ns, prefix string) ([]string, error) {
	var keys []string
	err := t.r.Scan(ns, prefix, prefixEnd(prefix), false, func(k string, _ []byte) (bool, error) {
		keys = append(keys, k)
		return true, nil
	})
	return keys, err
}

// getJSON reads a sealed JSON record; found is false when there is none.
func getJSON(r ReadTx, ns, key string, v any) (found bool, err error) {
	b, err := r.Get(ns, key)
	if err != nil || b == nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%w: %s/%s: %w", ErrCorrupt, ns, key, err)
	}
	return true, nil
}

// jsonRecord decodes a record read by Scan.
func jsonRecord(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return nil
}

func putJSON(w Tx, ns, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return w.Put(ns, key, b)
}

// ErrCorrupt means a record of the client's state failed to decrypt or
// decode: the file was damaged or tampered with.
var ErrCorrupt = errors.New("client state is damaged")

// KeyUnlocker encrypts the local state under a fixed 32-byte key, for
// headless use where the key comes from a secret store, and for tests.
func KeyUnlocker(key [32]byte) Unlocker { return keyUnlocker(key) }

type keyUnlocker [32]byte

func (k keyUnlocker) Create() (Sealer, []byte, error) {
	v, h, err := vault.NewFromKey(k)
	if err != nil {
		return nil, nil, err
	}
	hb, err := h.MarshalBinary()
	return v, hb, err
}

func (k keyUnlocker) Unlock(header []byte) (Sealer, error) {
	var h vault.Header
	if err := h.UnmarshalBinary(header); err != nil {
		return nil, err
	}
	return vault.OpenWithKey(k, h)
}
