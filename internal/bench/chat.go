package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/invite"
)

// ChatOptions configure the chat scenario.
type ChatOptions struct {
	Clients  int           // users, paired at random (an odd one out writes to a random user)
	Rate     float64       // messages per second, all clients together
	Duration time.Duration // how long to send
	Size     int           // payload bytes (at least MinSize)
	// Uniform spaces each client's sends evenly; the default draws the
	// gaps from an exponential distribution (Poisson arrivals).
	Uniform bool
	// Inflight bounds each client's unacknowledged sends (default 64). A
	// send that has to wait for a slot still counts its latency from its
	// intended time.
	Inflight int
	// Drain is how long to wait, after the last send, for the remaining
	// deliveries (default 10 s).
	Drain time.Duration
	// SetupConcurrency is how many clients connect at once (default 32).
	SetupConcurrency int
	// Transport, if set, is the only transport the clients use (tcp, obfs
	// or tls); the default dials the invite's endpoints in order.
	Transport string
	// E2E makes every client a real end-to-end device (magpie target
	// only): keys uploaded, a session with its peer set up before the
	// timed part, every message encrypted and decrypted (e2e.go).
	E2E bool
	// Admin, if set, is the server's admin listener (several,
	// comma-separated, for a cluster's nodes: their CPU is summed): the report then
	// carries the server's CPU time per message.
	Admin string
	// Progress, if set, gets one line a second while sending.
	Progress io.Writer
}

// MinSize is the smallest payload: a magic number, the intended send
// time and the sender's index.
const MinSize = 16

var payloadMagic = [4]byte{'m', 'p', 'b', 'n'}

func (o *ChatOptions) setDefaults() error {
	if err := (openLoop{o.Clients, o.Rate, o.Duration, &o.Size, &o.Inflight, &o.SetupConcurrency}).check("chat"); err != nil {
		return err
	}
	if o.Drain == 0 {
		o.Drain = 10 * time.Second
	}
	return nil
}

