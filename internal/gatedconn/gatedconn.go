// Package gatedconn wraps a net.Conn for tests of write coalescing: it
// counts Write calls and can hold one write in the transport, as a full
// socket buffer would.
package gatedconn

import (
	"net"
	"sync"
)

// Conn is a net.Conn whose writes are counted and can be held.
type Conn struct {
	net.Conn
	// Entered receives a value when a held write has begun waiting.
	Entered chan struct{}

	mu     sync.Mutex
	writes int
	hold   chan struct{}
}

// New wraps c.
func New(c net.Conn) *Conn { return &Conn{Conn: c, Entered: make(chan struct{}, 1)} }

// HoldNext makes the next Write wait, after a value on Entered, until
// release is called. Writes after it pass straight through.
func (g *Conn) HoldNext() (release func()) {
	hold := make(chan struct{})
	g.mu.Lock()
	g.hold = hold
	g.mu.Unlock()
	return func() { close(hold) }
}

// Write counts the write, waits if it is held, then writes.
func (g *Conn) Write(p []byte) (int, error) {
	g.mu.Lock()
	g.writes++
	hold := g.hold
	g.hold = nil
	g.mu.Unlock()
	if hold != nil {
		g.Entered <- struct{}{}
		<-hold
	}
	return g.Conn.Write(p)
}

// Writes returns how many times Write has been called.
func (g *Conn) Writes() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.writes
}
