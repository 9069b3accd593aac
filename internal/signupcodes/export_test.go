package signupcodes

import (
	"testing"
	"time"
)

// SetLockWait replaces the bound on a wait for the lock until t ends.
func SetLockWait(t *testing.T, wait time.Duration) {
	old := lockWait
	lockWait = wait
	t.Cleanup(func() { lockWait = old })
}

// SetPause replaces the pause between tries for the lock until t ends.
func SetPause(t *testing.T, between func()) {
	old := pause
	pause = between
	t.Cleanup(func() { pause = old })
}
