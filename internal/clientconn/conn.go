package clientconn

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/signuppow"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/transport"
	"github.com/magpie-im/magpie/username"
	"github.com/magpie-im/magpie/wire"
)

// ErrClosed is returned by calls on a closed or broken connection.
var ErrClosed = errors.New("client: connection closed")

// DeviceAddr names one device of one user.
type DeviceAddr struct {
	User   string
	Device uint32
}

// MessageID is a client-chosen message id; a resend with the same id is
// stored once by the server.
type MessageID [wire.ClientIDSize]byte

// DialOptions tune Dial. Zero fields take defaults.
type DialOptions struct {
	// Link configures the Noise link; its defaults for clients are a ping
	// every 2 minutes when idle, answered within 10 s, and a 5 minute idle
	// timeout. TCP keepalive (transport.ClientKeepAlive) does the frequent
	// work of keeping NAT mappings open and noticing dead paths.
	Link link.Config
	// AddrTimeout bounds each address tried (10 s).
	AddrTimeout time.Duration
	// AnswerTimeout bounds the wait for the server's answer to the
	// handshake once the transport is connected (4 s). A server answers a
	// good handshake in milliseconds and never answers one made with the
	// wrong server key (or a clock more than 2 minutes off): it stays
	// silent for 10 to 30 s, longer than AddrTimeout. Waiting less than
	// that lets the client say so (ErrNoAnswer) instead of timing out.
	AnswerTimeout time.Duration
	// UserAgent is sent in the hello for server logs.
	UserAgent string
	// Dialer opens the TCP connections that plain tcp and obfs run over
	// (net.Dialer). (tls dials its own, until transport/tlsws takes one.)
	Dialer interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	}
	// Stagger is the delay between starting attempts at successive
	// endpoints (250 ms).
	Stagger time.Duration
	// Transports overrides how endpoints of a transport are dialed.
	Transports map[string]TransportDialer
	// StallTimeout: a request that has waited this long for its answer
	// ends the connection (ErrStalled), so that a black-holed or throttled
	// path is left quickly (3 s). What the request carries, and what
	// arrives from the server meanwhile (answers and pushes queued ahead of
	// this one), extend the wait at the slowest goodput a conversation can
	// live with (8 KiB/s): a path that trickles is as good as dead.
	StallTimeout time.Duration
}

// DefaultKeepalive is how often an idle client pings the server. Every ping
// costs the server about 65 µs of CPU (docs/BENCHMARKS.md), so pings are
// rare; TCP keepalive (transport.ClientKeepAlive) keeps NAT mappings open
// and notices dead paths in between, at no cost to the server process.
const DefaultKeepalive = 2 * time.Minute

// ErrNoAnswer: the transport connected but the server never answered the
// handshake within DialOptions.AnswerTimeout. A Magpie server stays silent
// to a handshake made with the wrong server key (or a clock more than 2
// minutes off), so this, unlike a refused connection, points at the invite.
var ErrNoAnswer = errors.New("the server did not answer the handshake")

// ErrInviteTampered: an invite's signed endpoint list does not verify
// against the invite's server key: the invite was damaged or edited.
var ErrInviteTampered = errors.New("the invite is damaged or was tampered with: its endpoint list does not verify against its server key; ask the server's operator for a new invite")

// ErrInviteExpired: every endpoint an invite names has expired.
var ErrInviteExpired = errors.New("every endpoint this invite names has expired; ask the server's operator for a new invite")

// ErrStalled: the server's answer did not come in time: nothing arrived,
// or too little for the path to carry a conversation (it may be
// black-holed or throttled).
var ErrStalled = errors.New("client: the server stopped answering in time (the network path may be blocked or throttled)")

// Conn is one authenticated connection to a Magpie server: requests with
// typed errors, and a stream of pushes (envelopes, receipts).
type Conn struct {
	lc       *link.Conn
	endpoint endpoints.Endpoint
	self     [32]byte     // this device's static public key
	recvd    atomic.Int64 // bytes of messages received from the server
	sentB    atomic.Int64 // bytes of messages sent to it
	pace     pace         // pace.go
	// connected is when the handshake completed, and skew how far this
	// machine's clock was ahead of the server's then (plus the answer's
	// trip).
	connected time.Time
	skew      time.Duration
	stall     time.Duration
	hello     *wire.ServerHello
	nextID    atomic.Uint64
	drainTok  atomic.Uint64 // the newest Drain token handed out
	pushes    chan Push
	done      chan struct{} // closed when readLoop has exited
	failed    chan struct{} // closed by the first fail
	once      sync.Once

	mu      sync.Mutex
	device  *DeviceAddr
	counts  KeyCounts // one-time prekeys left, from the hello
	waiting map[uint64]chan *wire.Response
	err     error // why the connection ended

	// Pushes wait here for the application so that the reader never blocks
	// on them: responses keep flowing even when nobody reads Pushes. The
	// server's window bounds the queued envelopes and receipts; ephemeral
	// envelopes beyond maxQueuedEphemeral are dropped.
	qmu     sync.Mutex
	queue   []Push
	qready  chan struct{} // capacity 1: something was queued
	qclosed bool
	nEphem  int
}

const maxQueuedEphemeral = 256

