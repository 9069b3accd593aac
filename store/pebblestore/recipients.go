package pebblestore

import (
	"context"
	"sync"

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
