// Package router moves envelopes between devices: it commits each send to the
// store (batched commit: many sends share one durable transaction), tracks
// which devices are connected, and feeds each connected device its queue in
// order, with a window of unacknowledged items so that a device that stops
// reading stops costing anything.
//
// The router knows nothing of sockets or protobufs: a connected device is a
// Mailbox, implemented by the server's connection.
package router

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/magpie-im/magpie/store"
)

// ErrClosed is returned for work submitted after Close.
var ErrClosed = errors.New("router: closed")

// Push is one item for a connected device. Exactly one field is set.
type Push struct {
	Message   *store.Message   // a queued envelope or receipt; acknowledge by Seq
	Ephemeral *Ephemeral       // never stored, never acknowledged
	Drained   bool             // the backlog present at connect time (or at a Drain) has been pushed
	DrainTok  uint64           // with Drained: the token of the Drain it answers; 0 at connect
	KeysLow   *store.KeyCounts // the device should upload more one-time prekeys
}

// Ephemeral is an envelope for devices online now only (typing indicators).
type Ephemeral struct {
	From     store.DeviceAddr
	ClientID [store.ClientIDSize]byte
	Payload  []byte
	// Payloads, when non-nil, holds one payload per device (end-to-end
	// mode); devices it does not name get nothing.
	Payloads map[uint32][]byte
	Sent     time.Time
	// Group is set for a group's ephemeral envelope (typing in a group).
	Group [16]byte
}

// Mailbox is a connected device as the router sees it.
type Mailbox interface {
	// Push hands p to the connection for sending. It must not block. It
	// returns false when the connection cannot take more (it is closing).
	Push(p Push) bool
	// Superseded is called when another connection of the same device
	// attaches; the mailbox should close.
	Superseded()
}

// Config configures a Router. Zero fields take the defaults shown.
type Config struct {
	Store      store.Store
	Logger     *slog.Logger
	QueueLimit int // items per device queue (10,000)
	// SenderShare is the most items one sender's account may hold in a
	// device's queue (a quarter of QueueLimit), so that no sender can fill
	// it and shut the others out; negative: no share.
	SenderShare int
	TTL         time.Duration // how long undelivered items live (30 days)
	Window      int           // unacknowledged pushes per device (256)
	// WindowBytes bounds the payload bytes pushed and not yet acknowledged
	// per device (4 MiB), so a connection's send buffer stays bounded
	// whatever the message sizes: pushes go on while fewer bytes than this
	// are unacknowledged, so the bound is WindowBytes plus one message.
	WindowBytes int
	MaxBatch    int // operations per commit (1,024)
	// CommitDelay: under load (the previous commit ended less than
	// 10 × CommitDelay ago), a batch of fewer than 16 operations waits up
	// to this long for more before committing, so that one WAL write and
	// one sync serve more messages (PostgreSQL's commit_delay). An idle
	// server commits at once. Default 1 ms; negative disables.
	CommitDelay time.Duration
	Sweep       time.Duration // how often expired items are deleted (1 minute)
	Now         func() time.Time
	// OnCommit, if set, hears about every batched commit (for metrics).
	OnCommit func(ops int, took time.Duration, err error)

	// Peers, if set, joins this router to the other nodes of a cluster
	// that share its store (peers.go). Nil: a single node, at no cost.
	Peers Peers
	// Recheck: with Peers, how often each connected device's queue is read
	// again whatever the peers said (10 s; negative: never), so that a
	// wake lost between nodes delays items by at most this long. It costs
	// one Pending read per connected device per Recheck, spread evenly
	// over the interval.
	Recheck time.Duration

	// commitClock, if set, is the commit loop's clock for CommitDelay, so
	// that a test (export_test.go), not the scheduler, decides whether
	// the router is under load and when a delay runs out.
	commitClock commitClock
	// recheckTicker, if set, starts the periodic re-read's ticker, so
	// that a test sends the ticks (time.NewTicker otherwise).
	recheckTicker func(d time.Duration) (ticks <-chan time.Time, stop func())
}

