package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"syscall"
	"time"

	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/link"
)

// ConnState is the engine's connection state.
type ConnState string

const (
	ConnStopped    ConnState = "stopped"    // Run is not running
	ConnConnecting ConnState = "connecting" // dialling the server
	ConnOnline     ConnState = "online"     // connected: sending and receiving
	ConnOffline    ConnState = "offline"    // waiting to retry (Status.Err says why)
	// ConnStorageFull: the client's disk is full. Nothing is received or
	// acknowledged until there is space; the server keeps the messages.
	ConnStorageFull ConnState = "storage_full"
)

// Status is the engine's connection state, since when, and why.
type Status struct {
	State ConnState
	Err   error // why it is offline
	Since time.Time
	// Endpoint is the endpoint the connection goes through when online
	// (as endpoints.Endpoint.Key: transport://address).
	Endpoint string
}

var (
	// ErrNotRegistered means the device has no account yet.
	ErrNotRegistered = errors.New("this device has no account yet")
	// ErrRunning means Run is already running for this Client.
	ErrRunning = errors.New("client: the engine is already running")
	// ErrOffline means the server could not be reached just now; errors
	// that match it also say why.
	ErrOffline = errors.New("offline")
	// ErrNoAnswer means the server accepted the connection but did not
	// answer the handshake.
	ErrNoAnswer = clientconn.ErrNoAnswer
	// ErrServerKey means the server never answered a handshake this client
	// made with the only key it knows, the invite's, which has never
	// worked: a Magpie server stays silent to a wrong server key (and to
	// a clock more than 2 minutes off). It wraps ErrNoAnswer.
	ErrServerKey = fmt.Errorf("%w: check that the invite's server key is right (or this device's clock)", clientconn.ErrNoAnswer)
	// ErrInviteTampered means an invite's signed endpoint list does not
	// verify against its server key.
	ErrInviteTampered = clientconn.ErrInviteTampered
	// ErrInviteExpired means every endpoint an invite names has expired.
	ErrInviteExpired = clientconn.ErrInviteExpired
)

// engineState is Run's bookkeeping, guarded by Client.mu.
type engineState struct {
	running  bool
	status   Status
	live     *clientconn.Conn
	attempts int  // connection attempts that failed since Open
	drained  bool // the live connection has delivered the backlog
	// A Sync on a live connection asks for a fresh Drained (drainWant) and
	// waits until the receive loop has handled it (drainSeen).
	drainWant, drainSeen uint64
	changed              chan struct{} // closed and replaced on every change
	// A worker is idle when it is neither busy nor woken: Sync waits for
	// that. wake is set by kick under the lock, so no moment exists when
	// a woken worker looks idle.
	busy   [numWorkers]bool
	wake   [numWorkers]bool
	wakeCh [numWorkers]chan struct{} // capacity 1

	sesame     *e2e.Sesame     // the live connection's send path
	sending    uint64          // the outbox item's message being sent now
	cancelling map[uint64]bool // messages Cancel is removing
}

// The engine's workers besides the receiver.
const (
	workerOutbox = iota
	workerUpload
	workerDownload
	numWorkers
)

func (e *engineState) init() {
	for w := range e.wakeCh {
		e.wakeCh[w] = make(chan struct{}, 1)
	}
}

// kick wakes worker w: it has work.
func (c *Client) kick(w int) {
	c.mu.Lock()
	c.eng.wake[w] = true
	ch := c.eng.wakeCh[w]
	c.mu.Unlock()
	select {
	case ch <- struct{}{}:
	default:
	}
}

// kickDial makes a waiting engine reconnect now.
func (c *Client) kickDial() {
	select {
	case c.dialNow <- struct{}{}:
	default:
	}
}

// sleep is a worker's wait for work: it returns true when woken (by a kick
// or, with retry > 0, when retry has passed), false when ctx ends. The
// worker counts as busy from its return until the next sleep.
func (c *Client) sleep(ctx context.Context, w int, retry time.Duration) bool {
	c.mu.Lock()
	if c.eng.wake[w] {
		c.eng.wake[w] = false
		c.eng.busy[w] = true
		c.mu.Unlock()
		return true
	}
	c.eng.busy[w] = false
	c.notifyLocked()
	ch := c.eng.wakeCh[w]
	c.mu.Unlock()
	var timer <-chan time.Time
	if retry > 0 {
		t := time.NewTimer(retry)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-ch:
	case <-timer:
	}
	c.mu.Lock()
	c.eng.wake[w] = false
	c.eng.busy[w] = true
	c.mu.Unlock()
	return true
}

