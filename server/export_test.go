package server

import "github.com/magpie-im/magpie/router"

// Tracked reports how many connections the server tracks and how many of
// them are mid-handshake, so that admission tests wait until the server
// has accepted a socket instead of sleeping and hoping it has.
func (s *Server) Tracked() (conns, handshaking int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns), s.handshaking.Len()
}

// Handshakes returns the handshake of every connection the server tracks
// that has done one (router.Handshake: what decides a device's current
// connection).
func (s *Server) Handshakes() []router.Handshake {
	s.mu.Lock()
	defer s.mu.Unlock()
	var hs []router.Handshake
	for c := range s.conns {
		if !c.hs.Done.IsZero() {
			hs = append(hs, c.hs)
		}
	}
	return hs
}
