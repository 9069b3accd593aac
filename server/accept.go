package server

import (
	"time"

	"github.com/magpie-im/magpie/router"
)

// The accept policy. A connection is admitted unless the server is closed
// or full, or its source network holds its share; while it is
// mid-handshake it holds one of MaxHandshakes places. Sockets that never
// finish (half-open, slowloris) would otherwise hold those places until
// their handshake deadline (10–30 s, drawn per connection so that probes
// learn nothing from it) and lock honest clients out: instead, when the
// places are full, or the server is, the connection that has been
// mid-handshake longest is closed. An honest handshake takes a round trip,
// so under attack the deadline shrinks to however long the attacker's
// rate leaves, and the attacker's own sockets are what is shed.

// admit tracks a new connection, or says why it is refused: the server is
// closed, or holds as many connections as it may, in all or from the
// connection's network.
//
// Only connections with no account yet (mid-handshake, or not registered)
// count toward their network's cap: a device that authenticates leaves the
// count (authenticated). An attacker without accounts is held to the cap,
// while any number of users behind one address (a reverse proxy or CDN in
// front of a tls+proxy listener, a relay, a campus NAT) are not.
func (s *Server) admit(c *conn) (why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return "closed"
	case s.byNetwork[c.network] >= s.cfg.MaxConnsPerNetwork:
		return "network"
	case len(s.conns) >= s.cfg.MaxConns && s.handshaking.Len() == 0:
		return "connections"
	}
	if len(s.conns) >= s.cfg.MaxConns || s.handshaking.Len() >= s.cfg.MaxHandshakes {
		s.evictOldestLocked()
	}
	c.idle.L = &c.mu
	c.handshaking = s.handshaking.PushBack(c)
	s.conns[c] = struct{}{}
	s.byNetwork[c.network]++
	c.unauthCounted = true
	s.connWG.Add(1)
	return ""
}

// authenticated takes a connection whose device has an account out of its
// network's count.
func (s *Server) authenticated(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.uncountLocked(c)
}

func (s *Server) uncountLocked(c *conn) {
	if !c.unauthCounted {
		return
	}
	c.unauthCounted = false
	if s.byNetwork[c.network]--; s.byNetwork[c.network] <= 0 {
		delete(s.byNetwork, c.network)
	}
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.handshakeDoneLocked(c)
	s.uncountLocked(c)
	s.mu.Unlock()
	s.connWG.Done()
}

// evictOldestLocked closes the connection that has been mid-handshake
// longest; its handshake then fails and it is untracked as usual.
func (s *Server) evictOldestLocked() {
	e := s.handshaking.Front()
	if e == nil {
		return
	}
	old := s.handshaking.Remove(e).(*conn)
	old.handshaking = nil
	s.cfg.Metrics.refused("handshakes")
	s.log.Debug("closing the oldest handshake to make room", "remote", old.nc.RemoteAddr().String(), "waited", time.Since(old.accepted))
	old.nc.Close()
}

// handshakeDone gives up c's place among the connections mid-handshake.
func (s *Server) handshakeDone(c *conn) {
	s.mu.Lock()
	s.handshakeDoneLocked(c)
	// Which of a device's connections is its current one is decided by
	// when each handshake began and was done (router.Handshake.Replaces),
	// whichever attaches last.
	// By the configured clock (Config.Now), so that tests can give nodes
	// clocks that disagree, as machines' clocks do.
	now := s.cfg.Now()
	c.hs = router.Handshake{Began: now.Add(-time.Since(c.accepted)), Done: now}
	s.mu.Unlock()
}

func (s *Server) handshakeDoneLocked(c *conn) {
	if c.handshaking != nil {
		s.handshaking.Remove(c.handshaking)
		c.handshaking = nil
	}
}
