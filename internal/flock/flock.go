// Package flock keeps a second process off a store's files: it takes an
// exclusive advisory lock (flock(2)) on a lock file, without waiting. The
// kernel drops the lock when the process dies, kill -9 included, so a
// crashed server never leaves a stale lock behind.
package flock

import "errors"

// ErrLocked is returned by Lock when another process holds the lock.
var ErrLocked = errors.New("locked by another process")
