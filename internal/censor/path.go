package censor

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// PathAction is what a Path does to the flows through it.
type PathAction int

// The actions of a Path. Each applies at once to the flows already open as
// well as to new ones: what a censor does to the path a conversation is
// using, in the middle of it.
const (
	// PathForward relays faithfully.
	PathForward PathAction = iota
	// PathBlackhole drops everything both ways: open flows go silent,
	// new connections are accepted (see the package's limitations) and
	// never answered. What it dropped is gone: a flow that lives through
	// a black hole is broken when the path forwards again.
	PathBlackhole
	// PathReset resets every open flow (RST to the client) and every new
	// connection after its first bytes.
	PathReset
	// PathThrottle polices each direction of each flow to a rate, as
	// iptables' hashlimit or tc's police do: see Path.Set.
	PathThrottle
	// PathDropUp drops what clients send and still delivers what the
	// server sends, as a firewall that discards a flagged flow's client
	// packets does.
	PathDropUp
)

func (a PathAction) String() string {
	switch a {
	case PathForward:
		return "forward"
	case PathBlackhole:
		return "blackhole"
	case PathReset:
		return "reset"
	case PathThrottle:
		return "throttle"
	case PathDropUp:
		return "drop-up"
	}
	return fmt.Sprintf("PathAction(%d)", int(a))
}

// TCP's figures that a policed flow lives by.
const (
	// MSS is the segment a policer judges: an Ethernet path's TCP payload.
	MSS = 1448
	// MinRTO and MaxRTO bound Linux's retransmission timeout, which
	// doubles with each loss of the same segment.
	MinRTO = 200 * time.Millisecond
	MaxRTO = 120 * time.Second
)

type pathState struct {
	action PathAction
	rate   int           // PathThrottle: bytes per second
	change chan struct{} // closed when the state is replaced
}

// Path is a loopback relay to one endpoint whose treatment of traffic
// changes at run time (Set) and applies to open flows at once: the censor
// acting on "the path in use", which the rules of Censor, decided once per
// flow, cannot. Close stops it and every flow.
type Path struct {
	ln       net.Listener
	upstream string
	state    atomic.Pointer[pathState]
	flows    atomic.Int64
	wg       sync.WaitGroup
	conns    connSet
}

// NewPath starts a Path on 127.0.0.1 to upstream, forwarding.
func NewPath(upstream string) (*Path, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("censor: path: %w", err)
	}
	p := &Path{ln: ln, upstream: upstream}
	p.state.Store(&pathState{change: make(chan struct{})})
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is where clients connect.
func (p *Path) Addr() string { return p.ln.Addr().String() }

// Flows counts the connections accepted so far.
func (p *Path) Flows() int64 { return p.flows.Load() }

// Set changes what the path does, at once, to open flows and new ones.
// With PathThrottle, each direction of each flow is policed to
// bytesPerSec: it is cut into MSS-sized segments, a token bucket of a
// tenth of a second's worth (at least one segment) admits them, and a
// segment that finds the bucket short is dropped and sent again after
// TCP's retransmission timeout (MinRTO, doubling while it keeps being
// dropped, up to MaxRTO), with everything behind it waiting, as TCP
// delivers in order. Data within the rate passes with no delay; above it,
// goodput falls well below the rate and stalls grow, as they do for real
// TCP behind a policer.
func (p *Path) Set(a PathAction, bytesPerSec int) {
	if a == PathThrottle && bytesPerSec <= 0 {
		panic("censor: PathThrottle needs a positive rate")
	}
	old := p.state.Swap(&pathState{action: a, rate: bytesPerSec, change: make(chan struct{})})
	close(old.change)
	if a == PathReset {
		p.conns.each(reset)
	}
}

// Close stops the path, ends every flow and waits for its goroutines.
func (p *Path) Close() error {
	err := p.ln.Close()
	p.conns.closeAll()
	p.wg.Wait()
	return err
}

func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// untrack forgets c and closes it.
func (p *Path) untrack(c net.Conn) {
	p.conns.remove(c)
	c.Close()
}

func (p *Path) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.flows.Add(1)
		if !p.conns.add(c) {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.flow(c)
		}()
	}
}

// flow relays one client connection under the path's state.
func (p *Path) flow(client net.Conn) {
	defer p.untrack(client)
	switch p.state.Load().action {
	case PathReset:
		client.Read(make([]byte, 1)) // the client's first bytes arrive
		reset(client)
		return
	}
	up, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil || !p.conns.add(up) {
		if up != nil {
			up.Close()
		}
		reset(client)
		return
	}
	defer p.untrack(up)
	done := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(done)
		p.pump(client, up, false)
	}()
	p.pump(up, client, true)
	// One direction ended: end the other.
	client.Close()
	up.Close()
	<-done
}

// pump copies src to dst under the path's state until either fails; up
// is the client-to-server direction.
func (p *Path) pump(dst, src net.Conn, up bool) {
	var pol policer
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.deliver(dst, buf[:n], up, &pol) {
			return
		}
		if err != nil {
			return
		}
	}
}

// deliver writes b to dst as the state says, segment by segment; false
// when dst failed.
func (p *Path) deliver(dst net.Conn, b []byte, up bool, pol *policer) bool {
	for len(b) > 0 {
		st := p.state.Load()
		switch {
		case st.action == PathBlackhole, st.action == PathDropUp && up:
			return true // dropped, all of it
		case st.action == PathReset:
			return false
		case st.action == PathThrottle:
			seg := b[:min(len(b), MSS)]
			if !pol.admit(len(seg), st) {
				continue // the state changed while the segment waited
			}
			if _, err := dst.Write(seg); err != nil {
				return false
			}
			b = b[len(seg):]
		default:
			_, err := dst.Write(b)
			return err == nil
		}
	}
	return true
}

// policer is one direction's token bucket and the retransmission timer
// of the segment it holds back.
type policer struct {
	tokens float64
	last   time.Time
	rate   int
	rto    time.Duration
}

// admit waits until a segment of n bytes passes the policer of st, as TCP
// retransmission would bring it back: true once it passes, false if the
// state changed meanwhile.
func (pol *policer) admit(n int, st *pathState) bool {
	burst := float64(max(st.rate/10, MSS))
	now := time.Now()
	if pol.rate != st.rate || pol.last.IsZero() {
		*pol = policer{tokens: burst, last: now, rate: st.rate, rto: MinRTO}
	}
	for {
		pol.tokens = min(burst, pol.tokens+now.Sub(pol.last).Seconds()*float64(st.rate))
		pol.last = now
		if pol.tokens >= float64(n) {
			pol.tokens -= float64(n)
			pol.rto = MinRTO
			return true
		}
		// Dropped: TCP sends it again after its timeout.
		t := time.NewTimer(pol.rto)
		select {
		case <-t.C:
		case <-st.change:
			t.Stop()
			return false
		}
		pol.rto = min(2*pol.rto, MaxRTO)
		now = time.Now()
	}
}
