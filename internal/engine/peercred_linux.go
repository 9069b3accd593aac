package engine

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// sameUser accepts only connections from processes of this user. The
// socket's mode already keeps others out; this also holds when its
// directory is reachable by a mistake.
func sameUser(ln net.Listener) net.Listener { return uidListener{ln} }

type uidListener struct{ net.Listener }

func (l uidListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if peerIsMe(c) {
			return c, nil
		}
		c.Close()
	}
}

func peerIsMe(c net.Conn) bool {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return false
	}
	return int(cred.Uid) == os.Getuid()
}
