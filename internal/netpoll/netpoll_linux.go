//go:build linux

package netpoll

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Poller waits for parked connections to become readable. It owns one
// epoll instance, a goroutine that hands out ready descriptors, one that
// expires deadlines, and up to maxIdleReaders idle goroutines that run
// ready callbacks.
//
// The epoll descriptor is itself registered with the Go runtime's poller
// (an epoll set is readable when any descriptor in it is ready, epoll(7)),
// so the loop waits like any goroutine blocked on a socket, and calls
// epoll_wait(2) only with a zero timeout. A goroutine blocked in
// epoll_wait instead holds an OS thread in a system call, and the
// runtime's monitor thread (sysmon) keeps waking to watch it: with 1,000
// keepalives a second, sysmon had 30% of an idle server's CPU samples, and
// waiting this way cut the server's CPU by a sixth.
type Poller struct {
	epfd int
	file *os.File // epfd, for the runtime's poller; closing it closes epfd

	mu      sync.Mutex
	waiting map[uint64]*Waiter
	next    uint64
	closed  bool
	stop    chan struct{} // closed by Close: ends the sweeper and idle readers
	done    sync.WaitGroup

	wakes       chan wake // unbuffered: a send succeeds only to an idle reader
	idleReaders atomic.Int32
}

// Waiter is one parked connection.
type Waiter struct {
	p        *Poller
	id       uint64
	rc       syscall.RawConn
	deadline time.Time // zero: none
	ready    func(expired bool)
}

// sweepEvery is how often the sweeper looks for waiters past their
// deadline: deadlines are kept to about this precision. One sweep a second
// over all parked connections is cheaper than a runtime timer armed and
// stopped for each of them every time it parks.
const sweepEvery = time.Second

// New starts a Poller.
func New() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("netpoll: epoll_create1: %w", err)
	}
	// Non-blocking, so that os.NewFile registers it with the runtime's
	// poller instead of treating it as a blocking file.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("netpoll: epoll descriptor: %w", err)
	}
	file := os.NewFile(uintptr(epfd), "epoll")
	rc, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("netpoll: epoll descriptor: %w", err)
	}
	p := &Poller{epfd: epfd, file: file, waiting: map[uint64]*Waiter{}, next: 1, stop: make(chan struct{}), wakes: make(chan wake)}
	p.done.Add(2)
	go p.loop(rc)
	go p.sweep()
	return p, nil
}

// Wait parks the connection rc: once it is readable, has hung up or has
// failed, ready(false) is called in one of the poller's goroutines
// (possibly one that ran earlier callbacks); if deadline (unless zero)
// passes first, ready(true). Either happens once, unless Cancel wins
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
// descriptor is already out, and after Close so is the set.
func (w *Waiter) disarm() {
	if w.p.closed {
		return // epfd is closed, and its number may be another file's
	}
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
	close(p.stop)
	// Closing the file wakes the loop (its wait fails with ErrClosed) and
	// closes epfd once no call on it is in progress.
	err := p.file.Close()
	p.done.Wait()
	return err
}

// loop waits for parked descriptors to become ready and starts their
// owners' readers.
func (p *Poller) loop(rc syscall.RawConn) {
	defer p.done.Done()
	events := make([]unix.EpollEvent, 256)
	// One Read for the poller's life: its callback takes what is ready and
	// reports false, so the runtime parks the loop until the epoll set is
	// readable again. The set's readiness is edge-triggered in the
	// runtime's poller, so the callback drains it: a short batch means it
	// is empty, and anything that becomes ready afterwards is a new edge
	// (which the runtime records even if it comes before the loop parks).
	rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), events, 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return true // not expected with a valid epfd: stop rather than spin
			}
			if !p.dispatch(events[:n]) {
				return true // closed
			}
			if n < len(events) {
				return false
			}
		}
	})
}

// dispatch hands each ready waiter to a reader. It reports false once the
// poller is closed.
func (p *Poller) dispatch(events []unix.EpollEvent) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, ev := range events {
		id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
		w := p.waiting[id]
		if w == nil {
			continue // cancelled meanwhile
		}
		delete(p.waiting, id)
		p.start(w, false)
	}
	return true
}

// maxIdleReaders bounds the goroutines kept waiting for the next wake.
const maxIdleReaders = 16

// start runs w.ready(expired) in a goroutine: an idle one from a
// previous wake if there is one, else a new one. Reusing them matters for
// keepalives: a new goroutine per wake, and growing its stack as it reads
// and answers, were a tenth of the server's CPU for each ping.
func (p *Poller) start(w *Waiter, expired bool) {
	select {
	case p.wakes <- wake{w, expired}:
	default:
		go p.reader(wake{w, expired})
	}
}

// wake is one call of a Waiter's ready.
type wake struct {
	w       *Waiter
	expired bool
}

// reader runs wakes until Close, or until enough other readers are idle.
func (p *Poller) reader(next wake) {
	for {
		next.w.ready(next.expired)
		if p.idleReaders.Add(1) > maxIdleReaders {
			p.idleReaders.Add(-1)
			return
		}
		select {
		case next = <-p.wakes:
			p.idleReaders.Add(-1)
		case <-p.stop:
			p.idleReaders.Add(-1)
			return
		}
	}
}

// sweep expires waiters past their deadline, once every sweepEvery.
func (p *Poller) sweep() {
	defer p.done.Done()
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.mu.Lock()
			if p.closed {
				p.mu.Unlock()
				return
			}
			for id, w := range p.waiting {
				if !w.deadline.IsZero() && now.After(w.deadline) {
					delete(p.waiting, id)
					w.disarm()
					p.start(w, true)
				}
			}
			p.mu.Unlock()
		}
	}
}

// WaitReadable waits up to d for nc to have bytes to read (or to have hung
// up or failed), without consuming any. It returns false if d passed with
// nothing to read. It uses nc's read deadline, and clears it before
// returning, so the caller's next Read sets its own. With d <= 0 it only
// looks, and leaves the deadline alone.
func WaitReadable(nc net.Conn, rc syscall.RawConn, d time.Duration) (bool, error) {
	readable := false
	if d <= 0 {
		// Only look: no deadline to set and clear (each is a runtime
		// timer operation, which adds up over thousands of keepalives).
		err := rc.Control(func(fd uintptr) {
			err := peek(fd)
			readable = err != unix.EAGAIN && err != unix.EINTR
		})
		return readable, err
	}
	if err := nc.SetReadDeadline(time.Now().Add(d)); err != nil {
		return false, err
	}
	err := rc.Read(func(fd uintptr) bool {
		if err := peek(fd); err == unix.EAGAIN || err == unix.EINTR {
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

// peek looks for one byte on fd without taking it or blocking, and returns
// the error number (0 if there was a byte, or the end of the stream). A
// raw recvfrom with no address buffer: unix.Recvfrom allocates one, and
// its byte, on every call, which is once per request on a busy server.
func peek(fd uintptr) unix.Errno {
	var b byte
	_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b)), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return errno
}
