package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/link"
)

// AbuseOptions configure the abuse scenario: honest clients connect and
// chat while attackers hold half-open, slowloris and idle authenticated
// connections.
type AbuseOptions struct {
	// Admin is the server's admin listener (host:port), for its memory
	// and counters.
	Admin string
	// HalfOpen sockets connect and send nothing; Slowloris sockets send a
	// byte of a first message every Trickle; both reopen, after Reopen,
	// when the server closes them. Idle connections are of registered
	// devices (Keys, as bench hold), quiet but for keepalives.
	HalfOpen, Slowloris, Idle int
	Keys                      string
	Trickle, Reopen           time.Duration // default 5 s and 100 ms
	// Measure is how long each phase measures (default 20 s).
	Measure time.Duration
	// HandshakeRate and SendRate are the honest load: fresh connections
	// (connect and handshake) and messages (send until acknowledged) per
	// second. Defaults 20 and 50.
	HandshakeRate, SendRate float64
	// RSSBudget is the most resident memory the server may use while
	// attacked (0: not checked).
	RSSBudget int64
	// Transport is what the honest and idle clients dial (tcp, obfs or
	// tls; empty: what a client would choose); the attacker's sockets go
	// to that endpoint too.
	Transport string
	Progress  io.Writer
}

// Targets of the scenario (issue 19).
const (
	abuseHandshakeBound = 2 * time.Second
	abuseHandshakeShare = 0.99 // of honest handshakes within the bound
	abuseSendRatio      = 3.0  // honest send p99 attacked / unloaded
)

// AbusePhase is what honest clients saw in one phase.
type AbusePhase struct {
	Handshakes     int64   `json:"handshakes"`
	HandshakesOK   int64   `json:"handshakes_ok"`
	WithinBound    int64   `json:"handshakes_within_2s"`
	WithinShare    float64 `json:"handshakes_within_2s_share"`
	Handshake      Summary `json:"handshake_latency"`
	Sends          int64   `json:"sends"`
	SendErrors     int64   `json:"send_errors"`
	Send           Summary `json:"send_latency"`
	ServerRSSMax   float64 `json:"server_rss_max_bytes"`
	ServerConnsMax float64 `json:"server_connections_max"`
}

// AbuseReport is the outcome of an abuse run.
type AbuseReport struct {
	HalfOpen  int `json:"half_open"`
	Slowloris int `json:"slowloris"`
	Idle      int `json:"idle"`
	// AttackersOpenMin and Max: attacker sockets (half-open and slowloris)
	// open at once during the attacked phase, sampled each second.
	AttackersOpenMin int64      `json:"attackers_open_min"`
	AttackersOpenMax int64      `json:"attackers_open_max"`
	Reopened         int64      `json:"attackers_reopened"` // sockets the server closed and the attacker opened again
	IdleDropped      int64      `json:"idle_dropped"`
	Shed             float64    `json:"server_shed_handshakes"` // magpie_connections_refused_total{why="handshakes"} during the attack
	Baseline         AbusePhase `json:"baseline"`
	Attacked         AbusePhase `json:"attacked"`
	SendP99Ratio     float64    `json:"send_p99_ratio"`
	RSSBudget        int64      `json:"rss_budget_bytes,omitempty"`
	Failures         []string   `json:"failures,omitempty"` // targets missed; empty when all are met
}

