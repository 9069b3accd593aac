package censor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Action is what the censor does to a flow it blocks.
type Action int

const (
	// ActionReset accepts the connection and resets it: SetLinger(0) then
	// Close, so the client reads ECONNRESET.
	ActionReset Action = iota
	// ActionBlackhole accepts the connection and never forwards or answers
	// anything; it reads and discards what the client sends until the
	// client gives up or the Censor is closed.
	ActionBlackhole
)

func (a Action) String() string {
	switch a {
	case ActionReset:
		return "reset"
	case ActionBlackhole:
		return "blackhole"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Defaults of Config.
const (
	DefaultBlackholeFor       = 180 * time.Second // Wu et al. 2023, §4.6
	DefaultFirstPacketTimeout = 3 * time.Second
	DefaultFirstPacketSize    = 4096
	DefaultMaxClientHello     = 16 << 10
	DefaultRecordFirstPackets = 256
	DefaultMaxEvents          = 10000
	DefaultDialTimeout        = 5 * time.Second
)

// Config selects the rules. The zero value forwards everything untouched
// (and still records first packets and events).
type Config struct {
	// Rule 1. BlockAddrs lists "ip:port" (that endpoint) or "ip" (every
	// port) entries; a connection is blocked when the forward's listen
	// address or its upstream address matches. BlockAction says how.
	BlockAddrs  []string
	BlockAction Action

	// Rule 2. FET turns on fully-encrypted-traffic detection (FETExempt).
	// FETProbability is the chance that the rule is applied to a given
	// connection (the paper measured about 0.26); 0 means 1. BlackholeFor
	// is how long a detected 3-tuple stays black-holed (default 180 s).
	FET            bool
	FETProbability float64
	BlackholeFor   time.Duration

	// Rule 3. TCPFingerprint turns on LooksLikeMagpieTCP;
	// TCPFingerprintAction says what to do with a match (default reset).
	TCPFingerprint       bool
	TCPFingerprintAction Action

	// Rule 4. BlockSNI lists server names whose TLS ClientHello is reset
	// (see matchSNI for the pattern forms).
	BlockSNI []string

	// Rule 5. ThrottleBytesPerSec limits each direction of each flow
	// (0 = unlimited). ThrottleBurst is the token bucket's size (default
	// a tenth of a second's worth, at least 1 KiB and at most 32 KiB).
	ThrottleBytesPerSec int
	ThrottleBurst       int

	// FirstPacketTimeout is how long the relay waits for the client's first
	// data before it gives up inspecting and just forwards (default 3 s).
	// FirstPacketSize is the size of that first read (default 4096).
	// MaxClientHello bounds the bytes buffered to reassemble a ClientHello
	// for rule 4 (default 16 KiB).
	FirstPacketTimeout time.Duration
	FirstPacketSize    int
	MaxClientHello     int

	// RecordFirstPackets is how many first packets are kept for replay
	// (default 256; negative keeps none). MaxEvents bounds the event log
	// (default 10000; older events are dropped).
	RecordFirstPackets int
	MaxEvents          int

	// Seed, if not 0, seeds the random draws (FETProbability), for
	// reproducible tests.
	Seed uint64

	// DialTimeout bounds the relay's connection to the upstream (default
	// 5 s).
	DialTimeout time.Duration
}

func (c Config) withDefaults() Config {
	c.BlockAddrs = slices.Clone(c.BlockAddrs)
	c.BlockSNI = slices.Clone(c.BlockSNI)
	if c.FETProbability <= 0 || c.FETProbability > 1 {
		c.FETProbability = 1
	}
	if c.BlackholeFor <= 0 {
		c.BlackholeFor = DefaultBlackholeFor
	}
	if c.ThrottleBytesPerSec < 0 {
		c.ThrottleBytesPerSec = 0
	}
	if c.ThrottleBytesPerSec > 0 && c.ThrottleBurst <= 0 {
		c.ThrottleBurst = min(max(c.ThrottleBytesPerSec/10, 1024), 32<<10)
	}
	if c.FirstPacketTimeout <= 0 {
		c.FirstPacketTimeout = DefaultFirstPacketTimeout
	}
	if c.FirstPacketSize <= 0 {
		c.FirstPacketSize = DefaultFirstPacketSize
	}
	if c.MaxClientHello <= 0 {
		c.MaxClientHello = DefaultMaxClientHello
	}
	if c.RecordFirstPackets == 0 {
		c.RecordFirstPackets = DefaultRecordFirstPackets
	}
	if c.MaxEvents <= 0 {
		c.MaxEvents = DefaultMaxEvents
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	return c
}

// blocked returns the BlockAddrs entry that matches addr, if any.
func (c *Config) blocked(addr string) (string, bool) {
	ap, err := netip.ParseAddrPort(addr)
	for _, b := range c.BlockAddrs {
		if b == addr {
			return b, true
		}
		if err != nil {
			continue
		}
		if bp, err := netip.ParseAddrPort(b); err == nil {
			if bp.Addr().Unmap() == ap.Addr().Unmap() && bp.Port() == ap.Port() {
				return b, true
			}
		} else if ba, err := netip.ParseAddr(b); err == nil && ba.Unmap() == ap.Addr().Unmap() {
			return b, true
		}
	}
	return "", false
}

// Rule names a rule in events and stats.
type Rule string

// The rules.
const (
	RuleNone           Rule = ""
	RuleBlockAddr      Rule = "block-addr"
	RuleBlackholeTable Rule = "blackhole-table" // an earlier FET detection
	RuleFET            Rule = "fet"
	RuleTCPFingerprint Rule = "tcp-fingerprint"
	RuleSNI            Rule = "sni"
)

// Verdict is what happened to a flow.
type Verdict string

// The verdicts.
const (
	VerdictForwarded      Verdict = "forwarded"
	VerdictReset          Verdict = "reset"
	VerdictBlackholed     Verdict = "blackholed"
	VerdictUpstreamFailed Verdict = "upstream-failed"
)

func verdictOf(a Action) Verdict {
	if a == ActionBlackhole {
		return VerdictBlackholed
	}
	return VerdictReset
}

// Event is the censor's decision on one flow (one per flow).
type Event struct {
	Time     time.Time
	Flow     uint64
	Client   string // client's address
	Listen   string // the forward's listen address (the "server" it dialed)
	Upstream string // the real server
	Verdict  Verdict
	Rule     Rule   // the rule that blocked it; RuleNone when forwarded
	Detail   string // e.g. the FET exemption, the SNI, the matching entry
	FirstLen int    // bytes of the first packet inspected (0 if none)
}

// Stats counts flows and bytes over the Censor's life.
type Stats struct {
	Flows          int // flows decided (accepted connections)
	Forwarded      int
	Reset          int
	Blackholed     int
	UpstreamFailed int
	ByRule         map[Rule]int // blocked flows per rule
	BytesUp        int64        // relayed client → server
	BytesDown      int64        // relayed server → client
}

// FirstPacket is the first data read from a client on one flow.
type FirstPacket struct {
	Flow     uint64
	Listen   string
	Upstream string
	Data     []byte
}

// BlackholeEntry is one black-holed 3-tuple.
type BlackholeEntry struct {
	Client  netip.Addr
	Server  netip.AddrPort
	Expires time.Time
}

type bhKey struct {
	client netip.Addr
	server netip.AddrPort
}

// Censor is the emulated middlebox. Its methods are safe for concurrent use.
type Censor struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	flowID atomic.Uint64
	up     atomic.Int64
	down   atomic.Int64

	mu        sync.Mutex
	cfg       Config
	rng       *rand.Rand
	closed    bool
	listeners []net.Listener
	conns     connSet
	blackhole map[bhKey]time.Time
	events    []Event
	stats     Stats
	firsts    []FirstPacket
	notify    chan struct{} // closed and replaced when an event is added
}

// New returns a Censor applying cfg. It starts nothing until Forward.
func New(cfg Config) *Censor {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Censor{
		ctx:       ctx,
		cancel:    cancel,
		blackhole: make(map[bhKey]time.Time),
		notify:    make(chan struct{}),
	}
	c.stats.ByRule = make(map[Rule]int)
	c.setConfigLocked(cfg)
	return c
}

func (c *Censor) setConfigLocked(cfg Config) {
	c.cfg = cfg.withDefaults()
	if cfg.Seed != 0 {
		c.rng = rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	} else if c.rng == nil {
		c.rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
}

// SetConfig replaces the rules for connections accepted from now on. Flows
// already decided keep their verdict; the black-hole table is kept.
func (c *Censor) SetConfig(cfg Config) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setConfigLocked(cfg)
}

// Config returns the rules in force (with defaults filled in).
func (c *Censor) Config() Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	cfg := c.cfg
	cfg.BlockAddrs = slices.Clone(cfg.BlockAddrs)
	cfg.BlockSNI = slices.Clone(cfg.BlockSNI)
	return cfg
}

// Block adds addr ("ip:port" or "ip") to the blocked addresses (rule 1).
func (c *Censor) Block(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Contains(c.cfg.BlockAddrs, addr) {
		c.cfg.BlockAddrs = append(c.cfg.BlockAddrs, addr)
	}
}

// Unblock removes addr from the blocked addresses.
func (c *Censor) Unblock(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cfg.BlockAddrs = slices.DeleteFunc(c.cfg.BlockAddrs, func(s string) bool { return s == addr })
}

// Forward starts a relay listening on listenAddr (default "127.0.0.1:0")
// that forwards to upstreamAddr under the Censor's rules, and returns the
// address it listens on.
func (c *Censor) Forward(listenAddr, upstreamAddr string) (string, error) {
	if listenAddr == "" {
		listenAddr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return "", fmt.Errorf("censor: forward: %w", err)
	}
	addr := ln.Addr().String()
	serverAP, err := netip.ParseAddrPort(addr)
	if err != nil {
		ln.Close()
		return "", fmt.Errorf("censor: forward: listen address %q: %w", addr, err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		ln.Close()
		return "", errors.New("censor: closed")
	}
	c.listeners = append(c.listeners, ln)
	c.wg.Add(1)
	c.mu.Unlock()
	f := &forward{c: c, ln: ln, listen: addr, server: serverAP, upstream: upstreamAddr}
	go f.acceptLoop()
	return addr, nil
}

// Close stops every forward, ends every flow and waits for all goroutines.
// The black-hole table, events, stats and first packets stay readable.
func (c *Censor) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	for _, ln := range c.listeners {
		ln.Close()
	}
	c.mu.Unlock()
	c.conns.closeAll()
	c.cancel()
	c.wg.Wait()
	return nil
}

// Events returns a copy of the event log, oldest first.
func (c *Censor) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

// WaitEvents waits until at least n events have been recorded (counting
// from the Censor's creation, within the MaxEvents kept) or ctx ends, and
// returns the log.
func (c *Censor) WaitEvents(ctx context.Context, n int) ([]Event, error) {
	for {
		c.mu.Lock()
		if len(c.events) >= n {
			ev := slices.Clone(c.events)
			c.mu.Unlock()
			return ev, nil
		}
		ch := c.notify
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return c.Events(), ctx.Err()
		}
	}
}

