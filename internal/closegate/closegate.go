// Package closegate lets a store's Close wait for the calls in flight and
// refuse every later one, without a call ever running on closed resources.
package closegate

import "sync"

// Gate is held shared by every call (Enter … Leave) and exclusively by
// Close. The zero Gate is open.
type Gate struct {
	mu     sync.RWMutex
	closed bool
}

// Enter marks a call in flight and reports whether the gate is still open;
// if it is, the caller must call Leave when done, and Close waits for that.
func (g *Gate) Enter() bool {
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		return false
	}
	return true
}

// Leave ends a call that Enter let in.
func (g *Gate) Leave() { g.mu.RUnlock() }

// Close waits for the calls in flight and shuts the gate; it reports
// whether this call shut it (false: it was already shut). Calls entering
// after Close has begun waiting are refused, so that a stream of calls
// cannot hold it off.
func (g *Gate) Close() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.closed = true
	return true
}
