package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/link"
)

// DrainOptions configure the drain scenario: a device with a large offline
// queue reconnects, and the server pushes the queue to it.
type DrainOptions struct {
	Messages int // queued for the offline device (default 100,000)
	Size     int // payload bytes (default 1024, at least MinSize)
	Senders  int // connections that fill the queue (default 32)
	// Inflight bounds each sender's unacknowledged sends (default 64; the
	// server allows 256 per connection).
	Inflight int
	// Admin, if set, is the server's admin listener (host:port): its
	// /metrics confirm the queue depth and give the server's CPU time
	// during the drain.
	Admin string
	// Stall ends a phase when nothing has arrived for this long
	// (default 30 s).
	Stall time.Duration
	// SetupConcurrency is how many clients register at once (default 32).
	SetupConcurrency int
	// Progress, if set, gets one line a second.
	Progress io.Writer
}

func (o *DrainOptions) setDefaults() error {
	if o.Messages == 0 {
		o.Messages = 100_000
	}
	if o.Messages < 0 {
		return errors.New("bench drain: --messages must be positive")
	}
	if err := checkSize("drain", &o.Size); err != nil {
		return err
	}
	if o.Senders == 0 {
		o.Senders = 32
	}
	if o.Senders < 0 {
		return errors.New("bench drain: --senders must be positive")
	}
	defaultInt(&o.Inflight, 64)
	if o.Stall <= 0 {
		o.Stall = 30 * time.Second
	}
	defaultInt(&o.SetupConcurrency, 32)
	return nil
}

// DrainReport is the outcome of a drain run.
type DrainReport struct {
	Messages int     `json:"messages"`
	Size     int     `json:"size"`
	Senders  int     `json:"senders"`
	SetupS   float64 `json:"setup_s"`

	// Enqueue: the senders fill the offline device's queue.
	Enqueued         int64            `json:"enqueued"` // sends the server acknowledged
	EnqueueErrors    int64            `json:"enqueue_errors"`
	RateLimitRetries int64            `json:"rate_limit_retries"`
	ErrorKinds       map[string]int64 `json:"error_kinds,omitempty"`
	EnqueueS         float64          `json:"enqueue_s"`
	EnqueuePerS      float64          `json:"enqueue_per_s"`

	// Drain: from the start of the reconnection (dial, handshake) to the
	// last message.
	Delivered      int64   `json:"delivered"`  // distinct bench messages received
	Missing        int64   `json:"missing"`    // acknowledged by the server, never delivered
	Duplicates     int64   `json:"duplicates"` // delivered more than once
	Unexpected     int64   `json:"unexpected"` // deliveries that are not this run's messages
	DrainedMarker  bool    `json:"drained_marker"`
	FirstMessageS  float64 `json:"time_to_first_message_s"`
	DrainS         float64 `json:"drain_s"`
	DrainPerS      float64 `json:"drain_per_s"`
	DrainBytesPerS float64 `json:"drain_bytes_per_s"`
	DrainError     string  `json:"drain_error,omitempty"`

	// Receipts is how many delivery receipts the senders collected after
	// the drain (one per acknowledged message: the proof that the
	// recipient's acks were committed). Not timed.
	Receipts int64 `json:"receipts"`

	Server *DrainServer `json:"server,omitempty"` // with --admin only
}

// DrainServer is what the admin listener's /metrics said.
type DrainServer struct {
	QueueDepthBefore   float64 `json:"queue_depth_before"`
	QueueDepthEnqueued float64 `json:"queue_depth_enqueued"` // after the enqueue phase
	QueueDepthAfter    float64 `json:"queue_depth_after"`    // after the drain and the receipts
	// CPUSeconds is the server's CPU time during the drain phase (0 if it
	// does not export process_cpu_seconds_total).
	CPUSeconds   float64 `json:"cpu_seconds_during_drain"`
	CPUPerMsgUS  float64 `json:"cpu_us_per_message"`
	QueueConfirm bool    `json:"queue_confirmed"` // depth grew by exactly the enqueued count
	// AcksCommittedS is the time from the start of the reconnection until
	// the server had committed every ack the device sent (its queue empty
	// in the store, not only pushed), read from magpie_store_commit_ops;
	// it assumes no other traffic on the server. 0 if unknown.
	AcksCommittedS float64 `json:"acks_committed_s"`
	CommittedPerS  float64 `json:"committed_per_s"`

	cpu1 float64 // process_cpu_seconds_total once the acks were committed
}

