package servertest

import (
	"context"
	"net"
	"sync"
	"testing"

	"golang.org/x/time/rate"
)

// Relay is a TCP relay on loopback in front of a server that can slow the
// link down, each way, while connections are open: a client that reaches
// the server through it (an invite naming Addr) sees a slow network for as
// long as a test wants, say to see what an app shows while a file
// downloads.
type Relay struct {
	ln       net.Listener
	upstream string
	up, down *rate.Limiter   // client to server, server to client
	ctx      context.Context // ends with the relay: no wait outlives it
	cancel   context.CancelFunc

	mu    sync.Mutex
	conns map[net.Conn]bool // nil once closed
	wg    sync.WaitGroup
}

// relayChunk is the largest read, and the token buckets' size.
const relayChunk = 16 << 10

// StartRelay starts a relay to upstream ("host:port"), at full speed. It
// is closed, with its connections, when the test ends.
func StartRelay(t testing.TB, upstream string) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{
		ln: ln, upstream: upstream, conns: map[net.Conn]bool{},
		up: rate.NewLimiter(rate.Inf, relayChunk), down: rate.NewLimiter(rate.Inf, relayChunk),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.wg.Go(r.accept)
	t.Cleanup(r.close)
	return r
}

// Addr is where clients connect.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Throttle limits each direction of the relay to bytesPerSec (0: no
// limit), on the connections open now and later.
func (r *Relay) Throttle(bytesPerSec int) {
	lim := rate.Inf
	if bytesPerSec > 0 {
		lim = rate.Limit(bytesPerSec)
	}
	r.up.SetLimit(lim)
	r.down.SetLimit(lim)
}

// track records c to be closed with the relay; false if it is closed.
func (r *Relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns != nil {
		r.conns[c] = true
	}
	return r.conns != nil
}

func (r *Relay) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", r.upstream)
		if err != nil {
			c.Close()
			continue
		}
		if !r.track(c) || !r.track(u) {
			c.Close()
			u.Close()
			return
		}
		r.wg.Go(func() { r.pipe(u, c, r.up) })
		r.wg.Go(func() { r.pipe(c, u, r.down) })
	}
}

// pipe copies src to dst at lim's pace until either fails, then closes
// both (which ends the other direction too).
func (r *Relay) pipe(dst, src net.Conn, lim *rate.Limiter) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, relayChunk)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if lim.WaitN(r.ctx, n) != nil {
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (r *Relay) close() {
	r.cancel()
	r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.conns = nil
	r.mu.Unlock()
	r.wg.Wait()
}
