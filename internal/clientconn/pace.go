package clientconn

import (
	"errors"
	"sync"
	"time"
)

// ErrTooSlow: the path moves less than the conversation needs: work has
// waited on it for longer than the stall timeout while it carried less
// than 8 KiB/s (slowestLink). A censor's throttle does this; so does a
// path that is all but black-holed.
var ErrTooSlow = errors.New("client: the network path is too slow for the conversation (it may be throttled)")

// The pace of a connection: whether it keeps up with what waits on it.
// Two kinds of waiting are watched, one for each end of a conversation:
//
//   - Requests back to back (with less than busyGap between the end of one
//     and the start of the next, or overlapping): the client has more to
//     send than the path carries, as an outbox with a backlog does. Each
//     request's own answer may come in time while the backlog grows.
//   - Pushes of messages the server stored while this connection was up,
//     which it pushes at once: their lateness is the path's delay.
//
// Either, past the stall timeout with less than slowestLink moved
// meanwhile (both ways), ends the connection with ErrTooSlow. A backlog on
// a slow but adequate path moves more than that and is left alone.
type pace struct {
	mu          sync.Mutex
	outstanding int
	busySince   time.Time // while requests are back to back
	idleSince   time.Time // when the last request ended (outstanding 0)
	samples     [paceSamples]sample
	n           int // samples taken (the ring holds the last paceSamples)
}

// sample is the bytes moved by a time.
type sample struct {
	at    time.Time
	moved int64
}

const (
	// busyGap is the pause between requests that still counts as back to
	// back: the outbox's bookkeeping between two sends.
	busyGap = 100 * time.Millisecond
	// paceSamples, at most one per sampleEvery, cover the last 50 s.
	paceSamples = 500
	sampleEvery = 100 * time.Millisecond
)

// record takes a sample of moved bytes, at most one per sampleEvery.
// Called with p.mu held.
func (p *pace) record(now time.Time, moved int64) {
	if p.n > 0 && now.Sub(p.samples[(p.n-1)%paceSamples].at) < sampleEvery {
		p.samples[(p.n-1)%paceSamples].moved = moved
		return
	}
	p.samples[p.n%paceSamples] = sample{now, moved}
	p.n++
}

// movedSince returns the bytes moved since t, as far as the samples tell:
// from the last sample at or before t (or the oldest kept, which counts
// more, never less). Called with p.mu held.
func (p *pace) movedSince(t time.Time, moved int64) int64 {
	if p.n == 0 {
		return moved
	}
	oldest := max(0, p.n-paceSamples)
	base := p.samples[oldest%paceSamples].moved
	for i := p.n - 1; i >= oldest; i-- {
		if s := p.samples[i%paceSamples]; !s.at.After(t) {
			base = s.moved
			break
		}
	}
	return moved - base
}

// slow reports whether work waiting since t has waited past stall while
// less than slowestLink moved. Called with p.mu held.
func (p *pace) slow(now, t time.Time, stall time.Duration, moved int64) bool {
	waited := now.Sub(t)
	return waited >= stall && float64(p.movedSince(t, moved)) < waited.Seconds()*slowestLink
}

// moved is the bytes of messages this connection has sent and received.
func (c *Conn) moved() int64 { return c.sentB.Load() + c.recvd.Load() }

// requestStarts notes a request about to be written; ErrTooSlow if the
// requests before it, back to back, have waited too long on a path too
// slow.
func (c *Conn) requestStarts() error {
	now, moved := time.Now(), c.moved()
	p := &c.pace
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record(now, moved)
	if p.outstanding == 0 && (p.idleSince.IsZero() || now.Sub(p.idleSince) > busyGap) {
		p.busySince = now
	}
	p.outstanding++
	if p.slow(now, p.busySince, c.stall, moved) {
		return ErrTooSlow
	}
	return nil
}

// requestEnds notes a request answered (or abandoned).
func (c *Conn) requestEnds() {
	now := time.Now()
	p := &c.pace
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record(now, c.moved())
	if p.outstanding--; p.outstanding == 0 {
		p.idleSince = now
	}
}

// pushArrived notes a message push the server stored at stored (its
// clock); ErrTooSlow if it was stored while this connection was up, so
// was pushed at once, and has been that long on a path too slow.
func (c *Conn) pushArrived(stored time.Time) error {
	now, moved := time.Now(), c.moved()
	local := stored.Add(c.skew) // on this machine's clock
	p := &c.pace
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record(now, moved)
	if local.After(c.connected) && p.slow(now, local, c.stall, moved) {
		return ErrTooSlow
	}
	return nil
}