// Payloads carry drainMagic and the message's index, so that the recipient
// can tell missing and duplicate messages apart.
var drainMagic = [4]byte{'m', 'p', 'd', 'r'}

// drainUser is one registered user whose key is kept so that it can
// reconnect as the same device.
type drainUser struct {
	name string
	key  link.KeyPair
	opts clientconn.DialOptions
	c    *clientconn.Conn
}

func (u *drainUser) reconnect(ctx context.Context, inv invite.Invite) error {
	c, err := clientconn.Dial(ctx, inv, u.key, u.opts)
	if err != nil {
		return fmt.Errorf("reconnecting %s: %w", u.name, err)
	}
	u.c = c
	return nil
}

func (u *drainUser) close() {
	if u != nil && u.c != nil {
		u.c.Close()
		u.c = nil
	}
}

// RunDrain runs the drain scenario against the server of inv: register a
// recipient and o.Senders senders, disconnect the recipient, have the
// senders queue o.Messages messages for it (pipelined, each acknowledged by
// the server) and disconnect, then reconnect the recipient as the same
// device and receive and acknowledge, in batches, until its queue is empty.
// Afterwards the senders reconnect and acknowledge their delivery receipts,
// which leaves the server's queues as they were.
func RunDrain(ctx context.Context, inv invite.Invite, o DrainOptions) (*DrainReport, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	r := &DrainReport{Messages: o.Messages, Size: o.Size, Senders: o.Senders}
	start := time.Now()
	run := runID()
	users, err := registerDrainUsers(ctx, inv, run, o)
	if err != nil {
		return nil, fmt.Errorf("bench drain: setting up clients: %w", err)
	}
	recip, senders := users[0], users[1:]
	defer func() {
		for _, u := range users {
			u.close()
		}
	}()
	// Offline from here until the drain.
	recip.close()
	r.SetupS = time.Since(start).Seconds()

	var srv *DrainServer
	if o.Admin != "" {
		m, err := Scrape(ctx, o.Admin)
		if err != nil {
			return nil, fmt.Errorf("bench drain: %w", err)
		}
		depth, err := m.need("magpie_queue_depth")
		if err != nil {
			return nil, fmt.Errorf("bench drain: %w", err)
		}
		srv = &DrainServer{QueueDepthBefore: depth}
		r.Server = srv
	}

	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "queueing %d messages of %d bytes for %s from %d senders…\n", o.Messages, o.Size, recip.name, len(senders))
	}
	acked, err := enqueueAll(ctx, senders, recip.name, run, o, r)
	if err != nil {
		return r, fmt.Errorf("bench drain: %w", err)
	}
	// The senders are offline during the drain, so that it measures the
	// recipient's queue alone; their receipts wait for them.
	for _, u := range senders {
		u.close()
	}

	var cpu0, ops0 float64
	if srv != nil {
		m, err := Scrape(ctx, o.Admin)
		if err != nil {
			return r, fmt.Errorf("bench drain: %w", err)
		}
		if srv.QueueDepthEnqueued, err = m.need("magpie_queue_depth"); err != nil {
			return r, fmt.Errorf("bench drain: %w", err)
		}
		srv.QueueConfirm = srv.QueueDepthEnqueued-srv.QueueDepthBefore == float64(r.Enqueued)
		cpu0 = m["process_cpu_seconds_total"]
		ops0 = m["magpie_store_commit_ops_sum"]
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "server queue depth %.0f → %.0f (+%.0f; %d acknowledged)\n",
				srv.QueueDepthBefore, srv.QueueDepthEnqueued, srv.QueueDepthEnqueued-srv.QueueDepthBefore, r.Enqueued)
		}
	}

	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "reconnecting %s and draining…\n", recip.name)
	}
	begin, ackFrames, err := drainQueue(ctx, inv, recip, acked, o, r)
	if err != nil {
		return r, fmt.Errorf("bench drain: %w", err)
	}
	if srv != nil {
		if err := waitCommitted(ctx, o, srv, begin, ops0, ackFrames, r.Delivered); err != nil {
			return r, fmt.Errorf("bench drain: %w", err)
		}
		if cpu0 > 0 && srv.cpu1 > 0 {
			srv.CPUSeconds = srv.cpu1 - cpu0
			if r.Delivered > 0 {
				srv.CPUPerMsgUS = srv.CPUSeconds / float64(r.Delivered) * 1e6
			}
		}
	}

	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "collecting the senders' receipts…\n")
	}
	if err := collectReceipts(ctx, inv, senders, r.Delivered, o, r); err != nil {
		return r, fmt.Errorf("bench drain: %w", err)
	}
	if srv != nil {
		// Acks are committed after they are read: give the last ones a
		// moment to land before reading the depth.
		deadline := time.Now().Add(5 * time.Second)
		for {
			m, err := Scrape(ctx, o.Admin)
			if err != nil {
				return r, fmt.Errorf("bench drain: %w", err)
			}
			srv.QueueDepthAfter = m["magpie_queue_depth"]
			if srv.QueueDepthAfter <= srv.QueueDepthBefore || time.Now().After(deadline) {
				break
			}
			if err := sleep(ctx, 50*time.Millisecond); err != nil {
				return r, err
			}
		}
	}
	return r, ctx.Err()
}