// commitClock is what the commit loop reads time from.
type commitClock interface {
	Now() time.Time
	// StartDelay starts the wait for more operations; the channel fires
	// when it runs out, and stop is called when the wait is over.
	StartDelay(d time.Duration) (fired <-chan time.Time, stop func())
}

// wallClock is the commit loop's clock outside tests: one timer, reused.
type wallClock struct{ t *time.Timer }

func newWallClock() *wallClock {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &wallClock{t}
}

func (c *wallClock) Now() time.Time { return time.Now() }

func (c *wallClock) StartDelay(d time.Duration) (<-chan time.Time, func()) {
	c.t.Reset(d)
	return c.t.C, c.stop
}

func (c *wallClock) stop() { c.t.Stop() }

// Router routes envelopes. Create with New; Close when done.
type Router struct {
	cfg   Config
	log   *slog.Logger
	ops   chan op
	done  chan struct{} // closed when the committer has exited
	stop  chan struct{} // closed by Close
	sweep sync.WaitGroup

	mu      sync.RWMutex
	closed  bool
	online  map[string]map[uint32]*Subscription // user → device → subscription
	submits sync.WaitGroup                      // senders between the closed check and the channel send

	committed  []*store.Message   // the committer's scratch space (deliverAll)
	away       []store.DeviceAddr // the committer's: devices to wake on other nodes
	peers      Peers              // cfg.Peers
	slots      uint32             // attaches so far, for spreading rechecks (under mu)
	clock      commitClock
	lastCommit time.Time // when the committer's previous commit ended
}

type op struct {
	enq     *store.Enqueue
	ack     *store.Ack
	sendCB  func(*store.Enqueue, error)
	ackFrom *Subscription
	// A group change or send, and what to call once it is committed.
	gchange *store.GroupChange
	gsend   *store.GroupSend
	groupCB func(error)
}

// New starts a router's committer and expiry sweeper.
func New(cfg Config) *Router {
	cfg = cfg.withDefaults()
	r := &Router{
		cfg:    cfg,
		log:    cfg.Logger,
		ops:    make(chan op, cfg.MaxBatch),
		done:   make(chan struct{}),
		stop:   make(chan struct{}),
		online: make(map[string]map[uint32]*Subscription),
		peers:  cfg.Peers,
	}
	r.clock = cfg.commitClock
	if r.clock == nil {
		r.clock = newWallClock()
	}
	go r.commitLoop()
	r.sweep.Add(1)
	go r.sweepLoop()
	if r.peers != nil {
		r.peers.Bind(r)
		if cfg.Recheck > 0 {
			r.sweep.Add(1)
			go r.recheckLoop()
		}
	}
	return r
}

// withDefaults fills in the zero fields of cfg.
func (cfg Config) withDefaults() Config {
	if cfg.QueueLimit == 0 {
		cfg.QueueLimit = 10_000
	}
	if cfg.SenderShare == 0 {
		cfg.SenderShare = max(cfg.QueueLimit/4, 1)
	}
	if cfg.TTL == 0 {
		cfg.TTL = 30 * 24 * time.Hour
	}
	if cfg.Window == 0 {
		cfg.Window = 256
	}
	if cfg.WindowBytes == 0 {
		cfg.WindowBytes = 4 << 20
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = 1024
	}
	if cfg.CommitDelay == 0 {
		cfg.CommitDelay = time.Millisecond
	}
	if cfg.Sweep == 0 {
		cfg.Sweep = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Recheck == 0 {
		cfg.Recheck = 10 * time.Second
	}
	if cfg.recheckTicker == nil {
		cfg.recheckTicker = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	return cfg
}

// Close stops accepting work, commits what was already submitted, runs its
// callbacks, and returns when the committer has finished.
func (r *Router) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		<-r.done
		return
	}
	r.closed = true
	r.mu.Unlock()
	close(r.stop)
	r.sweep.Wait()
	r.submits.Wait() // no sender is between its closed check and its send now
	close(r.ops)
	<-r.done
}