// Push is something the server sent unprompted. Exactly one field is set.
type Push struct {
	Envelope *Envelope
	Receipt  *Receipt
	// Drained: every item queued when the connection opened has been
	// pushed; or, with DrainTok set, every item queued when the Drain with
	// that token reached the server.
	Drained  bool
	DrainTok uint64
	// KeysLow: this device's one-time prekeys are running low.
	KeysLow *KeyCounts
}

// Envelope is a message from another device. Acknowledge it (Conn.Ack) once
// it is safely stored; until then the server keeps it and pushes it again on
// the next connection.
type Envelope struct {
	Seq        uint64 // 0 for ephemeral envelopes, which need no ack
	From       DeviceAddr
	ID         MessageID
	Payload    []byte
	ServerTime time.Time
	Ephemeral  bool
	// Group is set on a group's envelopes: a group message (Payload is the
	// sender's Sender Key ciphertext) or, with GroupChange, a change to the
	// group's log (Payload is the signed change, From its author's device).
	Group       [16]byte
	GroupChange bool
}

// Receipt says a message this device sent reached a recipient device.
// Acknowledge it like an envelope.
type Receipt struct {
	Seq       uint64
	ID        MessageID
	Recipient DeviceAddr
	Delivered time.Time
}

// Dial connects to the server of inv: its signed endpoint list (verified
// against the server key) and its tcp addresses, tried as DialEndpoints
// does.
func Dial(ctx context.Context, inv invite.Invite, key link.KeyPair, opts DialOptions) (*Conn, error) {
	eps, err := InviteEndpoints(inv, time.Now())
	if err != nil {
		return nil, err
	}
	c, _, err := DialEndpoints(ctx, inv.ServerKey, eps, key, opts)
	return c, err
}

// InviteEndpoints lists the endpoints an invite names: its signed list, if
// any (an invalid signature is an error: the invite was tampered with), then
// its tcp addresses.
func InviteEndpoints(inv invite.Invite, now time.Time) ([]endpoints.Endpoint, error) {
	var eps []endpoints.Endpoint
	if len(inv.Endpoints) > 0 {
		var sl wire.SignedEndpointList
		if err := proto.Unmarshal(inv.Endpoints, &sl); err != nil {
			return nil, fmt.Errorf("%w (%w: %w)", ErrInviteTampered, endpoints.ErrMalformed, err)
		}
		l, err := endpoints.Verify(&sl, inv.ServerKey, now)
		if err != nil {
			return nil, fmt.Errorf("%w (%w)", ErrInviteTampered, err)
		}
		eps = l.Endpoints
	}
	eps = MergeEndpoints(eps, inv.Addrs)
	if len(eps) == 0 {
		return nil, ErrInviteExpired
	}
	return eps, nil
}

// MergeEndpoints appends plain tcp endpoints for addrs not already listed.
func MergeEndpoints(eps []endpoints.Endpoint, addrs []string) []endpoints.Endpoint {
	seen := map[string]bool{}
	for _, e := range eps {
		seen[e.Key()] = true
	}
	for _, a := range addrs {
		e := endpoints.Endpoint{Transport: transport.TCP, Address: a, Priority: 1000}
		if !seen[e.Key()] {
			eps = append(eps, e)
			seen[e.Key()] = true
		}
	}
	return eps
}

func (opts *DialOptions) setDefaults() {
	if opts.AddrTimeout == 0 {
		opts.AddrTimeout = 10 * time.Second
	}
	if opts.AnswerTimeout == 0 {
		opts.AnswerTimeout = 4 * time.Second
	}
	if opts.Stagger == 0 {
		opts.Stagger = 250 * time.Millisecond
	}
	if opts.StallTimeout == 0 {
		opts.StallTimeout = 3 * time.Second
	}
	if opts.Link.KeepaliveInterval == 0 {
		opts.Link.KeepaliveInterval = DefaultKeepalive
	}
	if opts.Link.PongTimeout == 0 {
		opts.Link.PongTimeout = 10 * time.Second
	}
	if opts.Link.IdleTimeout == 0 {
		opts.Link.IdleTimeout = DefaultKeepalive * 5 / 2
	}
	if opts.Dialer == nil {
		opts.Dialer = &net.Dialer{KeepAliveConfig: transport.ClientKeepAlive}
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "magpie-go"
	}
}