// registerDrainUsers registers the recipient (user 0) and the senders,
// o.SetupConcurrency at a time, closing them all on failure.
func registerDrainUsers(ctx context.Context, inv invite.Invite, run string, o DrainOptions) ([]*drainUser, error) {
	conns, keys, err := registerUsers(ctx, inv, "", run, 0, 1+o.Senders, o.SetupConcurrency)
	if err != nil {
		return nil, err
	}
	users := make([]*drainUser, len(conns))
	for i, c := range conns {
		// Reconnections log in, which the sign-up limit does not cover:
		// the default source address will do.
		users[i] = &drainUser{name: userName(run, i), key: keys[i], opts: dialOptions(sourcePlan{}, 0), c: c}
	}
	return users, nil
}

// errQueueFull explains the most likely failure of a big drain run.
var errQueueFull = errors.New("the server refused a message: the recipient's queue is full; start the server with a --queue-limit above --messages")

// enqueueAll sends o.Messages messages to the recipient, o.Inflight at once
// per sender, and returns which of them the server acknowledged.
func enqueueAll(ctx context.Context, senders []*drainUser, to, run string, o DrainOptions, r *DrainReport) ([]bool, error) {
	var (
		acked   = make([]bool, o.Messages) // each index written by one worker only
		next    atomic.Int64
		nacked  atomic.Int64
		nerr    atomic.Int64
		limited atomic.Int64
		mu      sync.Mutex
		kinds   = map[string]int64{}
		fatal   error
	)
	var nonce [8]byte
	copy(nonce[:], run) // run is 8 hex digits: unique enough across runs
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fail := func(err error, stop bool) {
		nerr.Add(1)
		mu.Lock()
		defer mu.Unlock()
		if _, ok := kinds[err.Error()]; ok || len(kinds) < 20 {
			kinds[err.Error()]++
		}
		if stop && fatal == nil {
			fatal = err
			cancel()
		}
	}
	worker := func(c *clientconn.Conn) {
		p := make([]byte, o.Size)
		copy(p, drainMagic[:])
		for {
			k := next.Add(1) - 1
			if k >= int64(o.Messages) || ctx.Err() != nil {
				return
			}
			binary.BigEndian.PutUint64(p[4:12], uint64(k))
			var id clientconn.MessageID
			copy(id[:8], nonce[:])
			binary.BigEndian.PutUint64(id[8:], uint64(k))
			for attempt := 0; ; attempt++ {
				sctx, scancel := context.WithTimeout(ctx, time.Minute)
				_, err := c.Send(sctx, to, id, p)
				scancel()
				if err == nil {
					acked[k] = true
					nacked.Add(1)
					break
				}
				if ctx.Err() != nil {
					return
				}
				var se *clientconn.ServerError
				switch {
				case errors.Is(err, clientconn.ErrQueueFull):
					fail(errQueueFull, true)
					return
				case errors.As(err, &se) && se.Temporary() && attempt < 10:
					// Rate limited (a connection may make 1,000 requests
					// a second by default), or the server asked to retry:
					// the same id is stored once.
					if errors.Is(err, clientconn.ErrRateLimited) {
						limited.Add(1)
					}
					if sleep(ctx, max(se.RetryAfter, 10*time.Millisecond)) != nil {
						return
					}
					continue
				case errors.As(err, &se):
					fail(err, false)
				default:
					// The connection is gone: this sender can do no more.
					fail(err, true)
					return
				}
				break
			}
		}
	}
	begin := time.Now()
	var wg sync.WaitGroup
	for _, u := range senders {
		for range o.Inflight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				worker(u.c)
			}()
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	rateLines(o.Progress, done, begin, nacked.Load, func(el time.Duration, n int64, perS float64) string {
		return fmt.Sprintf("%5.0fs  queued %d/%d (%.0f/s)  rate-limit retries %d  errors %d",
			el.Seconds(), n, o.Messages, perS, limited.Load(), nerr.Load())
	})
	el := time.Since(begin)
	r.Enqueued, r.EnqueueErrors, r.RateLimitRetries = nacked.Load(), nerr.Load(), limited.Load()
	r.EnqueueS = el.Seconds()
	r.EnqueuePerS = float64(r.Enqueued) / el.Seconds()
	if len(kinds) > 0 {
		r.ErrorKinds = kinds
	}
	if fatal != nil {
		return acked, fatal
	}
	return acked, ctx.Err()
}