// changedLocked returns the channel that the next change closes.
func (c *Client) changedLocked() <-chan struct{} {
	if c.eng.changed == nil {
		c.eng.changed = make(chan struct{})
	}
	return c.eng.changed
}

// notifyLocked wakes everyone waiting on a change.
func (c *Client) notifyLocked() {
	if c.eng.changed != nil {
		close(c.eng.changed)
		c.eng.changed = nil
	}
}

// Status returns the engine's connection state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.eng.status
}

// setStatus records the engine's state; failed also counts a failed
// connection attempt, in the same critical section.
func (c *Client) setStatus(state ConnState, err error, failed bool) {
	c.mu.Lock()
	if failed {
		c.eng.attempts++
		c.notifyLocked()
	}
	if c.eng.status.State == state && errors.Is(c.eng.status.Err, err) && errors.Is(err, c.eng.status.Err) {
		c.mu.Unlock()
		return
	}
	c.eng.status = Status{State: state, Err: err, Since: c.opts.Now()}
	if state == ConnOnline && c.eng.live != nil {
		c.eng.status.Endpoint = c.eng.live.Endpoint().Key()
	}
	st := c.eng.status
	c.notifyLocked()
	c.mu.Unlock()
	if err != nil {
		c.opts.Logger.Info("connection state", "state", state, "err", err)
	}
	c.publish(Event{Kind: EventState, Status: st})
}