// DialEndpoints connects to the server with static key serverKey through
// the first of eps that works. Attempts start in order, one every
// DialOptions.Stagger (250 ms) or at once when the previous one fails, and
// run concurrently: a blocked or black-holed endpoint delays the connection
// by one stagger, not by its timeout. It returns the endpoint that worked.
func DialEndpoints(ctx context.Context, serverKey [32]byte, eps []endpoints.Endpoint, key link.KeyPair, opts DialOptions) (*Conn, endpoints.Endpoint, error) {
	opts.setDefaults()
	if len(eps) == 0 {
		return nil, endpoints.Endpoint{}, errors.New("client: no server address known: ask for a new invite")
	}
	hello, err := proto.Marshal(&wire.ClientHello{MinVersion: wire.Version, MaxVersion: wire.Version, UserAgent: opts.UserAgent,
		DialAttempt: dialAttempt(time.Now())})
	if err != nil {
		return nil, endpoints.Endpoint{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		c   *Conn
		e   endpoints.Endpoint
		err error
	}
	results := make(chan result, len(eps))
	var errs []error
	next, pending := 0, 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	start := func() {
		e := eps[next]
		next++
		pending++
		go func() {
			c, err := dialOne(ctx, e, serverKey, key, hello, opts)
			results <- result{c, e, err}
		}()
		timer.Reset(opts.Stagger)
	}
	for {
		select {
		case <-timer.C:
			if next < len(eps) {
				start()
			}
		case r := <-results:
			pending--
			if r.err == nil {
				cancel()
				// Losers that still connect are closed.
				go func(n int) {
					for range n {
						if r := <-results; r.c != nil {
							r.c.Close()
						}
					}
				}(pending)
				return r.c, r.e, nil
			}
			if errors.Is(r.err, ErrUnsupportedVersion) {
				cancel()
				return nil, r.e, r.err
			}
			errs = append(errs, endpointError{r.e.Key(), r.err})
			if next < len(eps) {
				start()
			} else if pending == 0 {
				return nil, endpoints.Endpoint{}, unreachable(errs)
			}
		case <-ctx.Done():
			go func(n int) {
				for range n {
					if r := <-results; r.c != nil {
						r.c.Close()
					}
				}
			}(pending)
			return nil, endpoints.Endpoint{}, ctx.Err()
		}
	}
}

// lastAttempt is the stamp of this process's latest dial (dialAttempt).
var lastAttempt atomic.Uint64

// dialAttempt stamps a dial for the server (wire.ClientHello's
// dial_attempt; every connection of the dial carries the same stamp): the
// wall clock at now in Unix nanoseconds, kept increasing within the process,
// so that the clock stepped back cannot make a dial look older than an
// earlier one of the same device.
func dialAttempt(now time.Time) uint64 {
	for {
		last := lastAttempt.Load()
		next := max(uint64(now.UnixNano()), last+1)
		if lastAttempt.CompareAndSwap(last, next) {
			return next
		}
	}
}

// dialTransport opens the transport connection for one endpoint.
func dialTransport(ctx context.Context, e endpoints.Endpoint, opts DialOptions) (net.Conn, error) {
	if e.Transport == "" || e.Transport == transport.TCP {
		return opts.Dialer.DialContext(ctx, "tcp", e.Address)
	}
	if dial := opts.Transports[e.Transport]; dial != nil {
		return dial(ctx, e)
	}
	dial := defaultTransports[e.Transport]
	if dial == nil {
		return nil, fmt.Errorf("transport %q not supported by this client", e.Transport)
	}
	return dial(ctx, e, opts.Dialer)
}

// defaultTransports dial the censorship-resistant transports over a TCP
// dialer; see transports.go.
var defaultTransports = map[string]func(ctx context.Context, e endpoints.Endpoint, d tcpDialer) (net.Conn, error){}

// tcpDialer opens TCP connections (DialOptions.Dialer).
type tcpDialer = interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// TransportDialer opens a connection to one endpoint of a transport.
type TransportDialer func(ctx context.Context, e endpoints.Endpoint) (net.Conn, error)

func dialOne(ctx context.Context, e endpoints.Endpoint, serverKey [32]byte, key link.KeyPair, hello []byte, opts DialOptions) (*Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.AddrTimeout)
	defer cancel()
	nc, err := dialTransport(ctx, e, opts)
	if err != nil {
		return nil, err
	}
	// Cancelling ctx aborts the handshake.
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	// The link's handshake timeout is how long to wait for an answer.
	lcfg := opts.Link
	if a := opts.AnswerTimeout; a > 0 && (lcfg.HandshakeTimeoutMax <= 0 || a < lcfg.HandshakeTimeoutMax) {
		lcfg.HandshakeTimeoutMax = a
	}
	lc, reply, err := link.Client(nc, key, serverKey, hello, lcfg)
	if !stop() {
		if lc != nil {
			lc.Close()
		} else {
			nc.Close()
		}
		return nil, fmt.Errorf("handshake: %w", context.Cause(ctx))
	}
	if err != nil {
		nc.Close()
		if errors.Is(err, link.ErrHandshakeTimeout) && errors.Is(err, os.ErrDeadlineExceeded) {
			// Connected, and silence until our deadline: not a refusal, not
			// a reset, but what a server does to a wrong key.
			return nil, fmt.Errorf("%w within %v: %w", ErrNoAnswer, lcfg.HandshakeTimeoutMax, err)
		}
		return nil, err
	}
	var sh wire.ServerHello
	if err := proto.Unmarshal(reply, &sh); err != nil {
		lc.Close()
		return nil, fmt.Errorf("server hello: %w", err)
	}
	if sh.GetError() != nil {
		lc.Close()
		return nil, serverError(sh.GetError())
	}
	c := &Conn{
		endpoint:  e,
		self:      key.Public,
		connected: time.Now(),
		skew:      time.Since(time.UnixMilli(sh.GetServerTimeMs())),
		stall:     opts.StallTimeout,
		lc:        lc,
		hello:     &sh,
		pushes:    make(chan Push, 64),
		done:      make(chan struct{}),
		failed:    make(chan struct{}),
		qready:    make(chan struct{}, 1),
		waiting:   make(map[uint64]chan *wire.Response),
	}
	if d := sh.GetDevice(); d != nil {
		c.device = &DeviceAddr{User: d.GetUser(), Device: d.GetDevice()}
	}
	c.counts = keyCounts(sh.GetKeyCounts())
	go c.readLoop()
	go c.forward()
	return c, nil
}

// Endpoint is the endpoint this connection went through.
func (c *Conn) Endpoint() endpoints.Endpoint { return c.endpoint }

