package server

import (
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/magpie-im/magpie/link"
)

// Parking: a connection that has received nothing for ParkIdleAfter gives
// up its reading goroutine, and with it the goroutine's stack (8 KiB, most
// of an idle connection's cost), until bytes arrive; see internal/netpoll.
//
// The reader owns the connection's read state (c.lc's read side, c.sub's
// acks). Ownership passes: reader → poller (park) → whoever wins the
// Waiter: the poller's wake when bytes arrive or the idle timeout passes,
// or, by cancelling, stopReading or close. The winner runs c.run, which either reads
// again or sees why it was woken and finishes the connection.

// parkable returns the descriptor to park c by, or nil if c cannot park.
func (c *conn) parkable() syscall.RawConn {
	c.s.mu.Lock()
	c.poller = c.s.poller
	c.s.mu.Unlock()
	if c.poller == nil {
		return nil
	}
	// Only a plain TCP connection: under obfs or tls, decrypted bytes can
	// wait in user space where readiness of the descriptor cannot see them.
	tc, ok := c.nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// park hands the connection to the server's poller. It reports false if
// the connection must keep its reader instead (which then blocks in a read
// as usual), or if the reader must stop (stopped says why).
func (c *conn) park() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.stopping {
		return false
	}
	// The link's idle timeout is a read deadline, and nobody reads while
	// parked: the poller's deadline stands in for it (counted from here,
	// so it can run up to ParkIdleAfter late).
	var deadline time.Time
	if idle := c.s.cfg.Link.IdleTimeout; idle > 0 {
		deadline = time.Now().Add(idle)
	}
	// Disarm the link's read deadline too: its timer would otherwise fire
	// IdleTimeout after the last read on every quiet connection, waking
	// an idle server for nothing.
	c.nc.SetReadDeadline(time.Time{})
	w, err := c.poller.Wait(c.raw, deadline, c.wake)
	if err != nil {
		// The poller is closing, or epoll refused: read the usual way.
		c.raw = nil
		return false
	}
	c.parked = w
	c.s.cfg.Metrics.parked(1)
	return true
}

// wake is the poller's callback, in a goroutine of its own: bytes arrived
// (or the peer hung up), or, if expired, the idle timeout passed.
func (c *conn) wake(expired bool) {
	c.mu.Lock()
	c.unparkedLocked()
	c.idledOut = expired
	c.mu.Unlock()
	c.run(!expired)
}

// unparkLocked takes a parked connection back from the poller. It reports
// whether the caller now owns the reader (and must run c.run); false if
// the connection was not parked or the poller's wake already has it.
// c.mu is held.
func (c *conn) unparkLocked() bool {
	if c.parked == nil || !c.parked.Cancel() {
		return false
	}
	c.unparkedLocked()
	return true
}

// unparkedLocked clears the parked state. c.mu is held.
func (c *conn) unparkedLocked() {
	if c.parked == nil {
		return
	}
	c.parked = nil
	c.s.cfg.Metrics.parked(-1)
}

// stopped reports whether the reader must stop before reading again, and
// with what error (nil for a graceful stop).
func (c *conn) stopped() (error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.idledOut:
		return fmt.Errorf("parked: nothing received for %v: %w", c.s.cfg.Link.IdleTimeout, link.ErrIdleTimeout), true
	case c.closed:
		return net.ErrClosed, true
	case c.stopping:
		return nil, true
	}
	return nil, false
}
