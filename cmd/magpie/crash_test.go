package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/magpie-im/magpie/client"
)

// sendRecord is one send of the crash test: from Send until the message
// left the outbox (acknowledged by the server) or the engine said it was
// offline.
type sendRecord struct {
	text       string
	start, end time.Time
	err        error
}

// sender sends numbered texts to bob from its own home (one home is one
// device) through the Go SDK's engine until stopped.
type sender struct {
	name string
	home string

	mu      sync.Mutex
	records []sendRecord
	cl      *client.Client // while run runs
}

// endpoint is where the sender's engine is connected now ("" if not).
func (s *sender) endpoint() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl == nil {
		return ""
	}
	return s.cl.Status().Endpoint
}

func (s *sender) open(ctx context.Context) (*client.Client, func(), error) {
	cl, err := client.Open(ctx, client.Options{Home: s.home, Unlocker: testUnlocker})
	if err != nil {
		return nil, nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		cl.Run(rctx)
	}()
	return cl, func() { cancel(); <-done; cl.Close() }, nil
}

func (s *sender) run(ctx context.Context, stop <-chan struct{}, acks, fails *atomic.Int64) error {
	cl, closeClient, err := s.open(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cl = cl
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.cl = nil
		s.mu.Unlock()
		closeClient()
	}()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		rec := sendRecord{text: fmt.Sprintf("%s-%05d", s.name, i), start: time.Now()}
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		m, err := cl.Send(sctx, "bob", rec.text)
		if err == nil {
			m, err = cl.WaitSent(sctx, m.Seq)
		}
		if err == nil && (m.State == client.StateQueued || m.State == client.StateFailed) {
			err = errors.New(m.Err)
		}
		cancel()
		rec.end, rec.err = time.Now(), err
		s.mu.Lock()
		s.records = append(s.records, rec)
		s.mu.Unlock()
		if rec.err == nil {
			acks.Add(1)
			continue
		}
		fails.Add(1)
		// The server is down: don't spin (every failed call still queues
		// its message in the outbox).
		select {
		case <-stop:
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// flush sends what is left in the outbox, retrying while the server
// answers with temporary errors, and returns the messages it refused.
func (s *sender) flush(ctx context.Context) ([]client.Message, error) {
	cl, err := client.Open(ctx, client.Options{Home: s.home, Unlocker: testUnlocker})
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	for {
		err = cl.Sync(ctx)
		if err != nil && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil {
			return nil, err
		}
		out, err := cl.Outbox(ctx)
		if err != nil || len(out) == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	msgs, _, err := cl.History(ctx, "bob", client.HistoryQuery{Limit: 100000})
	var failed []client.Message
	for _, m := range msgs {
		if m.State == client.StateFailed {
			failed = append(failed, m)
		}
	}
	return failed, err
}

// sending is senders running until stopped.
type sending struct {
	senders     []*sender
	acks, fails atomic.Int64
	stop        chan struct{}
	wg          sync.WaitGroup
	errs        chan error
	stopped     bool
}

// startSending runs every sender until stopAndFlush, or the test's end.
func startSending(t *testing.T, senders []*sender) *sending {
	g := &sending{senders: senders, stop: make(chan struct{}), errs: make(chan error, len(senders))}
	for _, s := range senders {
		g.wg.Go(func() {
			if err := s.run(t.Context(), g.stop, &g.acks, &g.fails); err != nil {
				g.errs <- fmt.Errorf("%s: %w", s.name, err)
			}
		})
	}
	t.Cleanup(g.halt)
	return g
}

func (g *sending) halt() {
	if !g.stopped {
		g.stopped = true
		close(g.stop)
		g.wg.Wait()
	}
}

// stopAndFlush stops the senders, fails t with their errors, and sends
// what is left in each outbox, failing t for any message refused.
func (g *sending) stopAndFlush(t *testing.T) {
	t.Helper()
	g.halt()
	close(g.errs)
	for err := range g.errs {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, s := range g.senders {
		failed, err := s.flush(ctx)
		if err != nil {
			t.Fatalf("%s: flushing the outbox: %v", s.name, err)
		}
		for _, m := range failed {
			t.Errorf("%s: outbox message %q refused: %v", s.name, m.Text, m.Err)
		}
	}
}

// waitCount polls c until it reaches n.
func waitCount(t *testing.T, c *atomic.Int64, n int64, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for c.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (%d of %d)", what, c.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestKill9LosesNothingAcknowledged(t *testing.T) {
	const (
		cycles         = 4
		acksPerPhase   = 60 // successful sends between two kills
		failsPerOutage = 3  // failed sends seen in each outage
	)
	srv := serveOnFreePort(t, t.TempDir())
	bob := newUser(t, srv, "bob")
	var senders []*sender
	for _, name := range []string{"alice", "carol", "dave", "erin"} {
		senders = append(senders, &sender{name: name, home: newUser(t, srv, name)})
	}

	g := startSending(t, senders)
	acks, fails := &g.acks, &g.fails

	var outages []outage
	for cycle := range cycles {
		waitCount(t, acks, acks.Load()+acksPerPhase, fmt.Sprintf("sends before kill %d", cycle+1))
		// Count from before the kill: a send refused in the moment
		// after it is this outage's too.
		failed := fails.Load()
		srv.kill() // SIGKILL while every sender is sending
		o := outage{from: time.Now()}
		waitCount(t, fails, failed+failsPerOutage, fmt.Sprintf("failed sends in outage %d", cycle+1))
		o.to = time.Now()
		outages = append(outages, o)
		srv = srv.restart(t)
	}
	waitCount(t, acks, acks.Load()+acksPerPhase, "sends after the last restart")
	// Flush every outbox, so that even unacknowledged messages must arrive
	// (the outbox retries them with the same id: never twice).
	g.stopAndFlush(t)

	checkDelivered(t, senders, bob, outages, fmt.Sprintf("%d kill -9 cycles", cycles), fails.Load())

	// kill -9 under a running listen: it says it is offline, reconnects,
	// says it is back, and goes on.
	{
		alice := senders[0].home
		listen := start(t, nil, "--home", bob, "listen", "--json")
		waitOnline(t, listen)
		mustRun(t, "--home", alice, "send", "bob", "before the crash")
		waitEvent(t, listen, "before the crash")

		srv.kill()
		if !listen.stdout.waitFor(eventTimeout, listen.done, func(s string) bool {
			return strings.Contains(s, `"state":"offline"`)
		}) {
			t.Fatalf("listen did not say it went offline after the server died:\n%s", listen)
		}
		srv = srv.restart(t)
		mustRun(t, "--home", alice, "send", "bob", "after the restart")
		waitEvent(t, listen, "after the restart")
		if listen.exited() {
			t.Fatalf("listen exited:\n%s", listen)
		}
		states := []string{}
		for _, e := range decodeLines[event](t, listen.stdout.String()) {
			if e.Event == "state" && (len(states) == 0 || states[len(states)-1] != e.State) {
				states = append(states, e.State)
			}
		}
		if !strings.Contains(strings.Join(states, " "), "online offline") || states[len(states)-1] != "online" {
			t.Errorf("listen's states: %v, want online, then offline, then online again", states)
		}
		if strings.Contains(listen.stderr.String(), "level=") {
			t.Errorf("listen printed log lines:\n%s", listen.stderr)
		}
		listen.signal(syscall.SIGINT)
		if code, ok := listen.waitExit(10 * time.Second); !ok || code != 0 {
			t.Errorf("listen after SIGINT: exited=%v code=%d\n%s", ok, code, listen)
		}
		n := 0
		for _, e := range messages(decodeLines[event](t, listen.stdout.String())) {
			if e.Text == "before the crash" || e.Text == "after the restart" {
				n++
			}
		}
		if n != 2 {
			t.Errorf("listen printed %d of the 2 messages (want each once):\n%s", n, listen)
		}
	}
	srv.stop(t)
}

// waitEvent waits until listen prints a message with text.
func waitEvent(t *testing.T, listen *proc, text string) {
	t.Helper()
	ok := listen.stdout.waitFor(eventTimeout, listen.done, func(s string) bool {
		for _, e := range decodeLines[event](t, s) {
			if e.Event == "message" && e.Text == text {
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("listen did not print %q within %v:\n%s", text, eventTimeout, listen)
	}
}

// outage is when the server, or the database under it, was down.
type outage struct{ from, to time.Time }

// checkDelivered checks, once the senders' outboxes are flushed
// (stopAndFlush), that bob got every message they attempted exactly once,
// acknowledged or not, and nothing else; that none was acknowledged
// during an outage; and that his app is shown each once. It logs the
// counts, under title.
func checkDelivered(t *testing.T, senders []*sender, bob string, outages []outage, title string, fails int64) {
	t.Helper()
	acked := map[string]bool{}
	attempted := map[string]bool{}
	inFlight := 0 // calls under way when the server was killed
	for _, s := range senders {
		for _, r := range s.records {
			attempted[r.text] = true
			for _, o := range outages {
				if r.start.Before(o.from) && r.end.After(o.from) {
					inFlight++
				}
			}
			if r.err == nil {
				acked[r.text] = true
			}
			for i, o := range outages {
				if r.err == nil && r.start.After(o.from) && r.end.Before(o.to) {
					t.Errorf("%s was acknowledged during outage %d (server dead from %v to %v)", r.text, i+1, o.from.Format(time.StampMicro), o.to.Format(time.StampMicro))
				}
			}
		}
	}

	got := map[string]int{}
	inbox := mustRun(t, "--home", bob, "inbox", "--json")
	for _, e := range messages(decodeLines[event](t, inbox.stdout)) {
		got[e.Text]++
		from, _, _ := strings.Cut(e.Text, "-")
		if e.Peer != from {
			t.Errorf("message %q claims to be from %q", e.Text, e.Peer)
		}
	}
	lost, dup, phantom, unackedDelivered := 0, 0, 0, 0
	for text := range attempted {
		switch n := got[text]; {
		case n == 0 && acked[text]:
			lost++
			t.Errorf("acknowledged message %q never arrived", text)
		case n == 0:
			lost++
			t.Errorf("unacknowledged message %q is still missing after its outbox was flushed", text)
		case n > 1:
			dup++
			t.Errorf("message %q arrived %d times", text, n)
		case !acked[text]:
			unackedDelivered++
		}
	}
	for text := range got {
		if !attempted[text] {
			phantom++
			t.Errorf("bob got %q, which nobody sent", text)
		}
	}
	t.Logf("%s: %d sends attempted (%d in flight as an outage began), %d acknowledged, %d failed; bob got %d distinct; lost %d, duplicated %d, phantom %d; unacknowledged but delivered: %d",
		title, len(attempted), inFlight, len(acked), fails, len(got), lost, dup, phantom, unackedDelivered)

	// bob's local history has each message once too.
	var hist []struct {
		Text string `json:"text"`
	}
	for _, s := range senders {
		hist = append(hist, decodeLines[struct {
			Text string `json:"text"`
		}](t, mustRun(t, "--home", bob, "history", s.name, "--json", "--limit", "100000").stdout)...)
	}
	if len(hist) != len(got) {
		t.Errorf("bob's history has %d messages, his inbox showed %d distinct", len(hist), len(got))
	}

	// Exactly once to the app: nothing new the second time.
	if m := messages(decodeLines[event](t, mustRun(t, "--home", bob, "inbox", "--json").stdout)); len(m) != 0 {
		t.Errorf("bob's second inbox delivered %d messages again, first: %+v", len(m), m[0])
	}

}