// Device returns the device this connection is registered as, if any.
func (c *Conn) Device() (DeviceAddr, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.device == nil {
		return DeviceAddr{}, false
	}
	return *c.device, true
}

// PublicKey is this device's static public key, which a sign-up puzzle's
// solution is bound to.
func (c *Conn) PublicKey() [32]byte { return c.self }

// ServerTime is the server's clock at handshake time.
func (c *Conn) ServerTime() time.Time { return time.UnixMilli(c.hello.GetServerTimeMs()) }

// Pushes delivers envelopes, receipts and the drained marker in the order the
// server sent them. It is closed when the connection ends. A caller that
// stops receiving stalls the connection (and the server stops pushing).
func (c *Conn) Pushes() <-chan Push { return c.pushes }

// Done is closed when the connection has ended; Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, or nil while it is up.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection.
func (c *Conn) Close() error {
	c.fail(ErrClosed)
	<-c.done
	return nil
}

func (c *Conn) fail(err error) {
	c.once.Do(func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.failed)
		c.lc.Close()
	})
}

func (c *Conn) readLoop() {
	defer c.closeQueue()
read:
	for {
		msg, err := c.lc.ReadMessage()
		if err != nil {
			c.fail(fmt.Errorf("client: connection lost: %w", err))
			break
		}
		c.recvd.Add(int64(len(msg)))
		f, err := wire.DecodeServerFrame(msg)
		if err != nil {
			c.fail(fmt.Errorf("client: bad frame from server: %w", err))
			break
		}
		switch body := f.Body.(type) {
		case *wire.ServerFrame_Response:
			r := body.Response
			c.mu.Lock()
			ch := c.waiting[r.GetId()]
			delete(c.waiting, r.GetId())
			c.mu.Unlock()
			if ch != nil {
				ch <- r
			} else if r.GetId() == 0 && r.GetError() != nil {
				c.fail(serverError(r.GetError()))
			}
		case *wire.ServerFrame_Push:
			p, ok := convertPush(body.Push)
			if !ok {
				continue // a newer server's push kind: ignore
			}
			if e := p.Envelope; e != nil && e.Seq != 0 {
				if err := c.pushArrived(e.ServerTime); err != nil {
					c.fail(err) // not queued: it comes again on the next connection
					break read
				}
			}
			c.queuePush(p)
		}
	}
	c.mu.Lock()
	for id, ch := range c.waiting {
		delete(c.waiting, id)
		close(ch)
	}
	c.mu.Unlock()
}

func addr(d *wire.DeviceAddress) DeviceAddr {
	return DeviceAddr{User: d.GetUser(), Device: d.GetDevice()}
}

func convertPush(p *wire.Push) (Push, bool) {
	switch b := p.Body.(type) {
	case *wire.Push_Envelope:
		e := b.Envelope
		env := &Envelope{
			Seq:        e.GetSeq(),
			From:       addr(e.GetSender()),
			Payload:    e.GetPayload(),
			ServerTime: time.UnixMilli(e.GetServerTimeMs()),
			Ephemeral:  e.GetEphemeral(),
		}
		copy(env.ID[:], e.GetClientMessageId())
		copy(env.Group[:], e.GetGroupId())
		env.GroupChange = e.GetKind() == wire.EnvelopeKind_ENVELOPE_KIND_GROUP_CHANGE
		return Push{Envelope: env}, true
	case *wire.Push_Receipt:
		r := b.Receipt
		rc := &Receipt{Seq: r.GetSeq(), Recipient: addr(r.GetRecipient()), Delivered: time.UnixMilli(r.GetDeliveredMs())}
		copy(rc.ID[:], r.GetClientMessageId())
		return Push{Receipt: rc}, true
	case *wire.Push_QueueDrained:
		return Push{Drained: true, DrainTok: b.QueueDrained.GetDrain()}, true
	case *wire.Push_KeysLow:
		k := keyCounts(b.KeysLow)
		return Push{KeysLow: &k}, true
	}
	return Push{}, false
}

// do sends one request and waits for its response.
func (c *Conn) do(ctx context.Context, req *wire.Request) (*wire.Response, error) {
	return c.doBudget(ctx, req, 0)
}

// slowestLink is the slowest throughput a transfer request is given time
// for before the connection counts as stalled: a 64 KiB chunk on a link
// throttled to 8 KiB/s is slow, not dead.
const slowestLink = 8 << 10

// transferBudget is the extra silence allowed for a request that moves n
// bytes.
func transferBudget(n int) time.Duration {
	return time.Duration(n) * time.Second / slowestLink
}