// submit queues o for the committer, or returns false after Close.
func (r *Router) submit(o op) bool {
	r.mu.RLock()
	if r.closed {
		r.mu.RUnlock()
		return false
	}
	r.submits.Add(1)
	r.mu.RUnlock()
	r.ops <- o // blocks when the committer is behind: back-pressure on readers
	r.submits.Done()
	return true
}

// Send queues one durable copy of e.Payload for every device of e.To and
// calls done once the copies are committed (or the send failed). The store
// fills in e's result fields; Expires and QueueLimit are set here. Sends
// submitted by one goroutine are committed in submission order.
func (r *Router) Send(e *store.Enqueue, done func(*store.Enqueue, error)) {
	e.Expires = r.cfg.Now().Add(r.cfg.TTL)
	e.QueueLimit, e.SenderShare = r.cfg.QueueLimit, max(r.cfg.SenderShare, 0)
	if !r.submit(op{enq: e, sendCB: done}) {
		done(e, ErrClosed)
	}
}

// GroupChange appends gc to its group's log and queues it for every device
// of gc.Notify, in one commit, and calls done once it is committed (or
// failed; gc.Err says why the store refused it). Expires is set here.
func (r *Router) GroupChange(gc *store.GroupChange, done func(error)) {
	gc.Expires = r.cfg.Now().Add(r.cfg.TTL)
	if !r.submit(op{gchange: gc, groupCB: done}) {
		done(ErrClosed)
	}
}

// GroupSend stores gs.Payload once and queues it for every device of gs.To,
// and calls done once it is committed (or failed). Expires and QueueLimit
// are set here.
func (r *Router) GroupSend(gs *store.GroupSend, done func(error)) {
	gs.Expires = r.cfg.Now().Add(r.cfg.TTL)
	gs.QueueLimit, gs.SenderShare = r.cfg.QueueLimit, max(r.cfg.SenderShare, 0)
	if !r.submit(op{gsend: gs, groupCB: done}) {
		done(ErrClosed)
	}
}

// SendEphemeral hands e to the connected devices of user to, except the
// sending device, and returns how many took it. Nothing is stored. With
// Peers, e also goes to to's devices on other nodes, which the count does
// not include.
func (r *Router) SendEphemeral(to string, e *Ephemeral) int {
	n := r.PeerEphemeral(to, e)
	if r.peers != nil {
		r.peers.Ephemeral(to, e)
	}
	return n
}

// PeerEphemeral is SendEphemeral for this node's devices only: what Peers
// call with an ephemeral envelope from another node.
func (r *Router) PeerEphemeral(to string, e *Ephemeral) int {
	r.mu.RLock()
	subs := make([]*Subscription, 0, len(r.online[to]))
	for _, s := range r.online[to] {
		if s.dev != e.From {
			subs = append(subs, s)
		}
	}
	r.mu.RUnlock()
	n := 0
	for _, s := range subs {
		p := e
		if e.Payloads != nil {
			payload, ok := e.Payloads[s.dev.Device]
			if !ok {
				continue
			}
			one := *e
			one.Payload, one.Payloads = payload, nil
			p = &one
		}
		if s.mb.Push(Push{Ephemeral: p}) {
			n++
		}
	}
	return n
}

// PushTo hands p to device d if it is connected now. With Peers, p goes
// to the other nodes if d is not connected here, and PushTo reports false.
func (r *Router) PushTo(d store.DeviceAddr, p Push) bool {
	r.mu.RLock()
	s := r.online[d.User][d.Device]
	r.mu.RUnlock()
	if s == nil && r.peers != nil {
		r.peers.Push(d, p)
	}
	return s != nil && s.mb.Push(p)
}

// PeerPush is PushTo for this node's devices only: what Peers call with a
// push from another node.
func (r *Router) PeerPush(d store.DeviceAddr, p Push) bool {
	r.mu.RLock()
	s := r.online[d.User][d.Device]
	r.mu.RUnlock()
	return s != nil && s.mb.Push(p)
}

// smallBatch is the batch size below which, under load, the commit loop
// waits CommitDelay for more operations.
const smallBatch = 16

