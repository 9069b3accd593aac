package obfs

import (
	"context"
	crand "crypto/rand"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/magpie-im/magpie/transport"
)

// Config tunes the server side. The zero value gives the defaults.
type Config struct {
	// ProbeMin and ProbeMax bound the random time, drawn per connection
	// when it is accepted, after which a connection that has not sent a
	// valid, fresh first message is closed (default 10 s and 30 s). A
	// legitimate client must finish its first message within ProbeMin.
	ProbeMin, ProbeMax time.Duration
	// ReplayWindow is how long first messages are remembered to refuse
	// replays (default 3 h). Whatever its value, an entry is kept at least
	// until its timestamp can no longer be accepted.
	ReplayWindow time.Duration
	// MaxHandshakes bounds the connections being handshaken or held as
	// probes at once (default 4096); beyond it new connections are closed
	// at once.
	MaxHandshakes int
	// MaxReplayEntries bounds the replay cache (default 1<<18); when it is
	// full of live entries, new handshakes are refused as probes.
	MaxReplayEntries int
	// Now is the server's clock (default time.Now); tests replace it.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.ProbeMin <= 0 {
		c.ProbeMin = 10 * time.Second
	}
	if c.ProbeMax <= 0 {
		c.ProbeMax = 30 * time.Second
	}
	if c.ProbeMax < c.ProbeMin {
		c.ProbeMax = c.ProbeMin
	}
	if c.ReplayWindow <= 0 {
		c.ReplayWindow = 3 * time.Hour
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 4096
	}
	if c.MaxReplayEntries <= 0 {
		c.MaxReplayEntries = 1 << 18
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Listen accepts obfs connections on a TCP address.
func Listen(address string, key ServerKey, cfg Config) (net.Listener, error) {
	if key == (ServerKey{}) {
		return nil, errors.New("obfs: no server key")
	}
	inner, err := net.Listen("tcp", address)
	if err != nil {
		return nil, err
	}
	return NewListener(inner, key, cfg), nil
}

// NewListener wraps inner: Accept returns only connections whose obfs
// handshake has completed. Handshakes run in their own goroutines, so a
// slow or silent client does not hold up others. Close closes inner and
// every connection still in its handshake.
func NewListener(inner net.Listener, key ServerKey, cfg Config) net.Listener {
	l := &listener{
		inner:   inner,
		key:     key,
		hk:      newHandshakeKey(key.NodeID, key.Public),
		cfg:     cfg.withDefaults(),
		ready:   make(chan net.Conn),
		done:    make(chan struct{}),
		failed:  make(chan struct{}),
		pending: make(map[net.Conn]struct{}),
	}
	l.replay = newReplayCache(l.cfg.MaxReplayEntries)
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

type listener struct {
	inner  net.Listener
	key    ServerKey
	hk     *handshakeKey
	cfg    Config
	replay *replayCache

	ready     chan net.Conn
	done      chan struct{}
	failed    chan struct{} // closed when inner.Accept fails for good
	acceptErr error
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu      sync.Mutex
	pending map[net.Conn]struct{}
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-l.failed:
		return nil, l.acceptErr
	}
}

func (l *listener) Addr() net.Addr { return l.inner.Addr() }

func (l *listener) Close() error {
	err := net.ErrClosed
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.inner.Close()
		l.mu.Lock()
		for c := range l.pending {
			c.Close()
		}
		l.mu.Unlock()
	})
	l.wg.Wait()
	return err
}

func (l *listener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		raw, err := l.inner.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-l.done:
					t.Stop()
					return
				}
				continue
			}
			l.acceptErr = err
			close(l.failed)
			return
		}
		delay = 0
		l.mu.Lock()
		select {
		case <-l.done:
			l.mu.Unlock()
			raw.Close()
			return
		default:
		}
		if len(l.pending) >= l.cfg.MaxHandshakes {
			l.mu.Unlock()
			raw.Close()
			continue
		}
		l.pending[raw] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.handshake(raw)
	}
}

func (l *listener) forget(raw net.Conn) {
	l.mu.Lock()
	delete(l.pending, raw)
	l.mu.Unlock()
}

