package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/magpie-im/magpie/client"
)

// sendRecord is one SendText call of the crash test.
type sendRecord struct {
	text       string
	start, end time.Time
	err        error
}

// sender sends numbered texts to bob from its own home (one home is one
// device) through the Go SDK until stopped.
type sender struct {
	name string
	home string

	mu      sync.Mutex
	records []sendRecord
}

func (s *sender) run(ctx context.Context, stop <-chan struct{}, acks, fails *atomic.Int64) error {
	cl, err := client.Open(ctx, s.home, client.Options{Unlocker: testUnlocker})
	if err != nil {
		return err
	}
	defer cl.Close()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		rec := sendRecord{text: fmt.Sprintf("%s-%05d", s.name, i), start: time.Now()}
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, rec.err = cl.SendText(sctx, "bob", rec.text)
		cancel()
		rec.end = time.Now()
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
// answers with temporary errors.
func (s *sender) flush(ctx context.Context) ([]client.Event, error) {
	cl, err := client.Open(ctx, s.home, client.Options{Unlocker: testUnlocker})
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var evs []client.Event
	for {
		err = cl.Sync(ctx, func(ev client.Event) { evs = append(evs, ev) })
		if err == nil || ctx.Err() != nil {
			return evs, err
		}
		time.Sleep(50 * time.Millisecond)
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

	ctx := t.Context()
	stop := make(chan struct{})
	var acks, fails atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(senders))
	for _, s := range senders {
		wg.Go(func() {
			if err := s.run(ctx, stop, &acks, &fails); err != nil {
				errs <- fmt.Errorf("%s: %w", s.name, err)
			}
		})
	}
	stopped := false
	stopSenders := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	t.Cleanup(stopSenders)

	type outage struct{ from, to time.Time }
	var outages []outage
	for cycle := range cycles {
		waitCount(t, &acks, acks.Load()+acksPerPhase, fmt.Sprintf("sends before kill %d", cycle+1))
		srv.kill() // SIGKILL while every sender is sending
		o := outage{from: time.Now()}
		waitCount(t, &fails, fails.Load()+failsPerOutage, fmt.Sprintf("failed sends in outage %d", cycle+1))
		o.to = time.Now()
		outages = append(outages, o)
		srv = srv.restart(t)
	}
	waitCount(t, &acks, acks.Load()+acksPerPhase, "sends after the last restart")
	stopSenders()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Flush every outbox, so that even unacknowledged messages must arrive
	// (the outbox retries them with the same id: never twice).
	flushCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, s := range senders {
		evs, err := s.flush(flushCtx)
		if err != nil {
			t.Fatalf("%s: flushing the outbox: %v", s.name, err)
		}
		for _, ev := range evs {
			if ev.Kind == client.EventSendFailed {
				t.Errorf("%s: outbox message refused: %v", s.name, ev.Err)
			}
		}
	}

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
	t.Logf("%d kill -9 cycles: %d sends attempted (%d in flight at a kill), %d acknowledged, %d failed; bob got %d distinct; lost %d, duplicated %d, phantom %d; unacknowledged but delivered: %d",
		cycles, len(attempted), inFlight, len(acked), fails.Load(), len(got), lost, dup, phantom, unackedDelivered)

	// bob's local history has each message once too.
	hist := decodeLines[struct {
		Text string `json:"text"`
	}](t, mustRun(t, "--home", bob, "history", "--json", "--limit", "100000").stdout)
	if len(hist) != len(got) {
		t.Errorf("bob's history has %d messages, his inbox showed %d distinct", len(hist), len(got))
	}

	// Exactly once to the app: nothing new the second time.
	if m := messages(decodeLines[event](t, mustRun(t, "--home", bob, "inbox", "--json").stdout)); len(m) != 0 {
		t.Errorf("bob's second inbox delivered %d messages again, first: %+v", len(m), m[0])
	}

	// kill -9 under a running listen: it warns, reconnects and goes on.
	{
		alice := senders[0].home
		listen := start(t, nil, "--home", bob, "listen", "--json")
		waitListening(t, alice, "bob", listen)
		mustRun(t, "--home", alice, "send", "bob", "before the crash")
		waitEvent(t, listen, "before the crash")

		srv.kill()
		if !listen.stderr.waitFor(eventTimeout, listen.done, func(s string) bool {
			return strings.Contains(s, "level=WARN") && strings.Contains(s, "reconnecting")
		}) {
			t.Fatalf("listen logged no reconnect warning after the server died:\n%s", listen)
		}
		srv = srv.restart(t)
		mustRun(t, "--home", alice, "send", "bob", "after the restart")
		waitEvent(t, listen, "after the restart")
		if listen.exited() {
			t.Fatalf("listen exited:\n%s", listen)
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
			if e.Kind == "message" && e.Text == text {
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("listen did not print %q within %v:\n%s", text, eventTimeout, listen)
	}
}