func (r *Router) commitLoop() {
	defer close(r.done)
	batch := &store.Batch{}
	var ops []op
	for first := range r.ops {
		ops = append(ops[:0], first)
		ops = r.collect(ops, nil)
		// A negative CommitDelay leaves no time that counts as load.
		if d := r.cfg.CommitDelay; len(ops) < smallBatch && r.clock.Now().Sub(r.lastCommit) < 10*d {
			fired, stop := r.clock.StartDelay(d)
			ops = r.collect(ops, fired)
			stop()
		}
		r.commit(batch, ops)
	}
}

// collect adds waiting operations to ops, up to MaxBatch: those already
// queued if wait is nil, else those that arrive until wait fires.
func (r *Router) collect(ops []op, wait <-chan time.Time) []op {
	for len(ops) < r.cfg.MaxBatch {
		if wait == nil {
			select {
			case o, ok := <-r.ops:
				if !ok {
					return ops
				}
				ops = append(ops, o)
			default:
				return ops
			}
			continue
		}
		select {
		case o, ok := <-r.ops:
			if !ok {
				return ops
			}
			ops = append(ops, o)
		case <-wait:
			return ops
		}
	}
	return ops
}

func (r *Router) commit(batch *store.Batch, ops []op) {
	batch.Now = r.cfg.Now()
	batch.Enqueues = batch.Enqueues[:0]
	batch.Acks = batch.Acks[:0]
	batch.GroupChanges = batch.GroupChanges[:0]
	batch.GroupSends = batch.GroupSends[:0]
	for _, o := range ops {
		switch {
		case o.enq != nil:
			batch.Enqueues = append(batch.Enqueues, o.enq)
		case o.gchange != nil:
			batch.GroupChanges = append(batch.GroupChanges, o.gchange)
		case o.gsend != nil:
			batch.GroupSends = append(batch.GroupSends, o.gsend)
		default:
			batch.Acks = append(batch.Acks, o.ack)
		}
	}
	start := time.Now()
	err := r.cfg.Store.Commit(context.Background(), batch)
	if r.cfg.OnCommit != nil {
		r.cfg.OnCommit(len(ops), time.Since(start), err)
	}
	if err != nil {
		r.log.Error("commit failed; senders get an error and may retry", "ops", len(ops), "err", err)
	}
	if err == nil {
		r.deliverAll(ops, batch.Now)
	}
	// Before the callbacks, so that a sender told of this commit finds it
	// already counted as the last one.
	r.lastCommit = r.clock.Now()
	// A failed ack leaves the items queued; they are pushed again on the
	// device's next connection and acknowledged then.
	for _, o := range ops {
		switch {
		case o.enq != nil:
			o.sendCB(o.enq, err)
		case o.groupCB != nil:
			o.groupCB(err)
		}
	}
}

// deliverAll offers what a commit queued to the connected devices, in Seq
// order. The order matters: a device fed straight from commits takes only
// items above the last one it was pushed, and within a batch the operations'
// order is not the seqs' order (the store queues every enqueue before the
// acks' receipts).
func (r *Router) deliverAll(ops []op, now time.Time) {
	items := r.committed[:0]
	for _, o := range ops {
		switch {
		case o.enq != nil && o.enq.Err == nil:
			for i := range o.enq.Queued {
				items = append(items, &o.enq.Queued[i])
			}
		case o.gchange != nil && o.gchange.Err == nil:
			for i := range o.gchange.Queued {
				items = append(items, &o.gchange.Queued[i])
			}
		case o.gsend != nil && o.gsend.Err == nil:
			for i := range o.gsend.Queued {
				items = append(items, &o.gsend.Queued[i])
			}
		case o.ack != nil:
			for i := range o.ack.Receipts {
				items = append(items, &o.ack.Receipts[i])
			}
		}
	}
	slices.SortFunc(items, func(a, b *store.Message) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, m := range items {
		r.deliver(m, now)
	}
	clear(items) // do not pin the batch's payloads until the next commit
	r.committed = items[:0]
	if len(r.away) > 0 {
		// The commit has returned, so a woken node's pump finds the items.
		slices.SortFunc(r.away, compareDevices)
		r.away = slices.Compact(r.away)
		r.peers.Wake(r.away)
		r.away = r.away[:0]
	}
}

func compareDevices(a, b store.DeviceAddr) int {
	return cmp.Or(cmp.Compare(a.User, b.User), cmp.Compare(a.Device, b.Device))
}

// deliver hands a just-committed item to its device's subscription, if the
// device is connected here, or notes it for the peers to wake.
func (r *Router) deliver(m *store.Message, now time.Time) {
	r.mu.RLock()
	s := r.online[m.To.User][m.To.Device]
	r.mu.RUnlock()
	if s != nil {
		s.offer(m, now)
	} else if r.peers != nil {
		r.away = append(r.away, m.To)
	}
}

func (r *Router) sweepLoop() {
	defer r.sweep.Done()
	t := time.NewTicker(r.cfg.Sweep)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			n, err := r.cfg.Store.Expire(context.Background(), r.cfg.Now())
			if err != nil {
				r.log.Error("expiring old messages", "err", err)
			} else if n > 0 {
				r.log.Info("expired undelivered messages", "count", n)
			}
		}
	}
}