// handshake runs the server side of the handshake on raw. The deadline is
// drawn before a byte is read; a connection that does not produce a valid
// first message in time, or produces anything else, gets no answer and is
// closed exactly at that deadline (see hold).
func (l *listener) handshake(raw net.Conn) {
	defer l.wg.Done()
	rng := newRand()
	span := l.cfg.ProbeMax - l.cfg.ProbeMin
	wait := l.cfg.ProbeMin
	if span > 0 {
		wait += time.Duration(rng.Int64N(int64(span) + 1))
	}
	deadline := time.Now().Add(wait)
	_ = raw.SetReadDeadline(deadline)

	buf := make([]byte, 0, maxFirstPacket+1)
	var hello clientHello
	var scan helloScan
	for {
		n, err := raw.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if n > 0 {
			st, ch := scan.parse(l.hk, buf, epochHour(l.cfg.Now()))
			if st == helloInvalid {
				l.hold(raw, deadline)
				return
			}
			if st == helloOK {
				hello = ch
				break
			}
		}
		if err != nil {
			l.hold(raw, deadline)
			return
		}
	}
	now := l.cfg.Now()
	// The MAC stays acceptable until the server's hour passes hour+1.
	expiry := time.Unix((hello.hour+2)*3600, 0)
	if w := now.Add(l.cfg.ReplayWindow); w.After(expiry) {
		expiry = w
	}
	if !l.replay.add(hello.mark, now, expiry) {
		l.hold(raw, deadline)
		return
	}
	c, err := l.respond(raw, rng, &hello, deadline)
	if err != nil {
		l.hold(raw, deadline)
		return
	}
	l.forget(raw)
	select {
	case l.ready <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *listener) respond(raw net.Conn, rng *rand.Rand, hello *clientHello, deadline time.Time) (net.Conn, error) {
	X := representativeToU(&hello.repr)
	eph, err := newEphemeralKey(crand.Reader)
	if err != nil {
		return nil, err
	}
	defer clear(eph.private[:])
	dhEph, err := x25519(eph.private[:], X[:])
	if err != nil {
		return nil, err
	}
	dhStatic, err := x25519(l.key.Private[:], X[:])
	if err != nil {
		return nil, err
	}
	keys, auth := ntor(dhEph, dhStatic, l.hk, &X, &eph.public)
	reply := buildServerReply(rng, l.hk, eph, &auth, hello.hour)
	_ = raw.SetWriteDeadline(deadline)
	if _, err := raw.Write(reply); err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	c := newConn(raw, raw,
		newFrameCipher(&keys.clientAEAD, &keys.clientLen),
		newFrameCipher(&keys.serverAEAD, &keys.serverLen), rng)
	clear(keys.clientAEAD[:])
	clear(keys.serverAEAD[:])
	return c, nil
}

// hold is what a server does with a connection that did not send a valid,
// fresh first message: it answers nothing, reads and discards until the
// deadline drawn at accept, and closes then. The peer closing its side
// does not bring the close forward, so the time of our FIN depends on
// neither the bytes received nor how many there were.
func (l *listener) hold(raw net.Conn, deadline time.Time) {
	defer func() {
		raw.Close()
		l.forget(raw)
	}()
	scratch := make([]byte, 4096)
	for {
		if _, err := raw.Read(scratch); err != nil {
			break
		}
	}
	if d := time.Until(deadline); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-l.done:
		}
	}
}

// replayCache remembers the marks of accepted first messages.
type replayCache struct {
	mu        sync.Mutex
	m         map[[markLen]byte]time.Time
	max       int
	lastSweep time.Time
}

func newReplayCache(max int) *replayCache {
	return &replayCache{m: make(map[[markLen]byte]time.Time), max: max}
}

// add records key until expiry and reports whether it was new (or expired).
func (r *replayCache) add(key [markLen]byte, now, expiry time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if exp, ok := r.m[key]; ok && now.Before(exp) {
		return false
	}
	if len(r.m) >= r.max || now.Sub(r.lastSweep) > time.Minute {
		r.lastSweep = now
		for k, exp := range r.m {
			if !now.Before(exp) {
				delete(r.m, k)
			}
		}
		if len(r.m) >= r.max {
			return false
		}
	}
	r.m[key] = expiry
	return true
}

// Transport is the obfs transport for transport.Transport: Cert is used
// to dial (a client), Key and Config to listen (a server).
type Transport struct {
	Cert   string
	Key    ServerKey
	Config Config
}

var _ transport.Transport = (*Transport)(nil)

// Name is "obfs".
func (t *Transport) Name() string { return transport.Obfs }

// Dialer returns a client that dials with t.Cert.
func (t *Transport) Dialer() transport.Dialer { return dialer{cert: t.Cert} }

// Listen accepts obfs connections on address with t.Key.
func (t *Transport) Listen(address string) (net.Listener, error) {
	return Listen(address, t.Key, t.Config)
}

type dialer struct{ cert string }

func (d dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return Dial(ctx, network, address, d.cert)
}
