package pebblestore

import (
	"context"
	"errors"
	"sync"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/sqlite"
)

// recipientCache keeps each user's devices as a send sees them, so that a
// commit does not query SQLite. Every change to them goes through this
// Store (CreateUser, AddDevice, SetKeys), which forgets the user after
// writing; epoch keeps a lookup that raced with such a change from
// caching what it read before the change.
type recipientCache struct {
	mu    sync.Mutex
	epoch uint64
	m     map[string][]sqlite.Recipient
}

// maxCachedUsers bounds the cache; past it, it starts afresh (a commit
// then reads SQLite once per recipient until it fills again).
const maxCachedUsers = 1 << 16

func (c *recipientCache) forget(user string) {
	c.mu.Lock()
	c.epoch++
	delete(c.m, user)
	c.mu.Unlock()
}

// get returns user's devices (nil for no such user); the slice is shared
// and must not be changed.
func (c *recipientCache) get(ctx context.Context, accounts *sqlite.Store, user string) ([]sqlite.Recipient, error) {
	c.mu.Lock()
	rs, ok := c.m[user]
	epoch := c.epoch
	c.mu.Unlock()
	if ok {
		return rs, nil
	}
	rs, err := accounts.Recipients(ctx, user)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.epoch == epoch {
		if c.m == nil || len(c.m) >= maxCachedUsers {
			c.m = make(map[string][]sqlite.Recipient)
		}
		c.m[user] = rs
	}
	c.mu.Unlock()
	return rs, nil
}

// deviceCache answers DeviceByKey, which every handshake asks, without
// SQLite (about 7% of a handshake's server CPU, pprof of bench
// handshake). A device's key never changes hands, so found devices stay
// right; a key found missing is forgotten when CreateUser or AddDevice
// registers it, with epoch keeping a lookup that raced with that
// registration from caching its stale answer.
type deviceCache struct {
	mu      sync.Mutex
	epoch   uint64
	found   map[[store.KeySize]byte]store.Device
	missing map[[store.KeySize]byte]struct{}
}

func (c *deviceCache) forget(key [store.KeySize]byte) {
	c.mu.Lock()
	c.epoch++
	delete(c.missing, key)
	c.mu.Unlock()
}

func (c *deviceCache) get(ctx context.Context, accounts *sqlite.Store, key [store.KeySize]byte) (store.Device, error) {
	c.mu.Lock()
	d, found := c.found[key]
	_, missing := c.missing[key]
	epoch := c.epoch
	c.mu.Unlock()
	switch {
	case found:
		return d, nil
	case missing:
		return store.Device{}, store.ErrNotFound
	}
	d, err := accounts.DeviceByKey(ctx, key)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return d, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		if c.found == nil || len(c.found) >= maxCachedUsers {
			c.found = make(map[[store.KeySize]byte]store.Device)
		}
		c.found[key] = d
		return d, nil
	}
	if c.epoch == epoch {
		// Bounded: a flood of unknown keys only starts it afresh.
		if c.missing == nil || len(c.missing) >= maxCachedUsers {
			c.missing = make(map[[store.KeySize]byte]struct{})
		}
		c.missing[key] = struct{}{}
	}
	return store.Device{}, store.ErrNotFound
}