// doBudget is do with extra time before silence counts as a stall, for
// requests whose answer is big (downloads); the time to send the request
// itself is always allowed for.
func (c *Conn) doBudget(ctx context.Context, req *wire.Request, extra time.Duration) (*wire.Response, error) {
	id := c.nextID.Add(1)
	req.Id = id
	b, err := wire.Marshal(nil, &wire.ClientFrame{Body: &wire.ClientFrame_Request{Request: req}})
	if err != nil {
		return nil, err
	}
	ch := make(chan *wire.Response, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.waiting[id] = ch
	c.mu.Unlock()
	defer c.requestEnds()
	if err := c.requestStarts(); err != nil {
		c.fail(err)
		c.forget(id)
		return nil, err
	}
	if err := c.lc.WriteMessage(b); err != nil {
		c.fail(fmt.Errorf("client: write: %w", err))
		c.forget(id)
		return nil, c.Err()
	}
	c.sentB.Add(int64(len(b)))
	sent, before := time.Now(), c.recvd.Load()
	// Pushing a big request through a slow link takes time during which
	// nothing comes back: allow for it, whatever the request.
	base := c.stall + extra + transferBudget(len(b))
	watchdog := time.NewTimer(base)
	defer watchdog.Stop()
	for {
		select {
		case r, ok := <-ch:
			if !ok {
				return nil, c.Err()
			}
			if r.GetError() != nil {
				return nil, serverError(r.GetError())
			}
			return r, nil
		case <-ctx.Done():
			c.forget(id)
			return nil, ctx.Err()
		case <-watchdog.C:
			// No answer yet. What arrived meanwhile (answers to other
			// requests, pushes queued ahead of this answer) earns the time
			// it takes at the slowest goodput worth having; a path that
			// delivers less than that (a black hole delivers nothing) is
			// left.
			due := base + transferBudget(int(c.recvd.Load()-before))
			left := due - time.Since(sent)
			if left <= 0 {
				c.fail(ErrStalled)
				c.forget(id)
				return nil, ErrStalled
			}
			watchdog.Reset(left)
		}
	}
}

func (c *Conn) forget(id uint64) {
	c.mu.Lock()
	delete(c.waiting, id)
	c.mu.Unlock()
}

func (c *Conn) queuePush(p Push) {
	c.qmu.Lock()
	eph := p.Envelope != nil && p.Envelope.Ephemeral
	if eph && c.nEphem >= maxQueuedEphemeral {
		c.qmu.Unlock()
		return
	}
	if eph {
		c.nEphem++
	}
	c.queue = append(c.queue, p)
	c.qmu.Unlock()
	select {
	case c.qready <- struct{}{}:
	default:
	}
}

func (c *Conn) closeQueue() {
	c.qmu.Lock()
	c.qclosed = true
	c.qmu.Unlock()
	select {
	case c.qready <- struct{}{}:
	default:
	}
}

// forward moves queued pushes to the Pushes channel, in order; it closes the
// channel (and then done) once the reader has stopped and the queue is
// empty, or at once if the connection was closed locally.
func (c *Conn) forward() {
	defer close(c.done)
	defer close(c.pushes)
	for {
		c.qmu.Lock()
		batch, closed := c.queue, c.qclosed
		c.queue, c.nEphem = nil, 0
		c.qmu.Unlock()
		for _, p := range batch {
			select {
			case c.pushes <- p:
			case <-c.failed:
				c.waitReader()
				return
			}
		}
		if closed && len(batch) == 0 {
			return
		}
		if len(batch) == 0 {
			<-c.qready
		}
	}
}

// waitReader waits until readLoop has exited.
func (c *Conn) waitReader() {
	for {
		c.qmu.Lock()
		closed := c.qclosed
		c.qmu.Unlock()
		if closed {
			return
		}
		<-c.qready
	}
}

// Register creates account name with this connection's key as its first
// device.
func (c *Conn) Register(ctx context.Context, name string) (DeviceAddr, error) {
	return c.RegisterWith(ctx, name, RegisterOptions{})
}

// RegisterWithCode is Register with the invite's sign-up code, which a
// server that opens accounts by invitation only asks for.
func (c *Conn) RegisterWithCode(ctx context.Context, name string, code []byte) (DeviceAddr, error) {
	return c.RegisterWith(ctx, name, RegisterOptions{SignupCode: code})
}

// RegisterOptions are what a server may ask of a new account.
type RegisterOptions struct {
	// SignupCode is the invite's sign-up code, for a server that opens
	// accounts by invitation only.
	SignupCode []byte
	// OnPuzzle, if set, is called when the server asks for a proof of work
	// and solving its puzzle begins (bits: its difficulty; the expected
	// work is 2^bits hashes), so that a person can be told why signing up
	// takes a while.
	OnPuzzle func(bits int)
}

// maxPuzzles bounds the puzzles one Register solves: a server whose
// difficulty rises while a puzzle is being solved may send the client back
// for a harder one, but not forever.
const maxPuzzles = 4

// RegisterWith creates account name with this connection's key as its
// first device. A server that asks for proof of work (ErrPoWRequired) gets
// it: Register fetches the server's puzzle, solves it on every core (until
// ctx ends) and registers again.
func (c *Conn) RegisterWith(ctx context.Context, name string, o RegisterOptions) (DeviceAddr, error) {
	var (
		challenge []byte
		counter   uint64
	)
	for range maxPuzzles + 1 {
		d, err := c.RegisterSolved(ctx, name, o.SignupCode, challenge, counter)
		if !errors.Is(err, ErrPoWRequired) {
			return d, err
		}
		if challenge, counter, err = c.solvePuzzle(ctx, name, o.OnPuzzle); err != nil {
			return DeviceAddr{}, err
		}
	}
	return DeviceAddr{}, fmt.Errorf("the server refused %d solved sign-up puzzles (its sign-ups may be under attack); try again later: %w", maxPuzzles, ErrPoWRequired)
}

// RegisterSolved makes one attempt at registering name, with the invite's
// sign-up code (or nil) and a solution to the server's sign-up puzzle (or
// nil and 0): challenge, from SignupChallenge, and the counter that solves
// it (internal/signuppow).
func (c *Conn) RegisterSolved(ctx context.Context, name string, code, challenge []byte, counter uint64) (DeviceAddr, error) {
	r, err := c.do(ctx, &wire.Request{Body: &wire.Request_Register{Register: &wire.RegisterRequest{
		Username: name, SignupCode: code, PowChallenge: challenge, PowCounter: counter,
	}}})
	if err != nil {
		return DeviceAddr{}, err
	}
	d := addr(r.GetRegister().GetDevice())
	c.mu.Lock()
	c.device = &d
	c.mu.Unlock()
	return d, nil
}

// SignupChallenge fetches a sign-up puzzle: nil if the server asks for
// none.
func (c *Conn) SignupChallenge(ctx context.Context) ([]byte, error) {
	r, err := c.do(ctx, &wire.Request{Body: &wire.Request_SignupChallenge{SignupChallenge: &wire.SignupChallengeRequest{}}})
	if err != nil {
		return nil, fmt.Errorf("fetching the sign-up puzzle: %w", err)
	}
	return r.GetSignupChallenge().GetChallenge(), nil
}

// solvePuzzle fetches the server's sign-up puzzle and solves it for name
// and this connection's key.
func (c *Conn) solvePuzzle(ctx context.Context, name string, onPuzzle func(int)) ([]byte, uint64, error) {
	norm, err := username.Normalize(name)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrUsernameInvalid, err)
	}
	ch, err := c.SignupChallenge(ctx)
	if err != nil {
		return nil, 0, err
	}
	p, err := signuppow.Parse(ch)
	if err != nil {
		return nil, 0, fmt.Errorf("the server asked for proof of work but sent no usable puzzle: %w", err)
	}
	if onPuzzle != nil {
		onPuzzle(p.Bits)
	}
	n, err := signuppow.Solve(ctx, ch, norm, c.self)
	if err != nil {
		return nil, 0, err
	}
	return ch, n, nil
}

