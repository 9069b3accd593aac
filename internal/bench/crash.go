package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/link"
)

// CrashOptions configure the crash scenario: chat while the server is
// killed with SIGKILL and restarted.
type CrashOptions struct {
	// Server is the command (argv) that runs the server. The tool starts it
	// itself, because it has to kill it. It must print its invite on stdout
	// on a line of its own, keep its key and store in a data directory that
	// outlives it, and listen on a fixed address: the clients keep the
	// first invite and find the restarted server through it.
	Server []string

	Clients  int           // users, paired at random
	Rate     float64       // messages per second, all clients together
	Duration time.Duration // how long to send
	Size     int           // payload bytes (at least MinSize; default 1024)
	Uniform  bool          // evenly spaced sends (default: Poisson arrivals)
	// Inflight bounds each client's unacknowledged messages (default 64).
	Inflight int

	// Kills is how many times the server is killed, spread evenly over
	// Duration; 0 kills nothing (a control run).
	Kills int
	// KillEvery, if set, kills the server this often during Duration
	// instead (at most Kills times when Kills > 0).
	KillEvery time.Duration

	// Drain is how long, after the last send, the tool waits for the
	// messages not yet acknowledged to be acknowledged and for every
	// acknowledged one to be delivered (default 30 s).
	Drain time.Duration
	// StartTimeout bounds each start of the server, until it prints its
	// invite (default 30 s).
	StartTimeout time.Duration
	// SetupConcurrency is how many clients register at once (default 32).
	SetupConcurrency int

	// Progress, if set, gets one line a second while sending, and a line
	// per kill.
	Progress io.Writer
	// ServerLog, if set, gets the server's stderr, of every start in turn;
	// the last few KiB are kept anyway for error messages.
	ServerLog io.Writer
	// Logger, if set, hears about the server's starts and stops.
	Logger *slog.Logger
}

// ErrAckedLost is returned (wrapped) by RunCrash when a message the server
// acknowledged was never delivered: the one outcome the scenario exists to
// rule out.
var ErrAckedLost = errors.New("acknowledged messages were lost")