// Stats returns the counters.
func (c *Censor) Stats() Stats {
	c.mu.Lock()
	s := c.stats
	s.ByRule = make(map[Rule]int, len(c.stats.ByRule))
	for k, v := range c.stats.ByRule {
		s.ByRule[k] = v
	}
	c.mu.Unlock()
	s.BytesUp = c.up.Load()
	s.BytesDown = c.down.Load()
	return s
}

// FirstPackets returns copies of the recorded first packets, oldest first.
func (c *Censor) FirstPackets() []FirstPacket {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]FirstPacket, len(c.firsts))
	for i, fp := range c.firsts {
		fp.Data = slices.Clone(fp.Data)
		out[i] = fp
	}
	return out
}

// FirstPacketsTo returns the data of the recorded first packets of flows
// through the forward listening on listenAddr (all flows if ""), ready for
// Probe.
func (c *Censor) FirstPacketsTo(listenAddr string) [][]byte {
	var out [][]byte
	for _, fp := range c.FirstPackets() {
		if listenAddr == "" || fp.Listen == listenAddr {
			out = append(out, fp.Data)
		}
	}
	return out
}

// Blackholes returns the 3-tuples currently black-holed by rule 2.
func (c *Censor) Blackholes() []BlackholeEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	var out []BlackholeEntry
	for k, exp := range c.blackhole {
		if now.Before(exp) {
			out = append(out, BlackholeEntry{Client: k.client, Server: k.server, Expires: exp})
		}
	}
	return out
}