// Attach makes mb the connection of device d and starts pushing d's queue to
// it from the oldest item. A previous connection of d is superseded.
//
// With Peers, a connection of d on another node is superseded too.
func (r *Router) Attach(d store.DeviceAddr, mb Mailbox) *Subscription {
	now := time.Now()
	return r.AttachAt(d, mb, Handshake{Began: now, Done: now})
}

// Handshake is when a connection's handshake began (the socket was
// accepted) and when it was done, by the server's clock, and the client's
// dial it came from: what decides which of a device's connections is its
// current one (Replaces).
type Handshake struct {
	Began, Done time.Time
	// Attempt is the client's stamp for the dial (wire.ClientHello's
	// dial_attempt): equal for the connections one dial opened at once to
	// several endpoints, greater for every later dial; 0 if not given.
	Attempt uint64
}

// Replaces reports whether a connection with handshake h is the device's
// current one rather than one with handshake cur.
//
// The device knows the order of its own dials, whatever the servers'
// clocks say, so of two dials stamped by the client less than
// AttemptWindow apart the later one wins. Stamps further apart come from
// dials the servers' clocks order well enough, and a client whose clock
// was stepped back by more than that (between two runs of it) must not
// lose to its own stale connection.
// Otherwise (connections of one dial, or a client that does not stamp)
// the servers' clocks decide. Of two connections whose handshakes
// overlapped, the first done wins: a client dialing several endpoints at
// once keeps the first that answers and closes the others
// (clientconn.DialEndpoints), so the later one is on its way out. Of one
// dial's connections, the first done always wins. Otherwise the later one
// wins: the device reconnected. Of two done at the same instant, the one
// asking wins (Attach: the later call).
func (h Handshake) Replaces(cur Handshake) bool {
	if h.Attempt != 0 && cur.Attempt != 0 {
		d := int64(h.Attempt - cur.Attempt)
		if d == 0 {
			return h.Done.Before(cur.Done)
		}
		if d > -int64(AttemptWindow) && d < int64(AttemptWindow) {
			return d > 0
		}
	}
	if !h.Done.Before(cur.Done) {
		return !h.Began.Before(cur.Done)
	}
	return cur.Began.Before(h.Done)
}

// AttemptWindow is how far apart two dials' stamps (Handshake.Attempt,
// nanoseconds) may be for the stamps to order them.
const AttemptWindow = time.Minute

// Siblings reports whether h and cur come from one dial of the client.
func (h Handshake) Siblings(cur Handshake) bool {
	return h.Attempt != 0 && h.Attempt == cur.Attempt
}

