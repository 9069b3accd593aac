package client_test

import (
	"context"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/time/rate"
)

// proxy forwards TCP connections to upstream with the faults a network or a
// censor adds, switched on and off while it runs. Its zero faults forward
// faithfully.
type proxy struct {
	ln       net.Listener
	upstream string
	bps      atomic.Int64 // bytes per second per direction of each new connection (0: unlimited)

	cuts     atomic.Int32 // the next cuts connections are cut after a random number of bytes
	down     atomic.Bool  // new connections are closed at once: the server is unreachable
	hole     atomic.Bool  // a black hole: connections stay open, nothing is forwarded, old or new
	reset    atomic.Bool  // new connections are reset (RST) after the client's first bytes
	accepted atomic.Int32 // connections accepted
	toServer atomic.Int64 // bytes forwarded to upstream
	toClient atomic.Int64 // bytes forwarded back to clients

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// newProxy listens on loopback; it is closed, with every connection, when
// the test ends. An empty upstream makes a listener that never answers
// unless reset is set.
func newProxy(t testing.TB, upstream string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.hole.Store(upstream == "")
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.closeAll()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

// blackHole is an address that accepts connections and never answers, as a
// censor's black hole does.
func blackHole(t testing.TB) string { return newProxy(t, "").Addr() }

// resetter is an address that resets every connection after its first
// bytes.
func resetter(t testing.TB) string {
	p := newProxy(t, "")
	p.reset.Store(true)
	return p.Addr()
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(p.conns, c)
	}
}

// closeAll cuts every open connection (new ones are still accepted).
func (p *proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			p.mu.Lock()
			p.conns = nil
			p.mu.Unlock()
			return
		}
		p.accepted.Add(1)
		if !p.track(c) {
			c.Close()
			return
		}
		switch {
		case p.down.Load():
			p.untrack(c)
		case p.reset.Load():
			c.Read(make([]byte, 1)) // let the client's first bytes arrive
			c.(*net.TCPConn).SetLinger(0)
			p.untrack(c)
		case p.hole.Load():
			p.wg.Go(func() { p.pipe(nil, c, nil, nil) })
		default:
			p.wg.Go(func() { p.connect(c) })
		}
	}
}

func (p *proxy) connect(c net.Conn) {
	up, err := net.Dial("tcp", p.upstream)
	if err != nil || !p.track(up) {
		p.untrack(c)
		return
	}
	budget := int64(-1)
	if p.cuts.Add(-1) >= 0 {
		budget = 64<<10 + mrand.Int64N(1<<20) // cut somewhere in the first ~1 MB
	}
	var left atomic.Int64
	left.Store(budget)
	cut := func(n int) bool { return budget >= 0 && left.Add(-int64(n)) < 0 }
	p.wg.Go(func() { p.pipe(up, c, &p.toServer, cut) })
	p.pipe(c, up, &p.toClient, cut)
}

// pipe copies src to dst (nil: swallows it) until either ends, the budget
// runs out, or the proxy becomes a black hole (then it swallows).
func (p *proxy) pipe(dst, src net.Conn, count *atomic.Int64, cut func(int) bool) {
	defer p.untrack(src)
	if dst != nil {
		defer p.untrack(dst)
	}
	var lim *rate.Limiter
	buf := make([]byte, 16<<10)
	if bps := p.bps.Load(); bps > 0 {
		buf = buf[:min(len(buf), 4096)]
		lim = rate.NewLimiter(rate.Limit(bps), len(buf))
	}
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if dst == nil || p.hole.Load() {
			continue
		}
		if cut != nil && cut(n) {
			return
		}
		if lim != nil && lim.WaitN(context.Background(), n) != nil {
			return
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
		count.Add(int64(n))
	}
}

// faultDialer is a client's plain-tcp dialer that can lose what the client
// writes or what the server sends, and hold new connections back.
type faultDialer struct {
	cutNextWrite atomic.Bool // the next write closes its connection instead: it never reaches the server
	dials        atomic.Int32

	mu    sync.Mutex
	conns []*faultConn
	gate  chan struct{} // non-nil: dials wait until it is closed
}

func (d *faultDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	gate := d.gate
	d.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.dials.Add(1)
	fc := &faultConn{Conn: c, d: d}
	d.mu.Lock()
	d.conns = append(d.conns, fc)
	d.mu.Unlock()
	return fc, nil
}

// hold makes new dials wait until the returned release is called.
func (d *faultDialer) hold() (release func()) {
	gate := make(chan struct{})
	d.mu.Lock()
	d.gate = gate
	d.mu.Unlock()
	return sync.OnceFunc(func() {
		d.mu.Lock()
		d.gate = nil
		d.mu.Unlock()
		close(gate)
	})
}

// deafen makes the connections open now drop everything the server sends
// from here on (new connections hear it again).
func (d *faultDialer) deafen() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.deaf.Store(true)
	}
}

type faultConn struct {
	net.Conn
	d    *faultDialer
	deaf atomic.Bool
}

func (c *faultConn) Write(b []byte) (int, error) {
	if c.d.cutNextWrite.Swap(false) {
		c.Conn.Close()
		return 0, net.ErrClosed
	}
	return c.Conn.Write(b)
}

func (c *faultConn) Read(b []byte) (int, error) {
	for {
		n, err := c.Conn.Read(b)
		if err != nil || !c.deaf.Load() {
			return n, err
		}
	}
}