// ClearBlackholes empties the black-hole table.
func (c *Censor) ClearBlackholes() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.blackhole)
}

func (c *Censor) record(ev Event) {
	ev.Time = time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.events) >= c.cfg.MaxEvents {
		c.events = slices.Delete(c.events, 0, len(c.events)-c.cfg.MaxEvents+1)
	}
	c.events = append(c.events, ev)
	c.stats.Flows++
	switch ev.Verdict {
	case VerdictForwarded:
		c.stats.Forwarded++
	case VerdictReset:
		c.stats.Reset++
	case VerdictBlackholed:
		c.stats.Blackholed++
	case VerdictUpstreamFailed:
		c.stats.UpstreamFailed++
	}
	if ev.Rule != RuleNone {
		c.stats.ByRule[ev.Rule]++
	}
	close(c.notify)
	c.notify = make(chan struct{})
}

func (c *Censor) recordFirst(fp FirstPacket) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keep := c.cfg.RecordFirstPackets
	if keep < 0 || len(fp.Data) == 0 {
		return
	}
	if len(c.firsts) >= keep {
		c.firsts = slices.Delete(c.firsts, 0, len(c.firsts)-keep+1)
	}
	fp.Data = slices.Clone(fp.Data)
	c.firsts = append(c.firsts, fp)
}