// UserInfo is what Lookup returns.
type UserInfo struct {
	Name    string
	Devices []DeviceInfo
	// IdentityKey is the account's end-to-end identity key (Signal
	// serialization), nil if none was uploaded.
	IdentityKey []byte
}

// DeviceInfo describes one device of a user.
type DeviceInfo struct {
	Device         uint32
	Key            [32]byte
	Created        time.Time
	RegistrationID uint32 // 0 until the device uploads end-to-end keys
}

// Lookup returns a user's devices, or an error matching ErrUnknownUser.
func (c *Conn) Lookup(ctx context.Context, name string) (*UserInfo, error) {
	r, err := c.do(ctx, &wire.Request{Body: &wire.Request_Lookup{Lookup: &wire.LookupRequest{Username: name}}})
	if err != nil {
		return nil, err
	}
	l := r.GetLookup()
	u := &UserInfo{Name: l.GetUsername(), IdentityKey: l.GetIdentityKey()}
	for _, d := range l.GetDevices() {
		di := DeviceInfo{Device: d.GetDevice(), Created: time.UnixMilli(d.GetCreatedMs()), RegistrationID: d.GetRegistrationId()}
		copy(di.Key[:], d.GetKey())
		u.Devices = append(u.Devices, di)
	}
	return u, nil
}

// SendResult is the server's acknowledgement of a send.
type SendResult struct {
	ServerTime time.Time // when the server first accepted the message
	Duplicate  bool      // the server had this id already
	Devices    int       // devices it was queued for (or, ephemeral, handed to)
}

// Send hands payload to the server for every device of user to. When it
// returns without error the server has stored it durably. Resending with the
// same id after an error is safe: the server stores it once.
func (c *Conn) Send(ctx context.Context, to string, id MessageID, payload []byte) (SendResult, error) {
	return c.send(ctx, &wire.SendRequest{Recipient: to, ClientMessageId: id[:], Payload: payload})
}

// SendEphemeral hands payload to the devices of to that are connected now;
// nothing is stored. It returns how many devices got it.
func (c *Conn) SendEphemeral(ctx context.Context, to string, id MessageID, payload []byte) (int, error) {
	r, err := c.send(ctx, &wire.SendRequest{Recipient: to, ClientMessageId: id[:], Payload: payload, Ephemeral: true})
	return r.Devices, err
}

func (c *Conn) send(ctx context.Context, s *wire.SendRequest) (SendResult, error) {
	r, err := c.do(ctx, &wire.Request{Body: &wire.Request_Send{Send: s}})
	if err != nil {
		return SendResult{}, err
	}
	sr := r.GetSend()
	return SendResult{
		ServerTime: time.UnixMilli(sr.GetServerTimeMs()),
		Duplicate:  sr.GetDuplicate(),
		Devices:    int(sr.GetDevices()),
	}, nil
}

// Endpoints asks the server for its signed endpoint list, if it has one
// newer than version have; nil when it has nothing newer. The caller
// verifies it (endpoints.Verify).
func (c *Conn) Endpoints(ctx context.Context, have uint64) (*wire.SignedEndpointList, error) {
	r, err := c.do(ctx, &wire.Request{Body: &wire.Request_GetEndpoints{GetEndpoints: &wire.GetEndpointsRequest{HaveVersion: have}}})
	if err != nil {
		return nil, err
	}
	return r.GetGetEndpoints().GetList(), nil
}