// ChatReport is the outcome of a chat run.
type ChatReport struct {
	Target    string  `json:"target"` // "magpie" or "raw"
	Clients   int     `json:"clients"`
	Rate      float64 `json:"target_rate"`
	Size      int     `json:"size"`
	DurationS float64 `json:"duration_s"`
	SetupS    float64 `json:"setup_s"`
	// E2E: end-to-end encrypted; E2ESetupS is the part of SetupS spent
	// uploading keys and starting sessions.
	E2E       bool    `json:"e2e,omitempty"`
	E2ESetupS float64 `json:"e2e_setup_s,omitempty"`

	Sent     int64 `json:"sent"`     // sends attempted
	Acked    int64 `json:"acked"`    // sends the server acknowledged
	Received int64 `json:"received"` // deliveries seen by recipients
	Receipts int64 `json:"receipts"` // delivery receipts seen by senders (magpie only)
	Errors   int64 `json:"errors"`
	// ErrorKinds counts errors by message (at most 20 kinds).
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`

	// AckedPerS is acknowledged sends per second of the send window;
	// ReceivedPerS is deliveries per second until the last delivery.
	AckedPerS    float64 `json:"acked_per_s"`
	ReceivedPerS float64 `json:"received_per_s"`

	Ack     Summary `json:"ack_latency"`     // intended send time → server ack
	Deliver Summary `json:"deliver_latency"` // intended send time → recipient has it
	// Against several nodes (clients connected to more than one endpoint),
	// Deliver split by whether sender and recipient were connected to the
	// same node or to different ones: the cross-node messages are the ones
	// that needed a NATS hop.
	DeliverSameNode  *Summary `json:"deliver_latency_same_node,omitempty"`
	DeliverCrossNode *Summary `json:"deliver_latency_cross_node,omitempty"`

	// ServerCPUS is the server's CPU time from the first send to the end
	// of the drain wait (with --admin), and ServerCPUPerMsgUs the same per
	// acknowledged message: storing, pushing, receipts and acks included.
	ServerCPUS        float64 `json:"server_cpu_s,omitempty"`
	ServerCPUPerMsgUs float64 `json:"server_cpu_per_message_us,omitempty"`

	// Timeline has one sample a second, from the first send until the
	// last delivery was in (or the drain wait ended).
	Timeline []Sample `json:"timeline,omitempty"`
}

// Plot draws the run's throughput and latency over time (SVG).
func (r *ChatReport) Plot(w io.Writer) error {
	title := fmt.Sprintf("bench chat (%s): %d clients, %.0f msg/s, %d B", r.Target, r.Clients, r.Rate, r.Size)
	if r.E2E {
		title += ", e2e"
	}
	sub := fmt.Sprintf("%d sent, %d acknowledged, %d delivered; send → ack p99 %s, send → deliver p99 %s",
		r.Sent, r.Acked, r.Received, fmtDur(r.Ack.P99), fmtDur(r.Deliver.P99))
	return PlotTimeline(w, title, sub, r.Timeline)
}

// chatConn is one client of the chat scenario, for either target.
type chatConn interface {
	// send hands payload to peer to and returns once the server has
	// acknowledged it.
	send(ctx context.Context, to int, id uint64, payload []byte) error
	// receive calls onMsg for each delivery and onReceipt for each
	// receipt, acknowledging them as the target requires, until the
	// connection closes.
	receive(onMsg func(payload []byte), onReceipt func())
	close()
}

// RunChat runs the chat scenario against the server of inv.
func RunChat(ctx context.Context, inv invite.Invite, o ChatOptions) (*ChatReport, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	start := time.Now()
	run := runID()
	conns, err := registerAll(ctx, inv, o.Transport, run, o.Clients, o.SetupConcurrency)
	if err != nil {
		return nil, fmt.Errorf("bench chat: setting up clients: %w", err)
	}
	names := make([]string, o.Clients)
	for i := range names {
		names[i] = userName(run, i)
	}
	peer := pairs(o.Clients, newRand())
	var cc []chatConn
	var e2eSetup time.Duration
	if o.E2E {
		t := time.Now()
		if cc, err = e2eConns(ctx, conns, names, peer, o.SetupConcurrency); err != nil {
			return nil, fmt.Errorf("bench chat: setting up end-to-end sessions: %w", err)
		}
		e2eSetup = time.Since(t)
	} else {
		cc = make([]chatConn, len(conns))
		for i, c := range conns {
			cc[i] = &magpieConn{c: c, names: names}
		}
	}
	var cpu0 float64
	if o.Admin != "" {
		if cpu0, err = serverCPU(ctx, o.Admin); err != nil {
			return nil, fmt.Errorf("bench chat: %w", err)
		}
	}
	nodes := make([]string, len(conns))
	for i, c := range conns {
		nodes[i] = c.Endpoint().Address
	}
	r, err := runChat(ctx, cc, peer, nodes, o, time.Since(start))
	if r != nil && o.Admin != "" {
		if cpu, serr := serverCPU(ctx, o.Admin); serr == nil && r.Acked > 0 {
			r.ServerCPUS = cpu - cpu0
			r.ServerCPUPerMsgUs = 1e6 * r.ServerCPUS / float64(r.Acked)
		}
	}
	if r != nil {
		r.Target = "magpie"
		r.E2E, r.E2ESetupS = o.E2E, e2eSetup.Seconds()
	}
	return r, err
}

func newRand() *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	return rand.New(rand.NewPCG(seed, seed>>1|1))
}

// pairs returns each client's peer: a random perfect matching, with an odd
// one out writing to a random other client.
func pairs(n int, rng *rand.Rand) []int {
	p := rng.Perm(n)
	peer := make([]int, n)
	for i := 0; i+1 < n; i += 2 {
		peer[p[i]], peer[p[i+1]] = p[i+1], p[i]
	}
	if n%2 == 1 {
		last := p[n-1]
		peer[last] = p[rng.IntN(n-1)]
	}
	return peer
}

// schedule returns the intended send times, as offsets from the start, of
// one client sending at rate per second for d.
func schedule(rate float64, d time.Duration, uniform bool, rng *rand.Rand) []time.Duration {
	var out []time.Duration
	mean := float64(time.Second) / rate
	// Clients do not start in lockstep. The first arrival is drawn like
	// the gaps: with a uniform phase instead, Poisson clients that send
	// only a few messages a run would offer more than the target rate
	// (22% more at 10,000 clients sending 2.25 each).
	t := rng.ExpFloat64() * mean
	if uniform {
		t = rng.Float64() * mean // a random phase: exactly d/mean on average
	}
	for time.Duration(t) < d {
		out = append(out, time.Duration(t))
		if uniform {
			t += mean
		} else {
			t += rng.ExpFloat64() * mean
		}
	}
	return out
}

type chatState struct {
	sent, acked, received, receipts, errors atomic.Int64
	ack, deliver                            *Histogram
	// deliverSame and deliverCross split deliver by the nodes of sender
	// and recipient; nil against one node.
	deliverSame, deliverCross *Histogram

	mu         sync.Mutex
	errKinds   map[string]int64
	lastRecv   time.Time
	lastAck    time.Time
	recvSignal chan struct{} // capacity 1
}

func (s *chatState) fail(err error) {
	s.errors.Add(1)
	msg := err.Error()
	s.mu.Lock()
	if _, ok := s.errKinds[msg]; ok || len(s.errKinds) < 20 {
		s.errKinds[msg]++
	}
	s.mu.Unlock()
}

// runChat drives conns (already connected), client i sending to peer[i],
// and closes them. nodes, if not nil, is the address each client is
// connected to, to tell cross-node deliveries apart.
func runChat(ctx context.Context, conns []chatConn, peer []int, nodes []string, o ChatOptions, setup time.Duration) (*ChatReport, error) {
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	n := len(conns)
	rng := newRand()
	perClient := o.Rate / float64(n)
	scheds := make([][]time.Duration, n)
	var total int
	for i := range scheds {
		scheds[i] = schedule(perClient, o.Duration, o.Uniform, rng)
		total += len(scheds[i])
	}

	st := &chatState{ack: NewHistogram(), deliver: NewHistogram(), errKinds: map[string]int64{}, recvSignal: make(chan struct{}, 1)}
	if distinct(nodes) > 1 {
		st.deliverSame, st.deliverCross = NewHistogram(), NewHistogram()
	}
	var recvWG sync.WaitGroup
	for j, c := range conns {
		// A conn that can tell a delivery it could not decrypt reports it
		// here, with its cause.
		if r, ok := c.(interface{ reportErrors(func(error)) }); ok {
			r.reportErrors(st.fail)
		}
		recvWG.Add(1)
		go func() {
			defer recvWG.Done()
			c.receive(func(p []byte) {
				now := time.Now()
				if len(p) < MinSize || [4]byte(p[:4]) != payloadMagic {
					st.fail(errors.New("a delivery that is not a bench message"))
					return
				}
				intended := time.Unix(0, int64(binary.BigEndian.Uint64(p[4:12])))
				st.deliver.Record(now.Sub(intended))
				if from := int(binary.BigEndian.Uint32(p[12:16])); st.deliverSame != nil && from < n {
					if nodes[from] == nodes[j] {
						st.deliverSame.Record(now.Sub(intended))
					} else {
						st.deliverCross.Record(now.Sub(intended))
					}
				}
				st.received.Add(1)
				st.mu.Lock()
				st.lastRecv = now
				st.mu.Unlock()
				select {
				case st.recvSignal <- struct{}{}:
				default:
				}
			}, func() { st.receipts.Add(1) })
		}()
	}

	sendCtx, cancelSends := context.WithCancel(ctx)
	defer cancelSends()
	begin := time.Now().Add(50 * time.Millisecond)
	var sendWG sync.WaitGroup
	for i, c := range conns {
		sendWG.Add(1)
		go func() {
			defer sendWG.Done()
			sendAll(sendCtx, c, i, peer[i], begin, scheds[i], o, st)
		}()
	}

	// A sample (and a progress line) a second, until the deliveries are in.
	smp := startSampler(counters{&st.sent, &st.acked, &st.received, &st.errors, st.ack, st.deliver}, begin, o.Progress)
	defer smp.stop()
	sendWG.Wait()
	sendEnd := time.Now()

	// Wait for the deliveries still on their way.
	drain := time.NewTimer(o.Drain)
	for st.received.Load() < st.acked.Load() {
		select {
		case <-st.recvSignal:
			continue
		case <-drain.C:
		case <-ctx.Done():
		}
		break
	}
	drain.Stop()
	samples := smp.stop()
	for _, c := range conns {
		c.close()
	}
	recvWG.Wait()

	r := &ChatReport{
		Clients: n, Rate: o.Rate, Size: o.Size, DurationS: o.Duration.Seconds(), SetupS: setup.Seconds(),
		Sent: st.sent.Load(), Acked: st.acked.Load(), Received: st.received.Load(),
		Receipts: st.receipts.Load(), Errors: st.errors.Load(),
		Ack: st.ack.Summary(), Deliver: st.deliver.Summary(),
		Timeline: sampleJSON(samples),
	}
	if st.deliverSame != nil {
		same, cross := st.deliverSame.Summary(), st.deliverCross.Summary()
		r.DeliverSameNode, r.DeliverCrossNode = &same, &cross
	}
	if len(st.errKinds) > 0 {
		r.ErrorKinds = st.errKinds
	}
	st.mu.Lock()
	lastRecv, lastAck := st.lastRecv, st.lastAck
	st.mu.Unlock()
	if !lastAck.IsZero() {
		r.AckedPerS = float64(r.Acked) / maxTime(lastAck, sendEnd).Sub(begin).Seconds()
	}
	if !lastRecv.IsZero() {
		r.ReceivedPerS = float64(r.Received) / lastRecv.Sub(begin).Seconds()
	}
	if err := ctx.Err(); err != nil {
		return r, err
	}
	return r, nil
}

// distinct counts the different strings in ss.
func distinct(ss []string) int {
	seen := map[string]bool{}
	for _, s := range ss {
		seen[s] = true
	}
	return len(seen)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// sendAll sends client i's messages at their intended times, at most
// o.Inflight at once.
func sendAll(ctx context.Context, c chatConn, i, to int, begin time.Time, sched []time.Duration, o ChatOptions, st *chatState) {
	sem := make(chan struct{}, o.Inflight)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for k, off := range sched {
		intended := begin.Add(off)
		if !sleepUntil(ctx, timer, intended) {
			return
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		p := make([]byte, o.Size)
		copy(p, payloadMagic[:])
		binary.BigEndian.PutUint64(p[4:12], uint64(intended.UnixNano()))
		binary.BigEndian.PutUint32(p[12:16], uint32(i))
		id := uint64(i)<<32 | uint64(k)
		st.sent.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := c.send(ctx, to, id, p); err != nil {
				st.fail(err)
				return
			}
			now := time.Now()
			st.ack.Record(now.Sub(intended))
			st.acked.Add(1)
			st.mu.Lock()
			st.lastAck = maxTime(st.lastAck, now)
			st.mu.Unlock()
		}()
	}
}

// magpieConn is a chat client of a Magpie server.
type magpieConn struct {
	c     *clientconn.Conn
	names []string
	once  sync.Once
}

func (m *magpieConn) send(ctx context.Context, to int, id uint64, payload []byte) error {
	var mid clientconn.MessageID
	binary.BigEndian.PutUint64(mid[8:], id)
	copy(mid[:8], payload[4:12]) // the intended time: unique across runs
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err := m.c.Send(ctx, m.names[to], mid, payload)
	return err
}

// receive acknowledges envelopes and receipts in batches (ackInBatches).
func (m *magpieConn) receive(onMsg func([]byte), onReceipt func()) {
	ackInBatches(m.c, func(p clientconn.Push) {
		switch {
		case p.Envelope != nil:
			onMsg(p.Envelope.Payload)
		case p.Receipt != nil:
			onReceipt()
		}
	})
}

// ackInBatches calls handle for each of c's pushes until c closes, and
// acknowledges envelopes and receipts in batches, as clients do: whatever
// has arrived when the push queue runs dry, at most 256 at a time.
func ackInBatches(c *clientconn.Conn, handle func(clientconn.Push)) {
	// an error ends the connection, and so this loop
	batchAcks(c.Pushes(), handle, func(seqs []uint64) { c.Ack(seqs...) })
}

// batchAcks calls handle for each push until pushes closes, and passes the
// seqs of envelopes and receipts to ack in batches: whatever has arrived
// when the channel runs dry, at most 256 at a time. ack must not keep the
// slice.
func batchAcks(pushes <-chan clientconn.Push, handle func(clientconn.Push), ack func([]uint64)) {
	var seqs []uint64
	take := func(p clientconn.Push) {
		handle(p)
		switch {
		case p.Envelope != nil && p.Envelope.Seq != 0:
			seqs = append(seqs, p.Envelope.Seq)
		case p.Receipt != nil:
			seqs = append(seqs, p.Receipt.Seq)
		}
	}
	for p := range pushes {
		take(p)
	more:
		for len(seqs) < 256 {
			select {
			case p, ok := <-pushes:
				if !ok {
					break more
				}
				take(p)
			default:
				break more
			}
		}
		if len(seqs) > 0 {
			ack(seqs)
			seqs = seqs[:0]
		}
	}
}

func (m *magpieConn) close() { m.once.Do(func() { m.c.Close() }) }

// Text renders the report as a table.
func (r *ChatReport) Text() string {
	var b strings.Builder
	target, setup := r.Target, fmt.Sprintf("setup %.1fs", r.SetupS)
	if r.E2E {
		target += ", end-to-end encrypted"
		setup += fmt.Sprintf(", of which keys and sessions %.1fs", r.E2ESetupS)
	}
	fmt.Fprintf(&b, "chat against %s: %d clients, target %.0f msg/s for %.0fs, %d-byte payloads (%s)\n",
		target, r.Clients, r.Rate, r.DurationS, r.Size, setup)
	fmt.Fprintf(&b, "sent %d  acked %d  received %d", r.Sent, r.Acked, r.Received)
	if r.Target == "magpie" {
		fmt.Fprintf(&b, "  receipts %d", r.Receipts)
	}
	fmt.Fprintf(&b, "  errors %d\n", r.Errors)
	fmt.Fprintf(&b, "throughput: %.0f acked/s, %.0f delivered/s\n", r.AckedPerS, r.ReceivedPerS)
	if r.ServerCPUS > 0 {
		fmt.Fprintf(&b, "server CPU: %.2f s, %.0f µs per message\n", r.ServerCPUS, r.ServerCPUPerMsgUs)
	}
	b.WriteString(SummaryHeader + "\n")
	b.WriteString(r.Ack.Row("send → ack") + "\n")
	b.WriteString(r.Deliver.Row("send → deliver") + "\n")
	if r.DeliverSameNode != nil {
		b.WriteString(r.DeliverSameNode.Row("  same node") + "\n")
		b.WriteString(r.DeliverCrossNode.Row("  across nodes") + "\n")
	}
	writeKinds(&b, r.ErrorKinds)
	b.WriteString("latency is measured from each message's intended send time (open loop, no coordinated omission)\n")
	return b.String()
}

func writeKinds(b *strings.Builder, m map[string]int64) {
	kinds := make([]string, 0, len(m))
	for k := range m {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(b, "error ×%d: %s\n", m[k], k)
	}
}

// sleepUntil waits on timer (stopped and drained) until t, the intended time
// of an open-loop send; it returns false if ctx ends first.
func sleepUntil(ctx context.Context, timer *time.Timer, t time.Time) bool {
	if d := time.Until(t); d > 0 {
		timer.Reset(d)
		select {
		case <-timer.C:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// serverCPU is the CPU time the servers at the admin listeners admins
// (comma-separated: a cluster's nodes) have used, summed.
func serverCPU(ctx context.Context, admins string) (float64, error) {
	var sum float64
	for _, a := range strings.Split(admins, ",") {
		m, err := Scrape(ctx, strings.TrimSpace(a))
		if err != nil {
			return 0, err
		}
		sum += m["process_cpu_seconds_total"]
	}
	return sum, nil
}