// spawn runs fn in a goroutine that Close waits for; false if closed.
func (c *Censor) spawn(fn func()) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		fn()
	}()
	return true
}

func (c *Censor) isBlackholed(k bhKey) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.blackhole[k]
	if !ok {
		return time.Time{}, false
	}
	if !time.Now().Before(exp) {
		delete(c.blackhole, k)
		return time.Time{}, false
	}
	return exp, true
}

func (c *Censor) addBlackhole(k bhKey, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.blackhole[k] = time.Now().Add(d)
}

// drawFET reports whether the FET rule applies to this connection.
func (c *Censor) drawFET() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.cfg.FETProbability
	return p >= 1 || c.rng.Float64() < p
}

type forward struct {
	c        *Censor
	ln       net.Listener
	listen   string
	server   netip.AddrPort
	upstream string
}

func (f *forward) acceptLoop() {
	defer f.c.wg.Done()
	var delay time.Duration
	for {
		conn, err := f.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || f.c.ctx.Err() != nil {
				return
			}
			// A transient error (such as too many open files): back off.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(delay):
			case <-f.c.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		if !f.c.conns.add(conn) {
			continue
		}
		if !f.c.spawn(func() { f.handle(conn) }) {
			f.c.conns.remove(conn)
			conn.Close()
		}
	}
}

// closeConn closes conn, with an RST if reset, and forgets it.
func (c *Censor) closeConn(conn net.Conn, reset bool) {
	if reset {
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	}
	conn.Close()
	c.conns.remove(conn)
}

// hold black-holes conn: it reads and discards everything until the client
// closes or the Censor does, and never writes.
func (c *Censor) hold(conn net.Conn) {
	conn.SetReadDeadline(time.Time{})
	io.Copy(io.Discard, conn)
	c.closeConn(conn, false)
}

// block applies action to the client (and closes the upstream, if any).
func (c *Censor) block(client, upstream net.Conn, a Action) {
	if upstream != nil {
		c.closeConn(upstream, a == ActionReset)
	}
	if a == ActionBlackhole {
		c.hold(client)
		return
	}
	c.closeConn(client, true)
}

func (f *forward) handle(client net.Conn) {
	c := f.c
	ev := Event{
		Flow:     c.flowID.Add(1),
		Client:   client.RemoteAddr().String(),
		Listen:   f.listen,
		Upstream: f.upstream,
	}
	cfg := c.Config()

	var key bhKey
	if ap, err := netip.ParseAddrPort(ev.Client); err == nil {
		key = bhKey{client: ap.Addr().Unmap(), server: f.server}
	}
	if exp, ok := c.isBlackholed(key); ok {
		ev.Verdict, ev.Rule = VerdictBlackholed, RuleBlackholeTable
		ev.Detail = fmt.Sprintf("%s -> %s black-holed until %s", key.client, key.server, exp.Format(time.RFC3339Nano))
		c.record(ev)
		c.hold(client)
		return
	}
	for _, addr := range []string{f.listen, f.upstream} {
		if entry, ok := cfg.blocked(addr); ok {
			ev.Verdict, ev.Rule = verdictOf(cfg.BlockAction), RuleBlockAddr
			ev.Detail = "blocked address " + entry
			c.record(ev)
			c.block(client, nil, cfg.BlockAction)
			return
		}
	}

	d := net.Dialer{Timeout: cfg.DialTimeout}
	upstream, err := d.DialContext(c.ctx, "tcp", f.upstream)
	if err != nil {
		ev.Verdict, ev.Detail = VerdictUpstreamFailed, err.Error()
		c.record(ev)
		c.closeConn(client, true)
		return
	}
	if !c.conns.add(upstream) {
		c.closeConn(client, false)
		return
	}

	pending, verdict := f.inspect(client, cfg, &ev)
	if verdict != nil {
		c.record(ev)
		c.block(client, upstream, *verdict)
		return
	}
	ev.Verdict = VerdictForwarded
	c.record(ev)
	f.relay(client, upstream, pending, cfg)
}

