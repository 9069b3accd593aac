//go:build !linux

package netpoll

import (
	"net"
	"syscall"
	"time"
)

// Poller is not available on this system; New says so.
type Poller struct{}

// Waiter is not available on this system.
type Waiter struct{}

// New returns ErrUnsupported.
func New() (*Poller, error) { return nil, ErrUnsupported }

// Wait returns ErrUnsupported.
func (p *Poller) Wait(rc syscall.RawConn, deadline time.Time, ready func(expired bool)) (*Waiter, error) {
	return nil, ErrUnsupported
}

// Cancel reports false.
func (w *Waiter) Cancel() bool { return false }

// Parked returns 0.
func (p *Poller) Parked() int { return 0 }

// Close does nothing.
func (p *Poller) Close() error { return nil }

// WaitReadable reports true at once: without a poller the caller keeps
// reading in its goroutine.
func WaitReadable(nc net.Conn, rc syscall.RawConn, d time.Duration) (bool, error) {
	return true, nil
}
