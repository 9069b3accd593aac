package server

// Tracked reports how many connections the server tracks and how many of
// them are mid-handshake, so that admission tests wait until the server
// has accepted a socket instead of sleeping and hoping it has.
func (s *Server) Tracked() (conns, handshaking int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns), s.handshaking.Len()
}