// AttachAt is Attach for a connection with handshake h. If the device's
// current connection replaces it (Handshake.Replaces), the new one is
// superseded at once instead: a dial's losing sibling, or a stale
// connection whose goroutine ran late.
func (r *Router) AttachAt(d store.DeviceAddr, mb Mailbox, h Handshake) *Subscription {
	s := &Subscription{r: r, dev: d, mb: mb, dirty: true, inflight: make(map[uint64]int), hs: h}
	r.mu.Lock()
	if cur := r.online[d.User][d.Device]; cur != nil && !h.Replaces(cur.hs) {
		r.mu.Unlock()
		s.closed = true
		mb.Superseded()
		return s
	}
	devs := r.online[d.User]
	if devs == nil {
		devs = make(map[uint32]*Subscription)
		r.online[d.User] = devs
		if r.peers != nil {
			r.peers.Listen(d.User)
		}
	}
	old := devs[d.Device]
	devs[d.Device] = s
	s.slot = r.slots % recheckSlots
	r.slots++
	r.mu.Unlock()
	if old != nil {
		old.stop()
		old.mb.Superseded()
	}
	if r.peers != nil {
		r.peers.Attached(d, h)
	}
	s.kick()
	return s
}

// Subscription is one connected device's delivery state.
type Subscription struct {
	r   *Router
	dev store.DeviceAddr
	mb  Mailbox

	mu            sync.Mutex
	lastSeq       uint64         // highest Seq pushed on this connection
	inflight      map[uint64]int // pushed, not yet acknowledged: seq → payload size
	inflightBytes int
	dirty         bool   // the queue may hold items after lastSeq
	running       bool   // a pump goroutine is active
	drained       bool   // Drained has been pushed
	drainWant     bool   // a Drain waits for the queue to be pushed out
	drainTok      uint64 // the token of the newest Drain
	closed        bool
	slot          uint32    // which of the recheck slots it is read again in (set under r.mu)
	hs            Handshake // which of the device's connections wins (AttachAt, PeerAttached)
}

// Ack removes acknowledged items from the device's queue (durably, in the
// next batched commit) and reopens the push window.
func (s *Subscription) Ack(seqs []uint64) error {
	// Only what this subscription pushed and has not had acknowledged
	// reaches the store: a client acknowledges what it was pushed, on the
	// connection it came on (anything left over is pushed again on the
	// next one), so the rest (repeats, made-up seqs) would only be a
	// flood of store work that slows every other user's sends.
	var known []uint64
	s.mu.Lock()
	for _, q := range seqs {
		if n, ok := s.inflight[q]; ok {
			delete(s.inflight, q)
			s.inflightBytes -= n
			known = append(known, q)
		}
	}
	s.mu.Unlock()
	if len(known) == 0 {
		return nil
	}
	a := &store.Ack{Device: s.dev, Seqs: known, Expires: s.r.cfg.Now().Add(s.r.cfg.TTL)}
	if !s.r.submit(op{ack: a, ackFrom: s}) {
		return ErrClosed
	}
	s.kick()
	return nil
}

// Detach stops pushing to this connection. Items pushed but not acknowledged
// stay queued and are pushed again on the next connection. With peers, the
// other nodes are told to read the device's queue: the device may be
// connected to one of them already (a sibling of this connection's dial, or
// a newer connection whose news has not come), and nothing told that one
// about what was committed here while this one was current.
func (s *Subscription) Detach() {
	s.stop()
	r := s.r
	r.mu.Lock()
	current := r.online[s.dev.User][s.dev.Device] == s
	if current {
		r.remove(s.dev)
	}
	r.mu.Unlock()
	if current && r.peers != nil {
		r.peers.Wake([]store.DeviceAddr{s.dev})
	}
}

// remove takes d's subscription out of the online map; r.mu is held.
func (r *Router) remove(d store.DeviceAddr) {
	devs := r.online[d.User]
	delete(devs, d.Device)
	if len(devs) == 0 {
		delete(r.online, d.User)
		if r.peers != nil {
			r.peers.Unlisten(d.User)
		}
	}
}

