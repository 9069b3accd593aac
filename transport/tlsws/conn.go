package tlsws

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// closeGrace is how long Close waits for the WebSocket close handshake
// before it closes the underlying connection outright.
const closeGrace = time.Second

// wsConn is Magpie's byte stream over a WebSocket: binary messages, one per
// Write, read as a stream. Addresses are those of the underlying TCP
// connection on both sides.
//
// Deadlines follow websocket.NetConn: a deadline that expires while a Read
// or Write is in progress closes the connection (the link treats an expired
// deadline as fatal anyway).
type wsConn struct {
	net.Conn // websocket.NetConn
	raw      net.Conn
	local    net.Addr
	remote   net.Addr

	closeOnce sync.Once
	closed    atomic.Bool
}

// Read reads the stream; once Close was called it fails with
// net.ErrClosed, even after the peer's close (websocket.NetConn would say
// EOF again), as a net.Conn does.
func (c *wsConn) Read(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Read(p)
	if err != nil && c.closed.Load() {
		err = net.ErrClosed
	}
	return n, err
}

func newWSConn(ws *websocket.Conn, raw net.Conn, local, remote net.Addr) *wsConn {
	return &wsConn{
		Conn:   websocket.NetConn(context.Background(), ws, websocket.MessageBinary),
		raw:    raw,
		local:  local,
		remote: remote,
	}
}

func (c *wsConn) LocalAddr() net.Addr  { return c.local }
func (c *wsConn) RemoteAddr() net.Addr { return c.remote }

// Close sends a WebSocket close frame and waits up to closeGrace for the
// peer's, then closes the connection. It never blocks much longer than
// closeGrace.
func (c *wsConn) Close() error {
	err := net.ErrClosed
	c.closed.Store(true)
	c.closeOnce.Do(func() {
		err = nil
		done := make(chan struct{})
		go func() {
			c.Conn.Close()
			close(done)
		}()
		t := time.NewTimer(closeGrace)
		select {
		case <-done:
		case <-t.C:
			c.raw.Close() // unblocks the close handshake
			<-done
		}
		t.Stop()
		c.raw.Close()
	})
	return err
}