// Echo sends payload (at most 64 KiB) in a ping and waits for it to come
// back: a round trip carrying data, for measuring throughput.
func (c *Conn) Echo(ctx context.Context, payload []byte) error {
	r, err := c.do(ctx, &wire.Request{Body: &wire.Request_Ping{Ping: &wire.PingRequest{Echo: payload}}})
	if err != nil {
		return err
	}
	if !bytes.Equal(r.GetPing().GetEcho(), payload) {
		return errors.New("client: echo came back altered")
	}
	return nil
}

// UploadStatus is where an upload stands on the server.
type UploadStatus struct {
	BlobID    []byte
	Confirmed uint64 // bytes durably stored
	Size      uint64
	Complete  bool
}

func (c *Conn) upload(ctx context.Context, u *wire.UploadRequest) (UploadStatus, error) {
	r, err := c.do(ctx, &wire.Request{Body: &wire.Request_Upload{Upload: u}})
	if err != nil {
		return UploadStatus{}, err
	}
	ur := r.GetUpload()
	return UploadStatus{BlobID: ur.GetBlobId(), Confirmed: ur.GetConfirmed(), Size: ur.GetSize(), Complete: ur.GetComplete()}, nil
}

// UploadStart reserves a blob of size bytes for an attachment.
func (c *Conn) UploadStart(ctx context.Context, size uint64) (UploadStatus, error) {
	return c.upload(ctx, &wire.UploadRequest{StartSize: size})
}

// UploadChunk stores data at offset (which must be the confirmed length).
func (c *Conn) UploadChunk(ctx context.Context, blob []byte, offset uint64, data []byte) (UploadStatus, error) {
	return c.upload(ctx, &wire.UploadRequest{BlobId: blob, Offset: offset, Data: data})
}

// UploadState asks how much of an upload the server has.
func (c *Conn) UploadState(ctx context.Context, blob []byte) (UploadStatus, error) {
	return c.upload(ctx, &wire.UploadRequest{BlobId: blob, Status: true})
}

// UploadComplete finishes an upload: the server checks the digest and keeps
// the blob until fetches devices have downloaded it (or it expires).
func (c *Conn) UploadComplete(ctx context.Context, blob []byte, digest [32]byte, fetches int) (UploadStatus, error) {
	return c.upload(ctx, &wire.UploadRequest{BlobId: blob, Digest: digest[:], ExpectedFetches: uint32(fetches)})
}

// Download reads up to length bytes of a complete blob from offset.
func (c *Conn) Download(ctx context.Context, blob []byte, offset uint64, length int) (data []byte, size uint64, err error) {
	r, err := c.doBudget(ctx, &wire.Request{Body: &wire.Request_Download{Download: &wire.DownloadRequest{
		BlobId: blob, Offset: offset, Length: uint32(length),
	}}}, transferBudget(length))
	if err != nil {
		return nil, 0, err
	}
	return r.GetDownload().GetData(), r.GetDownload().GetSize(), nil
}

// Ping measures a round trip and returns the server's clock.
func (c *Conn) Ping(ctx context.Context) (time.Time, error) {
	r, err := c.do(ctx, &wire.Request{Body: &wire.Request_Ping{Ping: &wire.PingRequest{}}})
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(r.GetPing().GetServerTimeMs()), nil
}

// Drain asks the server to push Drained again, with the token it returns,
// once everything queued for this device by now has been pushed: a device
// that stays connected learns it is up to date without reconnecting.
// Tokens grow on each call.
func (c *Conn) Drain(ctx context.Context) (uint64, error) {
	tok := c.drainTok.Add(1)
	if _, err := c.do(ctx, &wire.Request{Body: &wire.Request_Ping{Ping: &wire.PingRequest{Drain: tok}}}); err != nil {
		return 0, err
	}
	return tok, nil
}

// KeyCounts says how many one-time prekeys a device has left on the server.
type KeyCounts struct {
	PreKeys, KyberPreKeys int
}

func keyCounts(k *wire.KeyCounts) KeyCounts {
	return KeyCounts{PreKeys: int(k.GetPreKeys()), KyberPreKeys: int(k.GetKyberPreKeys())}
}

// KeyCounts returns the one-time prekey counts the server reported in the
// handshake (zero for an unregistered device).
func (c *Conn) KeyCounts() KeyCounts { return c.counts }

// SetKeys uploads end-to-end public keys (see wire.SetKeysRequest) and
// returns the one-time prekey counts now stored.
func (c *Conn) SetKeys(ctx context.Context, k *wire.SetKeysRequest) (KeyCounts, error) {
	r, err := c.do(ctx, &wire.Request{Body: &wire.Request_SetKeys{SetKeys: k}})
	if err != nil {
		return KeyCounts{}, err
	}
	return keyCounts(r.GetSetKeys().GetKeyCounts()), nil
}

// GetBundles fetches prekey bundles for devices of user (nil: all devices
// with keys). Each call spends one of each device's one-time prekeys.
func (c *Conn) GetBundles(ctx context.Context, user string, devices []uint32) (*wire.GetBundlesResponse, error) {
	r, err := c.do(ctx, &wire.Request{Body: &wire.Request_GetBundles{GetBundles: &wire.GetBundlesRequest{Username: user, Devices: devices}}})
	if err != nil {
		return nil, err
	}
	return r.GetGetBundles(), nil
}