func (s *Subscription) stop() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// offer pushes m, just committed, straight to the connection when the
// subscription has pushed everything committed before it (not dirty, no
// pump running) and the window has room. Reading it back from the store
// instead cost a query per message: 15% of the server's CPU in bench chat.
// Otherwise the queue is marked dirty and a pump reads it in order.
//
// Only the committer calls offer, in Seq order (deliverAll). While it
// pushes, running is set, so no pump can start and push a later item first.
func (s *Subscription) offer(m *store.Message, now time.Time) {
	s.mu.Lock()
	// With peers, another node may have committed items below m.Seq that
	// this one has not heard of yet: pushing m would put them behind the
	// pump's cursor for good. The pump reads them all, in order, from the
	// store, where they are visible once m is (store.Message.Seq).
	if s.r.peers != nil || s.dirty || s.running || s.closed || !s.hasRoom() || m.Seq <= s.lastSeq || !m.Expires.After(now) {
		s.dirty = true
		s.mu.Unlock()
		s.kick()
		return
	}
	s.running = true
	s.take(m)
	s.mu.Unlock()

	ok := s.mb.Push(Push{Message: m})

	s.mu.Lock()
	s.running = false
	if !ok {
		s.closed = true
	}
	s.mu.Unlock()
	s.kick() // in case the queue was marked dirty meanwhile
}

// kick starts a pump if there may be work and room in the window.
func (s *Subscription) kick() {
	s.mu.Lock()
	start := s.dirty && !s.running && !s.closed && s.hasRoom()
	if start {
		s.running = true
	}
	s.mu.Unlock()
	if start {
		go s.pump()
	}
}

// Drain asks for another Drained push, carrying tok, once everything queued
// now has been pushed: how a device that has been online all along learns
// that it is up to date.
func (s *Subscription) Drain(tok uint64) {
	s.mu.Lock()
	s.drainWant, s.drainTok, s.dirty = true, tok, true
	s.mu.Unlock()
	s.kick()
}

// hasRoom reports whether the window allows another push; s.mu is held.
func (s *Subscription) hasRoom() bool {
	return len(s.inflight) < s.r.cfg.Window && (s.inflightBytes < s.r.cfg.WindowBytes || len(s.inflight) == 0)
}

// take counts m as pushed: in flight until acknowledged, and the newest
// item pushed. s.mu is held; items are taken in Seq order.
func (s *Subscription) take(m *store.Message) {
	s.inflight[m.Seq] = len(m.Payload)
	s.inflightBytes += len(m.Payload)
	s.lastSeq = m.Seq
}

// pumpPage bounds one store read.
const pumpPage = 128

// pump pushes queued items in Seq order until the queue is empty, the window
// is full, or the subscription stops. Only one pump runs per subscription, so
// pushes leave in order; it exits when idle, so an idle device costs no
// goroutine.
func (s *Subscription) pump() {
	for {
		s.mu.Lock()
		if s.closed || !s.dirty || !s.hasRoom() {
			s.running = false
			s.mu.Unlock()
			return
		}
		s.dirty = false
		after := s.lastSeq
		limit := min(s.r.cfg.Window-len(s.inflight), pumpPage)
		s.mu.Unlock()

		msgs, err := s.r.cfg.Store.Pending(context.Background(), s.dev, after, limit, s.r.cfg.Now())
		if err != nil {
			s.r.log.Error("reading queue; retrying in 1s", "device", s.dev.Device, "err", err)
			s.mu.Lock()
			s.running = false
			s.dirty = true
			s.mu.Unlock()
			time.AfterFunc(time.Second, s.kick)
			return
		}
		s.mu.Lock()
		// Take what the byte window allows; the rest is read again later.
		n := 0
		for n < len(msgs) && s.hasRoom() {
			s.take(&msgs[n])
			n++
		}
		if len(msgs) == limit || n < len(msgs) {
			s.dirty = true // there may be more
		}
		drained := len(msgs) < limit && n == len(msgs) && (!s.drained || s.drainWant)
		tok := s.drainTok
		if drained {
			s.drained, s.drainWant = true, false
		}
		closed := s.closed
		s.mu.Unlock()
		if closed {
			continue
		}
		for i := range msgs[:n] {
			if !s.mb.Push(Push{Message: &msgs[i]}) {
				s.stop()
				break
			}
		}
		if drained {
			s.mb.Push(Push{Drained: true, DrainTok: tok})
		}
	}
}