func (o *CrashOptions) setDefaults() error {
	if len(o.Server) == 0 {
		return errors.New("bench crash: no server command")
	}
	if err := (openLoop{o.Clients, o.Rate, o.Duration, &o.Size, &o.Inflight, &o.SetupConcurrency}).check("crash"); err != nil {
		return err
	}
	if o.Kills < 0 || o.KillEvery < 0 {
		return errors.New("bench crash: --kills and --kill-every cannot be negative")
	}
	if o.Drain == 0 {
		o.Drain = 30 * time.Second
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// killTimes returns when to kill the server, as offsets from the first
// send: every KillEvery, or Kills spread evenly so that there is load both
// before the first kill and after the last.
func (o *CrashOptions) killTimes() []time.Duration {
	var out []time.Duration
	if o.KillEvery > 0 {
		for t := o.KillEvery; t < o.Duration && (o.Kills == 0 || len(out) < o.Kills); t += o.KillEvery {
			out = append(out, t)
		}
		return out
	}
	for j := 1; j <= o.Kills; j++ {
		out = append(out, o.Duration*time.Duration(j)/time.Duration(o.Kills+1))
	}
	return out
}

// CrashReport is the outcome of a crash run.
type CrashReport struct {
	Clients   int     `json:"clients"`
	Rate      float64 `json:"target_rate"`
	Size      int     `json:"size"`
	DurationS float64 `json:"duration_s"`
	SetupS    float64 `json:"setup_s"`

	KillsPlanned int          `json:"kills_planned"`
	KillsDone    int          `json:"kills_done"`
	Kills        []KillReport `json:"kills"`

	Sent     int64 `json:"sent"`     // messages handed to a client to send
	Acked    int64 `json:"acked"`    // messages the server acknowledged (each counted once)
	Unacked  int64 `json:"unacked"`  // sent, never acknowledged before the tool gave up
	Refused  int64 `json:"refused"`  // refused by the server for good (not retried)
	Received int64 `json:"received"` // distinct messages delivered
	// AckedReceived is how many acknowledged messages were delivered; it
	// equals Acked unless something was lost.
	AckedReceived int64 `json:"acked_received"`
	// Lost: acknowledged by the server, never delivered. It must be 0.
	Lost         int64    `json:"acked_lost"`
	LostExamples []string `json:"acked_lost_examples,omitempty"`
	// Redelivered counts deliveries of a message already delivered: allowed
	// after a crash (at-least-once), when the recipient's ack had not been
	// committed yet.
	Redelivered int64 `json:"redelivered"`
	// Reordered counts messages delivered after a message their sender
	// sent later (per sender → recipient pair, first deliveries only);
	// ReorderedResent, those of them that had to be resent after a kill
	// (they race the sends that follow, so this is expected). The rest
	// overtook each other on the way to the server, as a client's
	// concurrent sends can (Inflight 1 rules that out), or were reordered
	// by the server.
	Reordered       int64 `json:"reordered"`
	ReorderedResent int64 `json:"reordered_resent"`
	// Unexpected counts deliveries of messages this run never sent, or to
	// the wrong recipient.
	Unexpected int64 `json:"unexpected"`
	// Resent counts send attempts beyond each message's first;
	// DuplicateAcks, resends the server recognized as already stored.
	Resent        int64 `json:"resent"`
	DuplicateAcks int64 `json:"duplicate_acks"`
	Reconnects    int64 `json:"reconnects"`
	// OnLastServer counts the clients that connected to the server
	// started after the last kill: every one should have. (A client
	// still backing off from one kill when the next comes reconnects once
	// for both, so Reconnects may be fewer than clients × kills.)
	OnLastServer int   `json:"clients_on_last_server"`
	Errors       int64 `json:"errors"`
	// ErrorKinds counts errors by where they happened and what they were
	// (at most 20 kinds). Refused connections and lost connections are
	// expected around each kill.
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`

	// Aborted says why the run was cut short (interrupted, or the server
	// died by itself or would not restart); the counts are then not final:
	// nothing was waited for.
	Aborted string `json:"aborted,omitempty"`

	// MaxRecoveryS is the longest recovery of any kill.
	MaxRecoveryS float64 `json:"max_recovery_s"`
	Ack          Summary `json:"ack_latency"`     // intended send time → final server ack
	Deliver      Summary `json:"deliver_latency"` // intended send time → first delivery
}

// KillReport is one SIGKILL of the server.
type KillReport struct {
	AtS float64 `json:"at_s"` // since the first send
	// UnackedAtKill is how many messages were sent and not yet
	// acknowledged when the server was killed (what the kill could lose).
	UnackedAtKill int64 `json:"unacked_at_kill"`
	// DownS is kill → the restarted server printing its invite.
	DownS float64 `json:"down_s"`
	// RecoveryS is kill → the first acknowledgement from the restarted
	// server; -1 if none came before the next kill or the end of the run.
	RecoveryS float64 `json:"recovery_s"`
}

// RunCrash starts the server of o.Server, registers o.Clients users on it
// and runs chat traffic through it while killing it with SIGKILL and
// restarting it. Clients reconnect as the same device and resend every
// message the server has not acknowledged with the same message id; the
// report says whether anything acknowledged was lost (then the error wraps
// ErrAckedLost), delivered twice or out of order.
func RunCrash(ctx context.Context, o CrashOptions) (*CrashReport, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	r := &crashRun{o: o, tail: &serverTail{max: 8 << 10, w: o.ServerLog}, ack: NewHistogram(), deliver: NewHistogram(),
		errKinds: map[string]int64{}}
	rand.Read(r.nonce[:])
	start := time.Now()
	srv, line, err := r.startServer(ctx)
	if err != nil {
		return nil, fmt.Errorf("bench crash: starting the server: %w", err)
	}
	// The supervisor owns the server once it runs; until then, stop it here.
	handedOff := false
	defer func() {
		if !handedOff {
			srv.stop(o.Logger)
		}
	}()
	if r.inv, err = invite.Parse(line); err != nil {
		return nil, fmt.Errorf("bench crash: the server's invite: %w", err)
	}
	if len(r.inv.Addrs) == 0 {
		return nil, errors.New("bench crash: the server's invite has no tcp address to come back to")
	}

	run := runID()
	if o.Progress != nil {
		r.progressf("server up (%s); registering %d users…\n", strings.Join(r.inv.Addrs, ", "), o.Clients)
	}
	r.lastGen = make([]atomic.Int32, o.Clients)
	clients, err := registerCrashClients(ctx, r, run, o.Clients, o.SetupConcurrency)
	if err != nil {
		return nil, fmt.Errorf("bench crash: setting up clients: %w", err)
	}
	setup := time.Since(start)

	rng := newRand()
	r.peer = pairs(o.Clients, rng)
	r.names = make([]string, o.Clients)
	scheds := make([][]time.Duration, o.Clients)
	counts := make([]int, o.Clients)
	for i := range scheds {
		r.names[i] = userName(run, i)
		scheds[i] = schedule(o.Rate/float64(o.Clients), o.Duration, o.Uniform, rng)
		counts[i] = len(scheds[i])
	}
	r.led = newCrashLedger(r.peer, counts)

	runCtx, cancelRun := context.WithCancelCause(ctx)
	defer cancelRun(nil)

	// From here on there is no early return: every goroutine started below
	// is waited for on the way out, whatever happens.

	// Clients: each keeps a connection up, reconnecting after every kill,
	// and receives on it until the end of the run.
	clientCtx, stopClients := context.WithCancel(runCtx)
	var clientWG sync.WaitGroup
	for _, cl := range clients {
		clientWG.Go(func() { cl.maintain(clientCtx) })
	}

	// The supervisor kills and restarts the server on schedule, notices a
	// server that dies by itself, and stops the server at the end.
	times := o.killTimes()
	r.begin = time.Now().Add(50 * time.Millisecond)
	superCtx, stopSuper := context.WithCancel(runCtx)
	killsDone := make(chan struct{})
	superErr := make(chan error, 1)
	handedOff = true
	go func() {
		err := r.supervise(superCtx, srv, times, killsDone)
		if err != nil {
			cancelRun(err) // ends the run early
		}
		superErr <- err
	}()

	// Senders: open loop, as in chat.
	sendCtx, stopSends := context.WithCancel(runCtx)
	var schedWG sync.WaitGroup
	for i, cl := range clients {
		schedWG.Go(func() { cl.sendAll(sendCtx, scheds[i]) })
	}

	// Progress once a second until every send was made and every kill done.
	schedDone := make(chan struct{})
	go func() { schedWG.Wait(); close(schedDone) }()
	tick := time.NewTicker(time.Second)
	// The loop's own copies, set to nil as each is done (the channels
	// themselves are closed by their goroutines).
	waitSched, waitKills := (<-chan struct{})(schedDone), (<-chan struct{})(killsDone)
	for waitSched != nil || waitKills != nil {
		select {
		case <-waitSched:
			waitSched = nil
		case <-waitKills:
			waitKills = nil
		case <-runCtx.Done():
			waitSched, waitKills = nil, nil
		case now := <-tick.C:
			r.progressLine(now)
		}
	}
	tick.Stop()
	schedWG.Wait()

	// Drain, within o.Drain: resends until everything is acknowledged,
	// then deliveries until everything acknowledged has arrived.
	drainCtx, stopDrain := context.WithTimeout(runCtx, o.Drain)
	allAcked := make(chan struct{})
	go func() { r.msgWG.Wait(); close(allAcked) }()
	select {
	case <-allAcked:
	case <-drainCtx.Done():
		// Given up: what is still unacknowledged is reported as such.
	}
	stopSends()
	<-allAcked
	for r.led.pending() > 0 && drainCtx.Err() == nil {
		select {
		case <-r.led.signal:
		case <-drainCtx.Done():
		}
	}
	stopDrain()
	stopClients()
	clientWG.Wait()
	stopSuper()
	serr := <-superErr

	rep := r.report(setup, len(times))
	if serr != nil {
		rep.Aborted = serr.Error()
		return rep, fmt.Errorf("bench crash: %w", serr)
	}
	if err := ctx.Err(); err != nil {
		rep.Aborted = err.Error()
		return rep, err
	}
	if rep.Lost > 0 {
		return rep, fmt.Errorf("bench crash: %d %w (never delivered, though the server acknowledged them), e.g. %s",
			rep.Lost, ErrAckedLost, strings.Join(rep.LostExamples, "; "))
	}
	return rep, nil
}

// crashRun is the state of one crash run shared by its goroutines.
type crashRun struct {
	o     CrashOptions
	inv   invite.Invite
	nonce [8]byte // first half of every message id: ids never repeat across runs
	names []string
	peer  []int
	led   *crashLedger
	tail  *serverTail
	begin time.Time

	msgWG sync.WaitGroup // one per message until acknowledged, refused or given up

	sent, acked, resent, dupAcks, reconnects, errors atomic.Int64
	ack, deliver                                     *Histogram

	// gen is the number of restarts begun: a connection made after kill j
	// has generation j (1-based) and its acknowledgements come from the
	// server started after that kill.
	gen atomic.Int32
	// lastGen is, per client, the generation of its newest connection.
	lastGen []atomic.Int32

	mu       sync.Mutex
	errKinds map[string]int64
	kills    []killRecord
	pmu      sync.Mutex // serializes progress lines
}

type killRecord struct {
	at, restarted, recovered time.Time
	unacked                  int64
}

func (r *crashRun) progressf(format string, args ...any) {
	if r.o.Progress == nil {
		return
	}
	r.pmu.Lock()
	fmt.Fprintf(r.o.Progress, format, args...)
	r.pmu.Unlock()
}

func (r *crashRun) progressLine(now time.Time) {
	r.mu.Lock()
	kills := len(r.kills)
	r.mu.Unlock()
	sent, acked := r.sent.Load(), r.acked.Load()
	r.progressf("%5.0fs  sent %d  acked %d  unacked %d  received %d  kills %d  reconnects %d  errors %d  p99 ack %s\n",
		now.Sub(r.begin).Seconds(), sent, acked, sent-acked, r.led.receivedCount(), kills,
		r.reconnects.Load(), r.errors.Load(), fmtDur(r.ack.P99()))
}

// fail counts an error by where it happened and its kind.
func (r *crashRun) fail(where string, err error) {
	r.errors.Add(1)
	msg := where + ": " + crashErrKind(err)
	r.mu.Lock()
	if _, ok := r.errKinds[msg]; ok || len(r.errKinds) < 20 {
		r.errKinds[msg]++
	}
	r.mu.Unlock()
}

// crashErrKind names an error without the addresses and ports that would make
// every occurrence a kind of its own.
func crashErrKind(err error) string {
	var se *clientconn.ServerError
	switch {
	case errors.As(err, &se):
		return "server: " + se.Message
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the server"
	case errors.Is(err, clientconn.ErrStalled):
		return "the server stopped answering"
	case errors.Is(err, context.DeadlineExceeded), os.IsTimeout(err):
		return "timed out"
	case errors.Is(err, clientconn.ErrClosed), errors.Is(err, net.ErrClosed):
		return "connection closed"
	}
	return err.Error()
}

// recovered notes an acknowledgement on a connection of generation gen:
// the first one after a kill ends that kill's outage.
func (r *crashRun) recovered(gen int32, now time.Time) {
	if gen == 0 {
		return
	}
	r.mu.Lock()
	k := &r.kills[gen-1]
	first := k.recovered.IsZero()
	if first {
		k.recovered = now
	}
	at := k.at
	r.mu.Unlock()
	if first {
		r.progressf("kill %d: first acknowledgement from the restarted server %s after the kill\n", gen, fmtDur(now.Sub(at)))
	}
}

// msgID is the client message id of sender i's k-th message: the run's
// nonce, i and k. A resend uses the same id, so the server stores it once.
func (r *crashRun) msgID(i, k int) clientconn.MessageID {
	var id clientconn.MessageID
	copy(id[:8], r.nonce[:])
	binary.BigEndian.PutUint32(id[8:12], uint32(i))
	binary.BigEndian.PutUint32(id[12:16], uint32(k))
	return id
}

// parseID is the inverse of msgID; ok is false for an id of another run.
func (r *crashRun) parseID(id clientconn.MessageID) (i, k int, ok bool) {
	if [8]byte(id[:8]) != r.nonce {
		return 0, 0, false
	}
	return int(binary.BigEndian.Uint32(id[8:12])), int(binary.BigEndian.Uint32(id[12:16])), true
}

// onDelivery records envelope e pushed to client to.
func (r *crashRun) onDelivery(to int, e *clientconn.Envelope) {
	now := time.Now()
	i, k, ok := r.parseID(e.ID)
	if !ok || len(e.Payload) < MinSize || [4]byte(e.Payload[:4]) != payloadMagic {
		r.led.unexpectedDelivery()
		return
	}
	if r.led.delivered(to, i, k) {
		intended := time.Unix(0, int64(binary.BigEndian.Uint64(e.Payload[4:12])))
		r.deliver.Record(now.Sub(intended))
	}
}

// onLastServer counts the clients whose newest connection is to the
// server started after the last kill.
func (r *crashRun) onLastServer() int {
	n, last := 0, r.gen.Load()
	for i := range r.lastGen {
		if r.lastGen[i].Load() == last {
			n++
		}
	}
	return n
}

func (r *crashRun) report(setup time.Duration, planned int) *CrashReport {
	t := r.led.tally(func(i, k int) string {
		id := r.msgID(i, k)
		return fmt.Sprintf("%s → %s message %d (client id %s)", r.names[i], r.names[r.peer[i]], k, hex.EncodeToString(id[:]))
	})
	o := r.o
	rep := &CrashReport{
		Clients: o.Clients, Rate: o.Rate, Size: o.Size, DurationS: o.Duration.Seconds(), SetupS: setup.Seconds(),
		KillsPlanned: planned,
		Sent:         t.sent, Acked: t.acked, Unacked: t.sent - t.acked - t.refused, Refused: t.refused,
		Received: t.received, AckedReceived: t.ackedReceived, Lost: t.lost, LostExamples: t.lostExamples,
		Redelivered: t.redelivered, Reordered: t.reordered, ReorderedResent: t.reorderedResent, Unexpected: t.unexpected,
		Resent: r.resent.Load(), DuplicateAcks: r.dupAcks.Load(), Reconnects: r.reconnects.Load(), OnLastServer: r.onLastServer(),
		Errors: r.errors.Load(),
		Ack:    r.ack.Summary(), Deliver: r.deliver.Summary(),
		Kills: []KillReport{},
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errKinds) > 0 {
		rep.ErrorKinds = maps.Clone(r.errKinds)
	}
	rep.KillsDone = len(r.kills)
	for _, k := range r.kills {
		kr := KillReport{AtS: k.at.Sub(r.begin).Seconds(), UnackedAtKill: k.unacked, RecoveryS: -1}
		if !k.restarted.IsZero() {
			kr.DownS = k.restarted.Sub(k.at).Seconds()
		}
		if !k.recovered.IsZero() {
			kr.RecoveryS = k.recovered.Sub(k.at).Seconds()
			rep.MaxRecoveryS = max(rep.MaxRecoveryS, kr.RecoveryS)
		}
		rep.Kills = append(rep.Kills, kr)
	}
	return rep
}

// supervise kills and restarts the server at times (offsets from r.begin),
// closes killsDone after the last restart, then watches the server until
// ctx ends and stops it gracefully. A server that exits by itself, or that
// cannot be restarted, is an error.
func (r *crashRun) supervise(ctx context.Context, srv *crashServer, times []time.Duration, killsDone chan<- struct{}) (err error) {
	defer func() { srv.stop(r.o.Logger) }()
	for j, at := range times {
		t := time.NewTimer(time.Until(r.begin.Add(at)))
		select {
		case <-t.C:
		case <-srv.done:
			t.Stop()
			return srv.unexpectedExit()
		case <-ctx.Done():
			t.Stop()
			return nil
		}
		rec := killRecord{at: time.Now(), unacked: r.sent.Load() - r.acked.Load()}
		if err := srv.kill(); err != nil {
			return fmt.Errorf("kill %d: %w", j+1, err)
		}
		r.mu.Lock()
		r.kills = append(r.kills, rec)
		r.mu.Unlock()
		// Connections made from here on reach the restarted server.
		r.gen.Store(int32(j + 1))
		r.o.Logger.Debug("bench crash: server killed", "kill", j+1, "unacked", rec.unacked)
		next, line, err := r.startServer(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("restarting the server after kill %d: %w", j+1, err)
		}
		srv = next
		restarted := time.Now()
		r.mu.Lock()
		r.kills[j].restarted = restarted
		r.mu.Unlock()
		if inv, err := invite.Parse(line); err != nil || inv.ServerKey != r.inv.ServerKey || !slices.Equal(inv.Addrs, r.inv.Addrs) {
			return fmt.Errorf("the server restarted after kill %d with another key or address (%q): give it the same data directory and a fixed listen address", j+1, line)
		}
		r.progressf("kill %d of %d at %.1fs: SIGKILL with %d messages unacknowledged; restarted in %s\n",
			j+1, len(times), rec.at.Sub(r.begin).Seconds(), rec.unacked, fmtDur(restarted.Sub(rec.at)))
	}
	close(killsDone)
	select {
	case <-srv.done:
		return srv.unexpectedExit()
	case <-ctx.Done():
		return nil
	}
}

// crashClient is one user of the crash scenario. It keeps its device key so
// that it can come back as the same device after a restart.
type crashClient struct {
	r    *crashRun
	i    int
	key  link.KeyPair
	opts clientconn.DialOptions
	sem  chan struct{} // its messages awaiting acknowledgement
	// first is the registration's connection, the one maintain starts with.
	first *clientconn.Conn

	mu      sync.Mutex
	conn    *clientconn.Conn // nil while disconnected
	gen     int32            // conn's generation
	changed chan struct{}    // closed and replaced whenever conn changes
}

// current waits for a connection other than not and returns it with its
// generation.
func (cl *crashClient) current(ctx context.Context, not *clientconn.Conn) (*clientconn.Conn, int32, error) {
	for {
		cl.mu.Lock()
		c, gen, ch := cl.conn, cl.gen, cl.changed
		cl.mu.Unlock()
		if c != nil && c != not {
			return c, gen, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}

func (cl *crashClient) set(c *clientconn.Conn, gen int32) {
	cl.mu.Lock()
	cl.conn, cl.gen = c, gen
	close(cl.changed)
	cl.changed = make(chan struct{})
	cl.mu.Unlock()
}

// Reconnection backoff: doubling from the first to the last, with jitter
// so that the clients do not storm the restarted server in lockstep.
const (
	crashMinBackoff = 25 * time.Millisecond
	crashMaxBackoff = time.Second
)

// maintain keeps a connection up until ctx ends, receiving on it; after
// each loss it redials with backoff, with the same key.
func (cl *crashClient) maintain(ctx context.Context) {
	c, gen := cl.first, int32(0)
	backoff := crashMinBackoff
	for {
		if c != nil {
			cur := c
			cl.set(cur, gen)
			stop := context.AfterFunc(ctx, func() { cur.Close() })
			cl.receive(cur) // until the connection ends
			stop()
			cur.Close()
			cl.set(nil, 0)
			if ctx.Err() != nil {
				return
			}
			if err := cur.Err(); err != nil {
				cl.r.fail("connection", err)
			}
			c, backoff = nil, crashMinBackoff
		}
		if sleep(ctx, backoff/2+mrand.N(backoff/2+1)) != nil {
			return
		}
		// Read before dialing: a connection that started before a restart
		// is not credited to the restarted server.
		gen = cl.r.gen.Load()
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		nc, err := clientconn.Dial(dctx, cl.r.inv, cl.key, cl.opts)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			cl.r.fail("reconnect", err)
			backoff = min(2*backoff, crashMaxBackoff)
			continue
		}
		if _, ok := nc.Device(); !ok {
			// The key authenticates no device: the restarted server lost
			// the registration. Sends would fail; keep trying, and let
			// the report show it.
			nc.Close()
			cl.r.fail("reconnect", errors.New("the server no longer knows this device (its registration was lost)"))
			backoff = crashMaxBackoff
			continue
		}
		cl.r.reconnects.Add(1)
		cl.r.lastGen[cl.i].Store(gen)
		c = nc
	}
}

// receive records what c pushes and acknowledges it in batches, as chat
// does (ackInBatches), until c ends.
func (cl *crashClient) receive(c *clientconn.Conn) {
	ackInBatches(c, func(p clientconn.Push) {
		if p.Envelope != nil {
			cl.r.onDelivery(cl.i, p.Envelope)
		}
	})
}

// sendAll starts client cl's messages at their intended times, at most
// o.Inflight unacknowledged at once.
func (cl *crashClient) sendAll(ctx context.Context, sched []time.Duration) {
	r := cl.r
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for k, off := range sched {
		intended := r.begin.Add(off)
		if !sleepUntil(ctx, timer, intended) {
			return
		}
		select {
		case cl.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		p := make([]byte, r.o.Size)
		copy(p, payloadMagic[:])
		binary.BigEndian.PutUint64(p[4:12], uint64(intended.UnixNano()))
		r.led.sent(cl.i, k)
		r.sent.Add(1)
		r.msgWG.Add(1)
		go func() {
			defer r.msgWG.Done()
			defer func() { <-cl.sem }()
			cl.send(ctx, k, intended, p)
		}()
	}
}

// crashSendTimeout bounds one attempt; a kill ends an attempt at once (the
// connection breaks), so this only catches a server that hangs.
const crashSendTimeout = 20 * time.Second

// send sends message k until the server acknowledges it, refuses it for
// good, or ctx ends; every attempt carries the same message id.
func (cl *crashClient) send(ctx context.Context, k int, intended time.Time, p []byte) {
	r := cl.r
	id := r.msgID(cl.i, k)
	to := r.names[r.peer[cl.i]]
	var not *clientconn.Conn // a connection known to be broken
	for attempt := 0; ; attempt++ {
		c, gen, err := cl.current(ctx, not)
		if err != nil {
			return // given up: reported as unacknowledged
		}
		if attempt > 0 {
			r.resent.Add(1)
			r.led.resent(cl.i, k)
		}
		sctx, cancel := context.WithTimeout(ctx, crashSendTimeout)
		res, err := c.Send(sctx, to, id, p)
		cancel()
		if err == nil {
			now := time.Now()
			if res.Duplicate {
				r.dupAcks.Add(1)
			}
			r.ack.Record(now.Sub(intended))
			r.acked.Add(1)
			r.led.acked(cl.i, k)
			r.recovered(gen, now)
			return
		}
		if ctx.Err() != nil {
			return
		}
		r.fail("send", err)
		var se *clientconn.ServerError
		switch {
		case errors.As(err, &se) && !se.Temporary():
			r.led.refused(cl.i, k)
			return
		case errors.As(err, &se):
			not = nil
			if sleep(ctx, max(se.RetryAfter, 50*time.Millisecond)) != nil {
				return
			}
		case c.Err() != nil:
			not = c // wait for the reconnection
		default:
			// A timeout on a live connection: try again on it.
			not = nil
		}
	}
}

// registerCrashClients registers n users with conc dials at a time and returns
// them as crash clients, each with its device key and its first
// connection; on failure it closes every connection.
func registerCrashClients(ctx context.Context, r *crashRun, run string, n, conc int) ([]*crashClient, error) {
	conns, keys, err := registerUsers(ctx, r.inv, "", run, 0, n, conc)
	if err != nil {
		return nil, err
	}
	clients := make([]*crashClient, n)
	for i, c := range conns {
		// Reconnections log in, which the sign-up limit does not cover:
		// the default source address will do.
		clients[i] = &crashClient{r: r, i: i, key: keys[i], opts: dialOptions(sourcePlan{}, 0), first: c,
			sem: make(chan struct{}, r.o.Inflight), changed: make(chan struct{})}
	}
	return clients, nil
}

// The server process.

// crashServer is one start of the server.
type crashServer struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once Wait has returned
	tail *serverTail
}

var errServerAddrInUse = errors.New("the listen address is still in use")

// startServer starts o.Server and waits for its invite line, retrying
// while its listen address is still taken (by the killed process's sockets
// on their way out).
func (r *crashRun) startServer(ctx context.Context) (*crashServer, string, error) {
	deadline := time.Now().Add(r.o.StartTimeout)
	for {
		p, line, err := startServerOnce(ctx, r.o.Server, r.tail, time.Until(deadline))
		if err == nil {
			r.o.Logger.Debug("bench crash: server started", "pid", p.cmd.Process.Pid)
			return p, line, nil
		}
		if !errors.Is(err, errServerAddrInUse) || time.Now().After(deadline) {
			return nil, "", err
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return nil, "", err
		}
	}
}

func startServerOnce(ctx context.Context, argv []string, tail *serverTail, timeout time.Duration) (*crashServer, string, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	out := &serverStdout{found: make(chan string, 1)}
	cmd.Stdout, cmd.Stderr = out, tail
	// A child the server leaves behind holding its pipes must not hang Wait.
	cmd.WaitDelay = 2 * time.Second
	tail.startSection()
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("%s: %w", argv[0], err)
	}
	p := &crashServer{cmd: cmd, done: make(chan struct{}), tail: tail}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line := <-out.found:
		return p, line, nil
	case <-p.done:
		if strings.Contains(tail.section(), "address already in use") {
			return nil, "", errServerAddrInUse
		}
		return nil, "", fmt.Errorf("the server exited (%v) without printing its invite; its last output:\n%s", cmd.ProcessState, tail.section())
	case <-t.C:
		p.kill()
		return nil, "", fmt.Errorf("the server printed no invite within %s; its last output:\n%s", timeout, tail.section())
	case <-ctx.Done():
		p.kill()
		return nil, "", ctx.Err()
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *crashServer) kill() error {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGKILL: %w", err)
	}
	<-p.done
	return nil
}

// stop asks the server to stop gracefully (SIGTERM), and kills it if it
// has not within 10 s.
func (p *crashServer) stop(log *slog.Logger) {
	select {
	case <-p.done:
		return
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.kill() // no SIGTERM here (Windows): nothing graceful to wait for
		return
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
		if !p.cmd.ProcessState.Success() {
			log.Warn("bench crash: the server did not exit cleanly after SIGTERM", "state", p.cmd.ProcessState.String())
		}
	case <-t.C:
		log.Warn("bench crash: the server did not stop within 10s of SIGTERM; killing it")
		p.kill()
	}
}

func (p *crashServer) unexpectedExit() error {
	return fmt.Errorf("the server exited by itself (%v); its last output:\n%s", p.cmd.ProcessState, p.tail.section())
}

// serverStdout is the server's stdout: it reports the first line that is an
// invite and discards the rest.
type serverStdout struct {
	mu    sync.Mutex
	line  []byte
	done  bool
	found chan string
}

func (w *serverStdout) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(b), nil
	}
	w.line = append(w.line, b...)
	for {
		i := slices.Index(w.line, '\n')
		if i < 0 {
			break
		}
		l := strings.TrimSpace(string(w.line[:i]))
		w.line = w.line[i+1:]
		if strings.HasPrefix(l, invite.Scheme) {
			w.done, w.line = true, nil
			w.found <- l
			break
		}
	}
	if len(w.line) > 64<<10 {
		w.line = nil // not a line we are waiting for
	}
	return len(b), nil
}

// serverTail keeps the end of the server's stderr since its latest start,
// for error messages, and copies everything to w if set.
type serverTail struct {
	max int
	w   io.Writer

	mu  sync.Mutex
	buf []byte
}

func (t *serverTail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.w != nil {
		t.w.Write(b) // a failing log must not stop the server
	}
	t.buf = append(t.buf, b...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(b), nil
}

func (t *serverTail) startSection() {
	t.mu.Lock()
	t.buf = t.buf[:0]
	t.mu.Unlock()
}

func (t *serverTail) section() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// The bookkeeping.

// crashLedger records, for every message of the run, whether it was sent,
// acknowledged, refused and how often it was delivered, and from that
// what was lost, redelivered and reordered.
type crashLedger struct {
	mu   sync.Mutex
	peer []int        // sender → recipient
	msgs [][]crashMsg // [sender][k]
	// maxSeen is, per sender, the highest k delivered so far (-1: none).
	maxSeen []int

	received, redelivered, reordered, unexpected int64
	waiting                                      int // acknowledged, not yet delivered

	signal chan struct{} // capacity 1: waiting went down
}

type crashMsg struct {
	sent, acked, refused, resent bool
	reordered                    bool // first delivered after a later message
	deliveries                   int32
}

func newCrashLedger(peer []int, counts []int) *crashLedger {
	l := &crashLedger{peer: peer, msgs: make([][]crashMsg, len(counts)), maxSeen: make([]int, len(counts)), signal: make(chan struct{}, 1)}
	for i, n := range counts {
		l.msgs[i] = make([]crashMsg, n)
		l.maxSeen[i] = -1
	}
	return l
}

func (l *crashLedger) sent(i, k int) {
	l.mu.Lock()
	l.msgs[i][k].sent = true
	l.mu.Unlock()
}

func (l *crashLedger) resent(i, k int) {
	l.mu.Lock()
	l.msgs[i][k].resent = true
	l.mu.Unlock()
}

func (l *crashLedger) refused(i, k int) {
	l.mu.Lock()
	l.msgs[i][k].refused = true
	l.mu.Unlock()
}

// acked records the server's acknowledgement of sender i's message k.
func (l *crashLedger) acked(i, k int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := &l.msgs[i][k]
	if m.acked {
		return
	}
	m.acked = true
	if m.deliveries == 0 {
		l.waiting++
	}
}

// delivered records sender i's message k reaching client to, and reports
// whether this was its first delivery.
func (l *crashLedger) delivered(to, i, k int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i < 0 || i >= len(l.msgs) || k < 0 || k >= len(l.msgs[i]) || l.peer[i] != to {
		l.unexpected++
		return false
	}
	m := &l.msgs[i][k]
	m.deliveries++
	if m.deliveries > 1 {
		l.redelivered++
		return false
	}
	l.received++
	if k < l.maxSeen[i] {
		l.reordered++
		m.reordered = true
	} else {
		l.maxSeen[i] = k
	}
	if m.acked {
		l.waiting--
		select {
		case l.signal <- struct{}{}:
		default:
		}
	}
	return true
}

func (l *crashLedger) unexpectedDelivery() {
	l.mu.Lock()
	l.unexpected++
	l.mu.Unlock()
}

// pending is how many acknowledged messages have not been delivered yet.
func (l *crashLedger) pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waiting
}

func (l *crashLedger) receivedCount() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.received
}

type crashTally struct {
	sent, acked, refused, received, ackedReceived, lost int64
	redelivered, reordered, reorderedResent, unexpected int64
	lostExamples                                        []string
}

// maxLostExamples bounds the lost messages named in the report.
const maxLostExamples = 10

// tally counts the outcome; name describes a lost message.
func (l *crashLedger) tally(name func(i, k int) string) crashTally {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := crashTally{received: l.received, redelivered: l.redelivered, reordered: l.reordered, unexpected: l.unexpected}
	for i, msgs := range l.msgs {
		for k, m := range msgs {
			if m.sent {
				t.sent++
			}
			if m.refused {
				t.refused++
			}
			if m.reordered && m.resent {
				t.reorderedResent++
			}
			if !m.acked {
				continue
			}
			t.acked++
			if m.deliveries > 0 {
				t.ackedReceived++
				continue
			}
			t.lost++
			if len(t.lostExamples) < maxLostExamples {
				t.lostExamples = append(t.lostExamples, name(i, k))
			}
		}
	}
	return t
}

// Text renders the report as a table.
func (r *CrashReport) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "crash: %d clients, target %.0f msg/s for %.0fs, %d-byte payloads (setup %.1fs); server killed with SIGKILL %d of %d times\n",
		r.Clients, r.Rate, r.DurationS, r.Size, r.SetupS, r.KillsDone, r.KillsPlanned)
	fmt.Fprintf(&b, "sent %d  acked %d  unacked %d  refused %d  received %d (acked and received %d)\n",
		r.Sent, r.Acked, r.Unacked, r.Refused, r.Received, r.AckedReceived)
	fmt.Fprintf(&b, "acked-and-lost %d  redelivered %d  reordered %d (%d of them resent)  unexpected %d\n",
		r.Lost, r.Redelivered, r.Reordered, r.ReorderedResent, r.Unexpected)
	fmt.Fprintf(&b, "resent %d (already stored: %d)  reconnects %d (%d of %d clients on the last server)  errors %d\n", r.Resent, r.DuplicateAcks, r.Reconnects, r.OnLastServer, r.Clients, r.Errors)
	if len(r.Kills) > 0 {
		b.WriteString("kill        at   unacked at kill   restarted after   first ack after\n")
		for j, k := range r.Kills {
			rec := "none"
			if k.RecoveryS >= 0 {
				rec = fmtDur(time.Duration(k.RecoveryS * float64(time.Second)))
			}
			fmt.Fprintf(&b, "%4d  %7.1fs   %15d   %15s   %15s\n", j+1, k.AtS, k.UnackedAtKill,
				fmtDur(time.Duration(k.DownS*float64(time.Second))), rec)
		}
	}
	b.WriteString(SummaryHeader + "\n")
	b.WriteString(r.Ack.Row("send → ack") + "\n")
	b.WriteString(r.Deliver.Row("send → deliver") + "\n")
	writeKinds(&b, r.ErrorKinds)
	for _, e := range r.LostExamples {
		fmt.Fprintf(&b, "LOST: %s\n", e)
	}
	switch {
	case r.Aborted != "":
		fmt.Fprintf(&b, "ABORTED, so nothing was waited for and the counts are not final: %s\n", firstLine(r.Aborted))
	case r.Lost == 0:
		fmt.Fprintf(&b, "PASS: every acknowledged message was delivered (%d of %d)\n", r.AckedReceived, r.Acked)
	default:
		fmt.Fprintf(&b, "FAIL: %d acknowledged messages were never delivered\n", r.Lost)
	}
	b.WriteString("latency is measured from each message's intended send time, across kills and resends\n")
	return b.String()
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