// Run is the engine: it connects to the server and stays connected,
// reconnecting with backoff (or at once when a call needs the server);
// sends the outbox; receives, stores and only then acknowledges messages;
// uploads and downloads attachments, resuming where they stopped. It
// returns nil when ctx ends, or an error that retrying will not mend
// (ErrNotRegistered, an unsupported protocol version, a device the server
// no longer knows).
func (c *Client) Run(ctx context.Context) error {
	if _, ok := c.Account(); !ok {
		return ErrNotRegistered
	}
	c.mu.Lock()
	if c.eng.running || c.closed {
		c.mu.Unlock()
		return ErrRunning
	}
	c.eng.running = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.eng.running = false
		c.mu.Unlock()
		c.setStatus(ConnStopped, nil, false)
	}()
	// Disappearing messages go while the engine runs, online or not.
	expireCtx, stopExpire := context.WithCancel(ctx)
	expired := make(chan struct{})
	go func() {
		defer close(expired)
		c.expireLoop(expireCtx)
	}()
	defer func() {
		stopExpire()
		<-expired
	}()
	backoff := time.Second
	var quick time.Time // the last reconnection without a wait
	for {
		c.setStatus(ConnConnecting, nil, false)
		conn, err := c.dial(ctx)
		blocked := false
		if err == nil {
			backoff = time.Second
			err = c.session(ctx, conn)
			if blocked = pathBlocked(err) && ctx.Err() == nil; blocked {
				c.rememberBlocked(ctx, conn.Endpoint())
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		// A failed dial, or a connection that ended: the status says why,
		// and waiters on a connection (liveConn, Sync, WaitSent) stop
		// waiting for this one. Both change under one lock, so no waiter
		// sees the attempt counted with the old status.
		if fatal(err) {
			c.setStatus(ConnOffline, err, true)
			return err
		}
		state := ConnOffline
		if errors.Is(err, ErrStorageFull) {
			state = ConnStorageFull
		}
		c.setStatus(state, fmt.Errorf("%w: %w", ErrOffline, err), true)
		if blocked && time.Since(quick) > quickEvery {
			// The path went silent, too slow or was reset: the wait was
			// had (or the censor's reset is no reason to wait); try the
			// other endpoints now. Once per quickEvery, so that a censor
			// resetting every new connection meets the backoff.
			quick = time.Now()
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(jitter(backoff)):
		case <-c.dialNow:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// quickEvery is how often at most Run reconnects at once after a blocked
// path.
const quickEvery = 5 * time.Second

// pathBlocked reports whether a connection ended the way a censored path
// ends it: an answer or a keepalive that did not come in time (a black
// hole, or a throttle too slow for the conversation), or a reset.
func pathBlocked(err error) bool {
	return errors.Is(err, clientconn.ErrStalled) || errors.Is(err, clientconn.ErrTooSlow) || errors.Is(err, link.ErrIdleTimeout) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// fatal reports errors that reconnecting will not mend.
func fatal(err error) bool {
	return errors.Is(err, ErrNotRegistered) || errors.Is(err, clientconn.ErrUnsupportedVersion)
}

func jitter(d time.Duration) time.Duration {
	n, err := rand.Int(rand.Reader, big.NewInt(int64(d/2)+1))
	if err != nil {
		return d
	}
	return d/2 + time.Duration(n.Int64())
}

// dial opens an authenticated connection through the first endpoint that
// works, and refreshes the endpoint list in band.
func (c *Client) dial(ctx context.Context) (*clientconn.Conn, error) {
	eps, version, err := c.knownEndpoints(ctx)
	if err != nil {
		return nil, err
	}
	if len(eps) == 0 {
		// Init refuses such invites; a home made before it did can still
		// have one.
		_, err := clientconn.InviteEndpoints(c.inv, c.opts.Now())
		if err == nil {
			err = ErrInviteExpired
		}
		return nil, fmt.Errorf("no server address known: %w", err)
	}
	conn, e, err := clientconn.DialEndpoints(ctx, c.inv.ServerKey, eps, c.key, c.opts.Dial)
	if err != nil {
		if errors.Is(err, clientconn.ErrNoAnswer) && len(c.lastGood(ctx)) == 0 {
			// Silence, and the invite's key has never worked: the likeliest
			// cause is the key. (Once it has worked, silence means an
			// overloaded server or a blocked path.)
			return nil, fmt.Errorf("%w: %w", ErrServerKey, err)
		}
		return nil, err
	}
	c.remember(ctx, e)
	if err := c.refreshEndpoints(ctx, conn, version); err != nil {
		conn.Close()
		return nil, err
	}
	// The server is the authority on registration: adopt what it says.
	if d, ok := conn.Device(); ok {
		if err := c.saveAccount(ctx, DeviceAddr(d)); err != nil {
			conn.Close()
			return nil, err
		}
	} else if _, registered := c.Account(); registered {
		conn.Close()
		return nil, fmt.Errorf("the server does not know this device (was its account deleted?): %w", ErrNotRegistered)
	}
	return conn, nil
}

// session runs one connection: the receiver here, the outbox and the
// transfers beside it, until the connection ends or ctx does.
func (c *Client) session(ctx context.Context, conn *clientconn.Conn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer conn.Close()
	if err := c.ensureKeys(ctx, conn, conn.KeyCounts()); err != nil {
		return err
	}
	own, err := c.otherOwnDevices(ctx, conn)
	if err != nil {
		return err
	}
	ses, err := c.sesame(ctx, conn)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.eng.live, c.eng.drained, c.eng.sesame = conn, false, ses
	c.eng.drainWant, c.eng.drainSeen = 0, 0
	// Every worker starts with a pass: there may be work from before.
	for w := range numWorkers {
		c.eng.wake[w] = true
	}
	c.notifyLocked()
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.eng.live, c.eng.drained, c.eng.sesame = nil, false, nil
		c.eng.drainWant, c.eng.drainSeen = 0, 0
		c.notifyLocked()
		c.mu.Unlock()
	}()
	c.setStatus(ConnOnline, nil, false)

	var wg sync.WaitGroup
	var once sync.Once
	var first error
	stop := func(err error) {
		once.Do(func() { first = err })
		cancel()
		conn.Close()
	}
	for _, w := range []func(context.Context, *clientconn.Conn) error{
		func(ctx context.Context, conn *clientconn.Conn) error { return c.flusher(ctx, conn, own) },
		c.uploader,
		c.downloader,
	} {
		wg.Go(func() {
			if err := w(ctx, conn); err != nil && ctx.Err() == nil {
				stop(err)
			}
		})
	}
	stop(c.receive(ctx, conn))
	wg.Wait()
	c.mu.Lock()
	c.eng.busy = [numWorkers]bool{}
	c.notifyLocked()
	c.mu.Unlock()
	if first == nil || errors.Is(first, context.Canceled) {
		if err := conn.Err(); err != nil && !errors.Is(err, clientconn.ErrClosed) {
			return err
		}
		return errors.New("connection closed")
	}
	return first
}

// liveConn returns Run's connection, waiting (and hurrying a reconnect)
// while it is connecting. It fails with ErrOffline once an attempt that
// began after the call has failed.
func (c *Client) liveConn(ctx context.Context) (*clientconn.Conn, error) {
	c.mu.Lock()
	start := c.eng.attempts
	c.mu.Unlock()
	c.kickDial()
	for {
		c.mu.Lock()
		live, st, attempts, running := c.eng.live, c.eng.status, c.eng.attempts, c.eng.running
		changed := c.changedLocked()
		c.mu.Unlock()
		switch {
		case live != nil:
			return live, nil
		case !running:
			return nil, fmt.Errorf("%w: the engine stopped", ErrOffline)
		case attempts > start+1 || (attempts > start && st.State != ConnConnecting):
			return nil, offlineErr(st.Err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// offlineErr is err, matching ErrOffline (ErrOffline itself for nil: a
// caller told "offline" must never get a nil error).
func offlineErr(err error) error {
	if err == nil {
		return ErrOffline
	}
	if errors.Is(err, ErrOffline) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrOffline, err)
}

// withConn runs fn on Run's connection, or, when Run is not running, on a
// connection of its own for the call.
func (c *Client) withConn(ctx context.Context, fn func(*clientconn.Conn) error) error {
	c.mu.Lock()
	running := c.eng.running
	c.mu.Unlock()
	if running {
		conn, err := c.liveConn(ctx)
		if err != nil {
			return err
		}
		return fn(conn)
	}
	conn, err := c.dial(ctx)
	if err != nil {
		return offlineErr(err)
	}
	defer conn.Close()
	if _, ok := conn.Device(); ok {
		if err := c.ensureKeys(ctx, conn, conn.KeyCounts()); err != nil {
			return err
		}
	}
	return fn(conn)
}

// Sync brings the client up to date and returns: it connects (or uses the
// running engine), receives everything queued for this device, sends the
// outbox and finishes the attachment transfers it can. It fails with an
// error matching ErrOffline if the server cannot be reached; what is queued
// stays queued.
func (c *Client) Sync(ctx context.Context) error {
	c.mu.Lock()
	running := c.eng.running
	c.mu.Unlock()
	if running {
		c.kickDial() // someone is waiting: do not sit out a backoff
		c.requestDrain(ctx)
		return c.waitIdle(ctx, true, workerOutbox, workerUpload, workerDownload)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	// Run may not have started: wait until it has (or has failed).
	for {
		c.mu.Lock()
		running = c.eng.running
		changed := c.changedLocked()
		c.mu.Unlock()
		if running {
			break
		}
		select {
		case err := <-done:
			cancel()
			return err
		case <-changed:
		case <-time.After(10 * time.Millisecond):
		}
	}
	err := c.waitIdle(ctx, true, workerOutbox, workerUpload, workerDownload)
	cancel()
	if rerr := <-done; err == nil {
		err = rerr
	}
	return err
}

// requestDrain makes the live connection, if any, report again when it has
// delivered everything queued by now: its first report covered only what
// was queued when it opened. Without a live connection the next one's first
// report is fresh enough. A failed request ends that connection, and
// waitIdle then waits for the next.
func (c *Client) requestDrain(ctx context.Context) {
	c.mu.Lock()
	conn := c.eng.live
	c.mu.Unlock()
	if conn == nil {
		return
	}
	tok, err := conn.Drain(ctx)
	if err != nil {
		return
	}
	c.mu.Lock()
	if c.eng.live == conn {
		c.eng.drainWant = max(c.eng.drainWant, tok)
		c.notifyLocked()
	}
	c.mu.Unlock()
}

// Flush waits until the running engine has sent what it can of the
// outbox: everything, except what the server refused for now. It fails
// with an error matching ErrOffline if the engine is not connected after an
// attempt, or is not running.
func (c *Client) Flush(ctx context.Context) error {
	return c.waitIdle(ctx, false, workerOutbox)
}

// waitIdle waits until the running engine is online, has (with drained)
// received the backlog, and the workers have nothing left to do now; or
// until an attempt to connect has failed.
func (c *Client) waitIdle(ctx context.Context, drained bool, workers ...int) error {
	c.mu.Lock()
	start := c.eng.attempts
	c.mu.Unlock()
	for {
		c.mu.Lock()
		e := c.eng
		changed := c.changedLocked()
		c.mu.Unlock()
		idle := e.live != nil && (!drained || e.drained && e.drainSeen >= e.drainWant)
		for _, w := range workers {
			idle = idle && !e.busy[w] && !e.wake[w]
		}
		switch {
		case idle:
			return nil
		case !e.running:
			return offlineErr(e.status.Err)
		case e.attempts > start && e.live == nil && e.status.State != ConnConnecting:
			return offlineErr(e.status.Err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