// DevicePayload is one device's ciphertext in a per-device send. It is
// e2e's type, so that an end-to-end send hands its payloads over as they are.
type DevicePayload = e2e.DevicePayload

// SendPerDevice sends one payload to each named device of user to (the
// end-to-end mode). The list must name exactly the recipient's devices with
// keys (for one's own account: the other devices); otherwise the error
// matches ErrMismatchedDevices and its *ServerError carries the Mismatch.
func (c *Conn) SendPerDevice(ctx context.Context, to string, id MessageID, ephemeral bool, payloads []DevicePayload) (SendResult, error) {
	req := &wire.SendRequest{Recipient: to, ClientMessageId: id[:], PerDevice: true, Ephemeral: ephemeral}
	for _, p := range payloads {
		req.DevicePayloads = append(req.DevicePayloads, &wire.DevicePayload{Device: p.Device, RegistrationId: p.RegistrationID, Payload: p.Payload})
	}
	return c.send(ctx, req)
}

// Ack tells the server that pushed items (envelopes, receipts) are safely
// stored and may be deleted.
func (c *Conn) Ack(seqs ...uint64) error {
	for len(seqs) > 0 {
		n := min(len(seqs), wire.MaxAckSeqs)
		b, err := wire.Marshal(nil, &wire.ClientFrame{Body: &wire.ClientFrame_Ack{Ack: &wire.Ack{Seqs: seqs[:n]}}})
		if err != nil {
			return err
		}
		if err := c.lc.WriteMessage(b); err != nil {
			c.fail(fmt.Errorf("client: write: %w", err))
			return c.Err()
		}
		c.sentB.Add(int64(len(b)))
		seqs = seqs[n:]
	}
	return nil
}

// NewMessageID returns a random message id.
func NewMessageID() MessageID {
	var id MessageID
	if _, err := rand.Read(id[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return id
}

// endpointError is why one endpoint could not be reached.
type endpointError struct {
	endpoint string
	err      error
}

func (e endpointError) Error() string { return e.endpoint + ": " + e.err.Error() }
func (e endpointError) Unwrap() error { return e.err }

// Unreachable is the error of a dial that reached no endpoint. Its text
// names each endpoint with a short verdict (connection_refused, …); the
// full errors stay reachable with errors.Is and errors.As.
type Unreachable struct{ Errs []error }

func unreachable(errs []error) error { return &Unreachable{errs} }

func (u *Unreachable) Error() string {
	parts := make([]string, 0, len(u.Errs))
	for _, err := range u.Errs {
		var ee endpointError
		if errors.As(err, &ee) {
			if errors.Is(ee.err, ErrNoAnswer) {
				parts = append(parts, ee.endpoint+" connected but got no answer to the handshake")
				continue
			}
			v := verdict(ee.err)
			if v == VerdictOther {
				v = ee.err.Error()
			}
			parts = append(parts, ee.endpoint+" "+strings.ReplaceAll(v, "_", " "))
			continue
		}
		parts = append(parts, err.Error())
	}
	return "could not reach the server (" + strings.Join(parts, "; ") + ")"
}

func (u *Unreachable) Unwrap() []error { return u.Errs }

// GroupChange appends a signed change (package group) to a group's log and
// returns its position. ErrConflict: another change came first (propose it
// again on the new head); ErrForbidden: the group's rules refuse it.
func (c *Conn) GroupChange(ctx context.Context, group [16]byte, signed []byte) (uint64, error) {
	r, err := c.doBudget(ctx, &wire.Request{Body: &wire.Request_GroupChange{GroupChange: &wire.GroupChangeRequest{
		GroupId: group[:], SignedChange: signed,
	}}}, transferBudget(len(signed)))
	if err != nil {
		return 0, err
	}
	return r.GetGroupChange().GetSeq(), nil
}

// GroupLog reads a group's log from seq from on; more says whether to ask
// again from the next seq. proof is a link proof, for someone joining by
// link who is not in the group yet; nil otherwise.
func (c *Conn) GroupLog(ctx context.Context, group [16]byte, from uint64, proof []byte) (changes [][]byte, more bool, err error) {
	r, err := c.doBudget(ctx, &wire.Request{Body: &wire.Request_GroupLog{GroupLog: &wire.GroupLogRequest{
		GroupId: group[:], FromSeq: from, LinkProof: proof,
	}}}, transferBudget(wire.MaxFrame))
	if err != nil {
		return nil, false, err
	}
	return r.GetGroupLog().GetChanges(), r.GetGroupLog().GetMore(), nil
}

// GroupSend hands one ciphertext to the server for every member device of
// a group (stored once, queued for each); ephemeral ones reach only the
// members connected now.
func (c *Conn) GroupSend(ctx context.Context, group [16]byte, id MessageID, payload []byte, ephemeral bool) (SendResult, error) {
	r, err := c.doBudget(ctx, &wire.Request{Body: &wire.Request_GroupSend{GroupSend: &wire.GroupSendRequest{
		GroupId: group[:], ClientMessageId: id[:], Payload: payload, Ephemeral: ephemeral,
	}}}, transferBudget(len(payload)))
	if err != nil {
		return SendResult{}, err
	}
	sr := r.GetGroupSend()
	return SendResult{ServerTime: time.UnixMilli(sr.GetServerTimeMs()), Duplicate: sr.GetDuplicate(), Devices: int(sr.GetDevices())}, nil
}