// RunAbuse measures honest clients on the server of inv, first alone, then
// while the attack is held.
func RunAbuse(ctx context.Context, inv invite.Invite, o AbuseOptions) (*AbuseReport, error) {
	if o.Admin == "" {
		return nil, errors.New("bench abuse: need --admin, the server's admin listener")
	}
	setAbuseDefaults(&o)
	if _, err := Scrape(ctx, o.Admin); err != nil {
		return nil, err
	}
	t, err := newTarget(inv, o.Transport)
	if err != nil {
		return nil, err
	}
	if len(t.eps) == 0 {
		return nil, errors.New("bench abuse: the invite names no endpoint")
	}
	raddr := t.eps[0].Address
	say := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, format+"\n", args...)
		}
	}

	var idleKeys []link.KeyPair
	if o.Idle > 0 {
		if idleKeys, err = holdUsers(ctx, inv, HoldOptions{Connections: o.Idle, Keys: o.Keys, SetupConcurrency: 32, Transport: o.Transport, Progress: o.Progress}); err != nil {
			return nil, fmt.Errorf("bench abuse: %w", err)
		}
	}
	pair, err := registerAll(ctx, inv, o.Transport, runID(), 2, 2)
	if err != nil {
		return nil, fmt.Errorf("bench abuse: honest users: %w", err)
	}
	defer func() {
		for _, c := range pair {
			c.Close()
		}
	}()
	go ackInBatches(pair[1], func(clientconn.Push) {})
	bob, _ := pair[1].Device()

	r := &AbuseReport{HalfOpen: o.HalfOpen, Slowloris: o.Slowloris, Idle: o.Idle, RSSBudget: o.RSSBudget}
	say("baseline: %s of honest handshakes (%.0f/s) and sends (%.0f/s)…", o.Measure, o.HandshakeRate, o.SendRate)
	if r.Baseline, err = honestPhase(ctx, t, pair[0], bob.User, o); err != nil {
		return nil, err
	}

	before, err := Scrape(ctx, o.Admin)
	if err != nil {
		return nil, err
	}
	var idleDropped atomic.Int64
	if o.Idle > 0 {
		say("connecting %d idle devices…", o.Idle)
		conns, err := connectAll(ctx, inv, o.Transport, idleKeys, 64, 0)
		if err != nil {
			return nil, fmt.Errorf("bench abuse: idle connections: %w", err)
		}
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		watchDrops(conns, &idleDropped)
	}
	actx, stopAttack := context.WithCancel(ctx)
	var attackers sync.WaitGroup
	defer func() { stopAttack(); attackers.Wait() }()
	var open, reopened atomic.Int64
	for i := range o.HalfOpen + o.Slowloris {
		attackers.Go(func() {
			holdSocket(actx, attackerIP(i), raddr, i >= o.HalfOpen, o, &open, &reopened)
		})
	}
	if err := sleep(ctx, 2*time.Second); err != nil { // the attackers' sockets are in
		return nil, err
	}
	say("attacked: %d attacker sockets open, %d idle devices; %s of honest handshakes and sends…", open.Load(), o.Idle, o.Measure)
	r.AttackersOpenMin = open.Load()
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-actx.Done():
				return
			case <-tick.C:
				n := open.Load()
				r.AttackersOpenMin = min(r.AttackersOpenMin, n)
				r.AttackersOpenMax = max(r.AttackersOpenMax, n)
			}
		}
	}()
	r.Attacked, err = honestPhase(ctx, t, pair[0], bob.User, o)
	after, serr := Scrape(ctx, o.Admin)
	stopAttack()
	<-sampleDone
	attackers.Wait()
	if err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	r.Reopened, r.IdleDropped = reopened.Load(), idleDropped.Load()
	const shed = `magpie_connections_refused_total{why="handshakes"}`
	r.Shed = after[shed] - before[shed]
	if b := r.Baseline.Send.P99; b > 0 {
		r.SendP99Ratio = float64(r.Attacked.Send.P99) / float64(b)
	}
	r.judge()
	return r, nil
}

func setAbuseDefaults(o *AbuseOptions) {
	if o.Trickle <= 0 {
		o.Trickle = 5 * time.Second
	}
	if o.Reopen <= 0 {
		o.Reopen = 100 * time.Millisecond
	}
	if o.Measure <= 0 {
		o.Measure = 20 * time.Second
	}
	if o.HandshakeRate <= 0 {
		o.HandshakeRate = 20
	}
	if o.SendRate <= 0 {
		o.SendRate = 50
	}
}

// judge lists the targets missed.
func (r *AbuseReport) judge() {
	a := r.Attacked
	if a.WithinShare < abuseHandshakeShare {
		r.Failures = append(r.Failures, fmt.Sprintf("%.2f%% of honest handshakes within %s, want ≥ %.0f%%", 100*a.WithinShare, abuseHandshakeBound, 100*abuseHandshakeShare))
	}
	if r.SendP99Ratio > abuseSendRatio {
		r.Failures = append(r.Failures, fmt.Sprintf("honest send p99 %.1f× its unloaded value, want ≤ %.0f×", r.SendP99Ratio, abuseSendRatio))
	}
	if a.SendErrors > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d honest sends failed", a.SendErrors))
	}
	if r.RSSBudget > 0 && a.ServerRSSMax > float64(r.RSSBudget) {
		r.Failures = append(r.Failures, fmt.Sprintf("server RSS %.0f MiB, over the %d MiB budget", a.ServerRSSMax/(1<<20), r.RSSBudget>>20))
	}
	if r.IdleDropped > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d idle authenticated connections dropped", r.IdleDropped))
	}
}

// attackerIP spreads attacker sockets over loopback /24s, 200 each (below
// the server's 1,000 per network, so that its per-network cap is not what
// stops them: a botnet's addresses), in 127.240.0.0/12, clear of the
// honest clients (127.0.0.1) and of newSourcePlan's range.
func attackerIP(i int) net.IP {
	n := i / 200
	return net.IPv4(127, byte(240+n>>8), byte(n), byte(1+i%200))
}