// inspect reads the client's first packet and applies rules 2–4. It
// returns the bytes read (to be forwarded) and, if the flow is to be
// blocked, the action (with ev filled in).
func (f *forward) inspect(client net.Conn, cfg Config, ev *Event) ([]byte, *Action) {
	c := f.c
	deadline := time.Now().Add(cfg.FirstPacketTimeout)
	client.SetReadDeadline(deadline)
	defer client.SetReadDeadline(time.Time{})

	buf := make([]byte, cfg.FirstPacketSize)
	n, _ := client.Read(buf) // errors show up again when relaying
	first := buf[:n]
	ev.FirstLen = n
	if n == 0 {
		ev.Detail = "no first packet inspected"
		return nil, nil
	}
	c.recordFirst(FirstPacket{Flow: ev.Flow, Listen: f.listen, Upstream: f.upstream, Data: first})

	if cfg.FET {
		if exempt, why := FETExempt(first); !exempt {
			if c.drawFET() {
				ev.Verdict, ev.Rule, ev.Detail = VerdictBlackholed, RuleFET, why
				if ap, err := netip.ParseAddrPort(ev.Client); err == nil {
					c.addBlackhole(bhKey{client: ap.Addr().Unmap(), server: f.server}, cfg.BlackholeFor)
				}
				a := ActionBlackhole
				return first, &a
			}
			ev.Detail = "fet: " + why + "; not applied to this connection (probability)"
		} else {
			ev.Detail = "fet: " + why
		}
	}
	if cfg.TCPFingerprint && LooksLikeMagpieTCP(first) {
		a := cfg.TCPFingerprintAction
		ev.Verdict, ev.Rule = verdictOf(a), RuleTCPFingerprint
		ev.Detail = fmt.Sprintf("2-byte length %d = rest of first packet", n-2)
		return first, &a
	}
	if len(cfg.BlockSNI) > 0 && len(first) >= 2 && first[0] == tlsTypeHandshake && first[1] == 0x03 {
		data := first
		for {
			sni, done, err := parseClientHelloSNI(data)
			if err != nil {
				break
			}
			if done {
				if p, ok := matchSNI(sni, cfg.BlockSNI); ok {
					a := ActionReset
					ev.Verdict, ev.Rule = VerdictReset, RuleSNI
					ev.Detail = fmt.Sprintf("SNI %q matches %q", sni, p)
					return data, &a
				}
				break
			}
			if len(data) >= cfg.MaxClientHello {
				break
			}
			more := make([]byte, min(cfg.FirstPacketSize, cfg.MaxClientHello-len(data)))
			m, err := client.Read(more)
			data = append(data, more[:m]...)
			if err != nil {
				break
			}
		}
		first = data
	}
	return first, nil
}

// relay copies both ways until both sides are done, forwarding pending
// first.
func (f *forward) relay(client, upstream net.Conn, pending []byte, cfg Config) {
	c := f.c
	var upLim, downLim *rate.Limiter
	if cfg.ThrottleBytesPerSec > 0 {
		upLim = rate.NewLimiter(rate.Limit(cfg.ThrottleBytesPerSec), cfg.ThrottleBurst)
		downLim = rate.NewLimiter(rate.Limit(cfg.ThrottleBytesPerSec), cfg.ThrottleBurst)
	}
	var left atomic.Int32
	left.Store(2)
	finish := func(dst net.Conn, err error) {
		if err != nil {
			// Unblock the other direction.
			client.Close()
			upstream.Close()
		} else if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		if left.Add(-1) == 0 {
			c.closeConn(client, false)
			c.closeConn(upstream, false)
		}
	}
	spawned := c.spawn(func() {
		finish(client, c.pump(client, upstream, nil, downLim, &c.down))
	})
	if !spawned {
		c.closeConn(client, false)
		c.closeConn(upstream, false)
		return
	}
	finish(upstream, c.pump(upstream, client, pending, upLim, &c.up))
}

// pump copies src to dst (pending first) through lim; nil on EOF.
func (c *Censor) pump(dst, src net.Conn, pending []byte, lim *rate.Limiter, count *atomic.Int64) error {
	size := 32 << 10
	if lim != nil {
		size = min(size, lim.Burst())
	}
	write := func(p []byte) error {
		for len(p) > 0 {
			n := len(p)
			if lim != nil {
				n = min(n, lim.Burst())
				if err := lim.WaitN(c.ctx, n); err != nil {
					return err
				}
			}
			w, err := dst.Write(p[:n])
			count.Add(int64(w))
			if err != nil {
				return err
			}
			p = p[n:]
		}
		return nil
	}
	if err := write(pending); err != nil {
		return err
	}
	buf := make([]byte, size)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if werr := write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
