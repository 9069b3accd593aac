package link

import (
	"encoding/binary"
	"sync"
	"time"
)

// A Noise IK first message carries no freshness of its own: replayed, it
// makes the responder answer again, which would let a censor who recorded
// one handshake confirm a server by replaying it. So the link puts the
// client's clock in the encrypted first payload (8 bytes, Unix ms, before
// the caller's hello), and a server with a ReplayCache accepts a first
// message only if that time is within the window and its ephemeral key (the
// first 32 bytes of the message, random per handshake) was not seen before.
// Anything else gets the probe treatment: silence, then a close at the
// drawn deadline.

const timestampSize = 8

// clientNow is the client's clock (a variable so tests can skew it).
var clientNow = time.Now

// DefaultReplayWindow is how far a client's clock may be from the server's.
const DefaultReplayWindow = 2 * time.Minute

// ReplayCache remembers the ephemeral keys of accepted handshakes for twice
// the window, in two generations so that memory stays bounded without a
// sweep: at most maxReplayEntries keys per generation; when a generation is
// full, new handshakes are refused (treated as probes) until it rotates.
type ReplayCache struct {
	window time.Duration
	now    func() time.Time

	mu       sync.Mutex
	cur, old map[[32]byte]struct{}
	rotated  time.Time
}

const maxReplayEntries = 1 << 20

// NewReplayCache returns a cache for clocks within window of the server's
// (DefaultReplayWindow if 0).
func NewReplayCache(window time.Duration) *ReplayCache {
	if window <= 0 {
		window = DefaultReplayWindow
	}
	return &ReplayCache{window: window, now: time.Now, cur: map[[32]byte]struct{}{}, old: map[[32]byte]struct{}{}}
}

// fresh checks a handshake's timestamp and ephemeral key, recording the key.
func (r *ReplayCache) fresh(ts time.Time, ephemeral [32]byte) bool {
	now := r.now()
	if d := now.Sub(ts); d > r.window || d < -r.window {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// A generation spans 2×window: a key accepted within its timestamp's
	// window is remembered at least as long as a replay could be accepted.
	if now.Sub(r.rotated) > 2*r.window {
		r.old, r.cur, r.rotated = r.cur, make(map[[32]byte]struct{}), now
	}
	if _, seen := r.cur[ephemeral]; seen {
		return false
	}
	if _, seen := r.old[ephemeral]; seen {
		return false
	}
	if len(r.cur) >= maxReplayEntries {
		return false
	}
	r.cur[ephemeral] = struct{}{}
	return true
}

func putTimestamp(b []byte, t time.Time) { binary.BigEndian.PutUint64(b, uint64(t.UnixMilli())) }

func getTimestamp(b []byte) time.Time { return time.UnixMilli(int64(binary.BigEndian.Uint64(b))) }