// holdSocket keeps one attacker socket open until ctx ends: connected and
// silent (half-open), or trickling a byte every o.Trickle (slowloris),
// opening it again o.Reopen after the server closes it.
func holdSocket(ctx context.Context, src net.IP, raddr string, trickle bool, o AbuseOptions, open, reopened *atomic.Int64) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
	for held := false; ctx.Err() == nil; {
		if held {
			reopened.Add(1)
		}
		if held && sleep(ctx, o.Reopen) != nil {
			return
		}
		c, err := d.DialContext(ctx, "tcp", raddr)
		if held = err == nil; !held {
			sleep(ctx, o.Reopen)
			continue
		}
		open.Add(1)
		closed := make(chan struct{})
		go func() {
			io.Copy(io.Discard, c) // until the server closes it (or we do)
			close(closed)
		}()
		var tick <-chan time.Time
		var ticker *time.Ticker
		if trickle {
			ticker = time.NewTicker(o.Trickle)
			tick = ticker.C
		}
	held:
		for {
			select {
			case <-ctx.Done():
				break held
			case <-closed:
				break held
			case <-tick:
				c.Write([]byte{0x42})
			}
		}
		if ticker != nil {
			ticker.Stop()
		}
		c.Close()
		<-closed
		open.Add(-1)
	}
}

// honestPhase runs honest handshakes and sends for o.Measure and samples
// the server's memory and connections each second.
func honestPhase(ctx context.Context, t target, sender *clientconn.Conn, to string, o AbuseOptions) (AbusePhase, error) {
	var p AbusePhase
	hs, send := NewHistogram(), NewHistogram()
	var nhs, hsOK, within, nsend, sendErr atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(o.Measure)
	var msgID atomic.Uint64
	pace := func(rate float64, fn func()) {
		defer wg.Done()
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
		for time.Now().Before(end) {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				wg.Go(fn)
			}
		}
	}
	wg.Add(2)
	go pace(o.HandshakeRate, func() {
		key, err := link.GenerateKey(rand.Reader)
		if err != nil {
			return
		}
		nhs.Add(1)
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		t0 := time.Now()
		c, err := t.dial(dctx, key, clientconn.DialOptions{UserAgent: "magpie-bench"})
		took := time.Since(t0)
		if err != nil {
			return
		}
		c.Close()
		hs.Record(took)
		hsOK.Add(1)
		if took <= abuseHandshakeBound {
			within.Add(1)
		}
	})
	go pace(o.SendRate, func() {
		var mid clientconn.MessageID
		rand.Read(mid[:8])
		mid[15] = byte(msgID.Add(1))
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		nsend.Add(1)
		t0 := time.Now()
		if _, err := sender.Send(sctx, to, mid, make([]byte, 1024)); err != nil {
			sendErr.Add(1)
			return
		}
		send.Record(time.Since(t0))
	})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for time.Now().Before(end) && ctx.Err() == nil {
			if m, err := Scrape(ctx, o.Admin); err == nil {
				p.ServerRSSMax = max(p.ServerRSSMax, m["process_resident_memory_bytes"])
				p.ServerConnsMax = max(p.ServerConnsMax, m["magpie_connections"])
			}
			sleep(ctx, time.Second)
		}
	}()
	wg.Wait()
	<-sampled
	if err := ctx.Err(); err != nil {
		return p, err
	}
	p.Handshakes, p.HandshakesOK, p.WithinBound = nhs.Load(), hsOK.Load(), within.Load()
	if p.Handshakes > 0 {
		p.WithinShare = float64(p.WithinBound) / float64(p.Handshakes)
	}
	p.Sends, p.SendErrors = nsend.Load(), sendErr.Load()
	p.Handshake, p.Send = hs.Summary(), send.Summary()
	return p, nil
}

// Text renders the report as a table.
func (r *AbuseReport) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "abuse: %d half-open and %d slowloris sockets (%d–%d open at once, %d reopened after the server closed them; the server shed %.0f), %d idle authenticated connections (%d dropped)\n",
		r.HalfOpen, r.Slowloris, r.AttackersOpenMin, r.AttackersOpenMax, r.Reopened, r.Shed, r.Idle, r.IdleDropped)
	b.WriteString("phase      handshakes  within 2s  sends  send errors  server RSS max  connections max\n")
	for _, ph := range []struct {
		name string
		p    AbusePhase
	}{{"unloaded", r.Baseline}, {"attacked", r.Attacked}} {
		fmt.Fprintf(&b, "%-9s  %10d  %8.2f%%  %5d  %11d  %10.1f MiB  %15.0f\n", ph.name, ph.p.Handshakes, 100*ph.p.WithinShare,
			ph.p.Sends, ph.p.SendErrors, ph.p.ServerRSSMax/(1<<20), ph.p.ServerConnsMax)
	}
	b.WriteString(SummaryHeader + "\n")
	b.WriteString(r.Baseline.Handshake.Row("handshake, unloaded") + "\n")
	b.WriteString(r.Attacked.Handshake.Row("handshake, attacked") + "\n")
	b.WriteString(r.Baseline.Send.Row("send, unloaded") + "\n")
	b.WriteString(r.Attacked.Send.Row("send, attacked") + "\n")
	fmt.Fprintf(&b, "honest send p99 attacked / unloaded: %.2f×\n", r.SendP99Ratio)
	if len(r.Failures) == 0 {
		b.WriteString("all targets met\n")
	}
	for _, f := range r.Failures {
		fmt.Fprintf(&b, "MISSED: %s\n", f)
	}
	return b.String()
}