// ackBatch is the most seqs acknowledged in one frame: the server's push
// window (256 by default), so that one ack reopens the whole window.
const ackBatch = 256

// drainQueue reconnects the recipient and receives until the server says
// the queue has been pushed (QueueDrained), acknowledging in batches: what
// has arrived when the push queue runs dry, at most ackBatch at a time.
//
// It returns when the reconnection began and how many ack frames it sent.
func drainQueue(ctx context.Context, inv invite.Invite, u *drainUser, acked []bool, o DrainOptions, r *DrainReport) (begin time.Time, ackFrames int, err error) {
	seen := make([]bool, len(acked))
	var (
		delivered, dups, unexpected atomic.Int64
		first, last                 time.Time // written by the receiver only; read after it ends
		drained                     bool
	)
	begin = time.Now()
	if err := u.reconnect(ctx, inv); err != nil {
		return begin, 0, err
	}
	c := u.c
	// The watcher prints progress, and ends the connection on a stall or
	// on ctx; the receiver below then ends with it.
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	var stalled atomic.Bool
	go func() {
		defer close(watchDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		lastN, lastT, lastMove := int64(0), begin, begin
		for {
			select {
			case <-stopWatch:
				return
			case <-ctx.Done():
				c.Close()
				return
			case now := <-tick.C:
				n := delivered.Load() + dups.Load() + unexpected.Load()
				if o.Progress != nil {
					fmt.Fprintf(o.Progress, "%5.0fs  delivered %d/%d (%.0f/s)  duplicates %d\n",
						now.Sub(begin).Seconds(), delivered.Load(), len(acked), float64(n-lastN)/now.Sub(lastT).Seconds(), dups.Load())
				}
				if n != lastN {
					lastMove = now
				}
				if now.Sub(lastMove) >= o.Stall {
					stalled.Store(true)
					c.Close()
					return
				}
				lastN, lastT = n, now
			}
		}
	}()

	var (
		seqs  []uint64
		fresh int // new messages not yet dated
	)
	handle := func(p clientconn.Push) {
		switch {
		case p.Drained:
			drained = true
		case p.Receipt != nil:
			unexpected.Add(1)
			seqs = append(seqs, p.Receipt.Seq)
		case p.Envelope != nil:
			e := p.Envelope
			if e.Seq != 0 {
				seqs = append(seqs, e.Seq)
			}
			pl := e.Payload
			if len(pl) < MinSize || [4]byte(pl[:4]) != drainMagic {
				unexpected.Add(1)
				return
			}
			k := binary.BigEndian.Uint64(pl[4:12])
			if k >= uint64(len(seen)) {
				unexpected.Add(1)
				return
			}
			if seen[k] {
				dups.Add(1)
				return
			}
			seen[k] = true
			fresh++
			delivered.Add(1)
		}
	}
	// stamp dates what arrived since the last call: one clock read per
	// batch, not per message, since the tool shares the CPU with the
	// server it measures.
	stamp := func() {
		if fresh > 0 {
			last = time.Now()
			if first.IsZero() {
				first = last
			}
			fresh = 0
		}
	}
	var ackErr error
	flush := func() {
		if len(seqs) > 0 && ackErr == nil {
			ackErr = c.Ack(seqs...) // one frame: ackBatch is below wire.MaxAckSeqs
			ackFrames++
			seqs = seqs[:0]
		}
	}
recv:
	for p := range c.Pushes() {
		handle(p)
	more:
		for len(seqs) < ackBatch && !drained {
			select {
			case p, ok := <-c.Pushes():
				if !ok {
					break more
				}
				handle(p)
			default:
				break more
			}
		}
		stamp()
		flush()
		if drained || ackErr != nil {
			// Everything queued at connect time has been pushed (and
			// acknowledged): the server sends nothing more, so closing
			// now cannot cut off the acks still in flight.
			break recv
		}
	}
	close(stopWatch)
	<-watchDone
	connErr := c.Err()
	if drained && ackErr == nil {
		settle(ctx, c)
	}
	u.close()

	r.Delivered, r.Duplicates, r.Unexpected, r.DrainedMarker = delivered.Load(), dups.Load(), unexpected.Load(), drained
	for k, ok := range acked {
		if ok && !seen[k] {
			r.Missing++
		}
	}
	if !first.IsZero() {
		r.FirstMessageS = first.Sub(begin).Seconds()
	}
	if !last.IsZero() {
		d := last.Sub(begin)
		r.DrainS = d.Seconds()
		r.DrainPerS = float64(r.Delivered) / d.Seconds()
		r.DrainBytesPerS = float64(r.Delivered) * float64(o.Size) / d.Seconds()
	}
	switch {
	case ctx.Err() != nil:
		return begin, ackFrames, ctx.Err()
	case stalled.Load():
		r.DrainError = fmt.Sprintf("nothing arrived for %s; gave up", o.Stall)
	case ackErr != nil:
		r.DrainError = fmt.Sprintf("acknowledging: %v", ackErr)
	case !drained:
		r.DrainError = fmt.Sprintf("the connection ended before the queue was drained: %v", connErr)
	}
	return begin, ackFrames, nil
}

// waitCommitted polls the server's metrics until its batched commits have
// taken in ackFrames more operations than ops0 (each ack frame is one), and
// records when: the acks of a drain are committed after the messages have
// been pushed, and the single writer can lag behind the pushes. It gives
// up quietly after o.Stall, or at once if the server does not export
// magpie_store_commit_ops.
func waitCommitted(ctx context.Context, o DrainOptions, srv *DrainServer, begin time.Time, ops0 float64, ackFrames int, delivered int64) error {
	deadline := time.Now().Add(o.Stall)
	for {
		m, err := Scrape(ctx, o.Admin)
		if err != nil {
			return err
		}
		now := time.Now()
		srv.cpu1 = m["process_cpu_seconds_total"]
		ops, ok := m["magpie_store_commit_ops_sum"]
		if !ok {
			return nil
		}
		if ops-ops0 >= float64(ackFrames) {
			srv.AcksCommittedS = now.Sub(begin).Seconds()
			srv.CommittedPerS = float64(delivered) / srv.AcksCommittedS
			return nil
		}
		if now.After(deadline) {
			return nil
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
}

// collectReceipts reconnects the senders and acknowledges their delivery
// receipts until want have arrived (or nothing arrives for o.Stall), so
// that the run leaves the server's queues as it found them.
func collectReceipts(ctx context.Context, inv invite.Invite, senders []*drainUser, want int64, o DrainOptions, r *DrainReport) error {
	var got atomic.Int64
	var wg sync.WaitGroup
	defer func() {
		for _, u := range senders {
			if u.c != nil {
				settle(ctx, u.c)
			}
			u.close()
		}
		wg.Wait()
		r.Receipts = got.Load()
	}()
	for _, u := range senders {
		if err := u.reconnect(ctx, inv); err != nil {
			return err
		}
		wg.Add(1)
		go func(c *clientconn.Conn) {
			defer wg.Done()
			var seqs []uint64
			for p := range c.Pushes() {
				if p.Receipt != nil {
					seqs = append(seqs, p.Receipt.Seq)
				}
			more:
				for len(seqs) < ackBatch {
					select {
					case p, ok := <-c.Pushes():
						if !ok {
							break more
						}
						if p.Receipt != nil {
							seqs = append(seqs, p.Receipt.Seq)
						}
					default:
						break more
					}
				}
				if len(seqs) > 0 {
					if c.Ack(seqs...) != nil {
						return
					}
					// Counted once acknowledged, so that the wait below
					// ends after the last ack has been written.
					got.Add(int64(len(seqs)))
					seqs = seqs[:0]
				}
			}
		}(u.c)
	}
	lastN, lastMove := int64(-1), time.Now()
	for {
		n := got.Load()
		if n >= want {
			break
		}
		if n != lastN {
			lastN, lastMove = n, time.Now()
		}
		if time.Since(lastMove) >= o.Stall {
			break
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			break
		}
	}
	return ctx.Err()
}

// settle makes sure the server has read every ack written on c before it
// is closed: it reads frames in order, so the answer to a ping proves it.
// Without this, closing with a push still unread (a late drained marker)
// makes the kernel reset the connection, and the last ack could be lost
// with it; the items it named would simply be delivered again next time.
func settle(ctx context.Context, c *clientconn.Conn) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c.Ping(ctx) // an error means the connection is gone anyway
}

// OK reports whether every message the server acknowledged was delivered
// exactly once and the drain completed.
func (r *DrainReport) OK() bool {
	return r.Enqueued == int64(r.Messages) && r.Delivered == r.Enqueued && r.Missing == 0 &&
		r.Duplicates == 0 && r.DrainedMarker && r.DrainError == ""
}

// Text renders the report as a table.
func (r *DrainReport) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "drain: %d messages of %d bytes queued by %d senders for one offline device (setup %.1fs)\n",
		r.Messages, r.Size, r.Senders, r.SetupS)
	fmt.Fprintf(&b, "%-10s %10s %10s %12s %14s\n", "phase", "messages", "seconds", "messages/s", "MB/s")
	fmt.Fprintf(&b, "%-10s %10d %10.2f %12.0f %14.1f\n", "enqueue", r.Enqueued, r.EnqueueS, r.EnqueuePerS,
		r.EnqueuePerS*float64(r.Size)/1e6)
	fmt.Fprintf(&b, "%-10s %10d %10.2f %12.0f %14.1f\n", "drain", r.Delivered, r.DrainS, r.DrainPerS, r.DrainBytesPerS/1e6)
	fmt.Fprintf(&b, "time to first message after reconnecting: %s\n", fmtDur(time.Duration(r.FirstMessageS*float64(time.Second))))
	fmt.Fprintf(&b, "missing %d  duplicates %d  unexpected %d  enqueue errors %d (rate-limit retries %d)  drained marker %v  receipts %d\n",
		r.Missing, r.Duplicates, r.Unexpected, r.EnqueueErrors, r.RateLimitRetries, r.DrainedMarker, r.Receipts)
	if s := r.Server; s != nil {
		confirm := "confirmed"
		if !s.QueueConfirm {
			confirm = fmt.Sprintf("NOT confirmed: expected +%d", r.Enqueued)
		}
		fmt.Fprintf(&b, "server queue depth: %.0f before, %.0f queued (%s), %.0f after\n",
			s.QueueDepthBefore, s.QueueDepthEnqueued, confirm, s.QueueDepthAfter)
		if s.AcksCommittedS > 0 {
			fmt.Fprintf(&b, "every ack committed (the queue empty in the store) after %.2f s: %.0f messages/s\n", s.AcksCommittedS, s.CommittedPerS)
		}
		if s.CPUSeconds > 0 {
			fmt.Fprintf(&b, "server CPU from the reconnection to the last commit: %.2f s (%.1f µs per message)\n", s.CPUSeconds, s.CPUPerMsgUS)
		}
	}
	if r.DrainError != "" {
		fmt.Fprintf(&b, "drain error: %s\n", r.DrainError)
	}
	writeKinds(&b, r.ErrorKinds)
	b.WriteString("drain time runs from the start of the reconnection (dial, handshake) to the last message\n")
	return b.String()
}
