//go:build !linux

package engine

import "net"

// sameUser relies on the socket's mode (0600, in a 0700 directory) where
// the peer's credentials are not at hand.
func sameUser(ln net.Listener) net.Listener { return ln }
