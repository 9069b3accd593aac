//go:build linux

package netpoll

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Poller waits for parked connections to become readable. It owns one
// epoll instance and one goroutine.
type Poller struct {
	epfd int
	wake int // eventfd: makes the loop notice Close

	mu      sync.Mutex
	waiting map[uint64]*Waiter
	next    uint64
	closed  bool
	done    chan struct{}
}

// Waiter is one parked connection.
type Waiter struct {
	p        *Poller
	id       uint64
	rc       syscall.RawConn
	deadline time.Time // zero: none
	ready    func(expired bool)
}

// sweepEvery is how often the loop looks for waiters past their deadline:
// deadlines are kept to about this precision. One sweep a second over all
// parked connections is cheaper than a runtime timer armed and stopped
// for each of them every time it parks.
const sweepEvery = time.Second

// New starts a Poller.
func New() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("netpoll: epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("netpoll: eventfd: %w", err)
	}
	// The eventfd's event carries id 0, which no Waiter has.
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, fmt.Errorf("netpoll: registering the wake eventfd: %w", err)
	}
	p := &Poller{epfd: epfd, wake: wake, waiting: map[uint64]*Waiter{}, next: 1, done: make(chan struct{})}
	go p.loop()
	return p, nil
}

// Wait parks the connection rc: once it is readable, has hung up or has
// failed, ready(false) is called in a new goroutine; if deadline (unless
// zero) passes first, ready(true). Either happens once, unless Cancel wins
// first. The caller must not read from the connection while it is parked,
// and must Cancel before closing it (see Waiter.Cancel).
//
// Readiness is level-triggered: bytes that arrived before Wait count.
// Deadlines are checked about once a second.
func (p *Poller) Wait(rc syscall.RawConn, deadline time.Time, ready func(expired bool)) (*Waiter, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	w := &Waiter{p: p, id: p.next, rc: rc, deadline: deadline, ready: ready}
	p.next++
	ev := unix.EpollEvent{
		// One-shot: the loop hands the descriptor back with a single
		// event, and the registration stays, disabled, until the next Wait
		// re-arms it (MOD) or the descriptor is closed (which removes it).
		Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
		Fd:     int32(uint32(w.id)),
		Pad:    int32(uint32(w.id >> 32)),
	}
	var ctlErr error
	// Inside Control the descriptor cannot be closed (or its number
	// reused) under us.
	err := rc.Control(func(fd uintptr) {
		ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		if errors.Is(ctlErr, unix.ENOENT) {
			ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if err == nil {
		err = ctlErr
	}
	if err != nil {
		return nil, fmt.Errorf("netpoll: parking: %w", err)
	}
	p.waiting[w.id] = w
	return w, nil
}

// Cancel unparks the connection without waiting for it to become
// readable. It reports whether it won: true means ready has not been and
// will not be called; false means ready was already scheduled.
//
// Call Cancel before closing a parked connection. Closing a descriptor
// removes it from epoll, but a descriptor number is reused at once, and a
// registration must never be left for the next connection to trip over.
func (w *Waiter) Cancel() bool {
	p := w.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waiting[w.id] != w {
		return false
	}
	delete(p.waiting, w.id)
	w.disarm()
	return true
}

// disarm takes w's descriptor out of the epoll set; p.mu is held. A closed
// descriptor is already out.
func (w *Waiter) disarm() {
	w.rc.Control(func(fd uintptr) {
		unix.EpollCtl(w.p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// Parked returns how many connections are parked.
func (p *Poller) Parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiting)
}

// Close stops the poller. Connections still parked are not woken: their
// owners must Cancel them (a server closes its connections first).
func (p *Poller) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1) // an eventfd counter is a host-endian uint64
	unix.Write(p.wake, one[:])
	<-p.done
	unix.Close(p.wake)
	return unix.Close(p.epfd)
}

func (p *Poller) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	lastSweep := time.Now()
	for {
		n, err := unix.EpollWait(p.epfd, events, int(sweepEvery/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			// Not expected with a valid epfd; stop rather than spin.
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		for _, ev := range events[:max(n, 0)] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			w := p.waiting[id]
			if w == nil {
				continue // the eventfd, or cancelled meanwhile
			}
			delete(p.waiting, id)
			go w.ready(false)
		}
		if now := time.Now(); now.Sub(lastSweep) >= sweepEvery {
			lastSweep = now
			for id, w := range p.waiting {
				if !w.deadline.IsZero() && now.After(w.deadline) {
					delete(p.waiting, id)
					w.disarm()
					go w.ready(true)
				}
			}
		}
		p.mu.Unlock()
	}
}

// WaitReadable waits up to d for nc to have bytes to read (or to have hung
// up or failed), without consuming any. It returns false if d passed with
// nothing to read. It uses nc's read deadline, and clears it before
// returning, so the caller's next Read sets its own. With d <= 0 it only
// looks, and leaves the deadline alone.
func WaitReadable(nc net.Conn, rc syscall.RawConn, d time.Duration) (bool, error) {
	var b [1]byte
	readable := false
	if d <= 0 {
		// Only look: no deadline to set and clear (each is a runtime
		// timer operation, which adds up over thousands of keepalives).
		err := rc.Control(func(fd uintptr) {
			_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			readable = !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR)
		})
		return readable, err
	}
	if err := nc.SetReadDeadline(time.Now().Add(d)); err != nil {
		return false, err
	}
	err := rc.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return false // wait in the runtime's poller
		}
		readable = true // bytes, end of stream or an error: the read will tell
		return true
	})
	nc.SetReadDeadline(time.Time{})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return readable, nil
}
