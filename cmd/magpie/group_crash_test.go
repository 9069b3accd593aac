package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/magpie-im/magpie/client"
)

// groupMember is a member of the crash test's group: a client home, and
// while it runs, its engine in this process and what its events showed.
type groupMember struct {
	name string
	home string

	cl     *client.Client
	stopCl func()

	mu     sync.Mutex
	shown  map[string]int // incoming group messages, by text, as EventMessage showed them
	resync bool           // the subscription fell behind
}

// open opens the member's client and runs its engine, counting the
// group messages its events show.
func (m *groupMember) open(t *testing.T, ctx context.Context) {
	t.Helper()
	cl, err := client.Open(ctx, client.Options{Home: m.home, Unlocker: testUnlocker})
	if err != nil {
		t.Fatalf("%s: %v", m.name, err)
	}
	sub := cl.Subscribe()
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { cl.Run(rctx) })
	wg.Go(func() {
		for ev := range sub.Events() {
			m.mu.Lock()
			switch {
			case ev.Kind == client.EventResync:
				m.resync = true
			case ev.Kind == client.EventMessage && !ev.Message.Outgoing && strings.HasPrefix(ev.Message.Peer, "group:") && !ev.Message.Notice:
				m.shown[ev.Message.Text]++
			}
			m.mu.Unlock()
		}
	})
	m.cl = cl
	m.stopCl = func() {
		cancel()
		sub.Close()
		wg.Wait()
		cl.Close()
		m.cl = nil
	}
	t.Cleanup(func() {
		if m.cl != nil {
			m.stopCl()
		}
	})
}

// groupSender sends numbered texts to the group from its member's running
// client until stopped, as sender.run does to bob.
func groupSender(ctx context.Context, m *groupMember, peer string, stop <-chan struct{}, records *[]sendRecord, mu *sync.Mutex, acks, fails *atomic.Int64) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		rec := sendRecord{text: fmt.Sprintf("%s-%05d", m.name, i), start: time.Now()}
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		msg, err := m.cl.Send(sctx, peer, rec.text)
		if err == nil {
			msg, err = m.cl.WaitSent(sctx, msg.Seq)
		}
		if err == nil && (msg.State == client.StateQueued || msg.State == client.StateFailed) {
			err = errors.New(msg.Err)
		}
		cancel()
		rec.end, rec.err = time.Now(), err
		mu.Lock()
		*records = append(*records, rec)
		mu.Unlock()
		if rec.err == nil {
			acks.Add(1)
			continue
		}
		fails.Add(1)
		select {
		case <-stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// syncUntilEmpty syncs a running client until its outbox is empty.
func syncUntilEmpty(ctx context.Context, cl *client.Client) error {
	for {
		if err := cl.Sync(ctx); err != nil {
			if ctx.Err() != nil {
				return err
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		out, err := cl.Outbox(ctx)
		if err != nil {
			return err
		}
		if len(out) == 0 {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGroupCrashDeliversEveryMessageOnce: two members send to a group of
// four through their engines while `magpie serve` is killed with SIGKILL
// again and again; two other members are online throughout (their engines
// reconnect, and acknowledgements are lost in the kills), one is offline
// until the end. Once the outboxes are flushed, every member has every
// message sent to the group (every acknowledged one, and the rest retried
// from the outbox) exactly once, in each sender's order, and was shown each
// once. MAGPIE_SOAK=1 runs more and longer cycles.
func TestGroupCrashDeliversEveryMessageOnce(t *testing.T) {
	cycles, acksPerPhase := 4, 20 // successful sends (of both senders) between two kills
	if os.Getenv("MAGPIE_SOAK") != "" {
		cycles, acksPerPhase = 10, 100
	}
	const failsPerOutage = 2
	srv := serveOnFreePort(t, t.TempDir())
	members := map[string]*groupMember{}
	var names []string
	for _, name := range []string{"alice", "bob", "carol", "dave"} {
		members[name] = &groupMember{name: name, home: newUser(t, srv, name), shown: map[string]int{}}
		names = append(names, name)
	}
	alice, carol, dave := members["alice"], members["carol"], members["dave"]
	senders := []*groupMember{alice, carol}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	// Everyone but dave is online; alice creates the group.
	for _, name := range []string{"alice", "bob", "carol"} {
		members[name].open(t, ctx)
	}
	g, err := alice.cl.CreateGroup(ctx, "crash", []string{"bob", "carol", "dave"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if cg, err := carol.cl.Group(ctx, g.ID); err == nil && cg.CanSend {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("carol never learned of the group")
		}
		time.Sleep(20 * time.Millisecond)
	}

	stop := make(chan struct{})
	var acks, fails atomic.Int64
	var recMu sync.Mutex
	records := map[string]*[]sendRecord{}
	var wg sync.WaitGroup
	for _, s := range senders {
		recs := new([]sendRecord)
		records[s.name] = recs
		wg.Go(func() { groupSender(ctx, s, g.Peer, stop, recs, &recMu, &acks, &fails) })
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

	var outages []outage
	for cycle := range cycles {
		waitCount(t, &acks, acks.Load()+int64(acksPerPhase), fmt.Sprintf("group sends before kill %d", cycle+1))
		failed := fails.Load() // a send refused in the moment after the kill is this outage's too
		srv.kill()
		o := outage{from: time.Now()}
		waitCount(t, &fails, failed+failsPerOutage, fmt.Sprintf("failed group sends in outage %d", cycle+1))
		o.to = time.Now()
		outages = append(outages, o)
		srv = srv.restart(t)
	}
	waitCount(t, &acks, acks.Load()+int64(acksPerPhase), "group sends after the last restart")
	stopSenders()

	// Flush the outboxes: what was not acknowledged is retried with its id,
	// so it too must arrive, once.
	flushCtx, cancelFlush := context.WithTimeout(ctx, 60*time.Second)
	defer cancelFlush()
	for _, s := range senders {
		if err := syncUntilEmpty(flushCtx, s.cl); err != nil {
			t.Fatalf("%s: flushing the outbox: %v", s.name, err)
		}
	}
	// dave comes online at last; everyone syncs.
	dave.open(t, ctx)
	for _, name := range names {
		if err := syncUntilEmpty(flushCtx, members[name].cl); err != nil {
			t.Fatalf("%s: sync: %v", name, err)
		}
	}

	// What each sender attempted, in order, and which the server
	// acknowledged; none acknowledged while the server was dead.
	attempted := map[string][]string{}
	acked := map[string]bool{}
	inFlight := 0
	for _, s := range senders {
		for _, r := range *records[s.name] {
			attempted[s.name] = append(attempted[s.name], r.text)
			if r.err == nil {
				acked[r.text] = true
			}
			for i, o := range outages {
				if r.start.Before(o.from) && r.end.After(o.from) {
					inFlight++
				}
				if r.err == nil && r.start.After(o.from) && r.end.Before(o.to) {
					t.Errorf("%s was acknowledged during outage %d", r.text, i+1)
				}
			}
		}
	}

	// Every member's history: each sender's messages, each once, in order;
	// nothing unreadable, nothing failed, nothing that nobody sent.
	for _, name := range names {
		m := members[name]
		hist, _, err := m.cl.History(ctx, g.Peer, client.HistoryQuery{Limit: 100000})
		if err != nil {
			t.Fatal(err)
		}
		bySender := map[string][]string{}
		for _, msg := range hist {
			switch {
			case msg.Notice:
				continue
			case msg.State == client.StateUnreadable || msg.State == client.StateFailed || msg.State == client.StateQueued:
				t.Errorf("%s: message %q from %s is %s: %s", name, msg.Text, msg.Sender, msg.State, msg.Err)
			}
			from, _, _ := strings.Cut(msg.Text, "-")
			if msg.Sender != from {
				t.Errorf("%s: message %q shows as from %q", name, msg.Text, msg.Sender)
			}
			if msg.Outgoing != (from == name) {
				t.Errorf("%s: message %q: outgoing %v", name, msg.Text, msg.Outgoing)
			}
			bySender[msg.Sender] = append(bySender[msg.Sender], msg.Text)
		}
		for _, s := range senders {
			got, want := bySender[s.name], attempted[s.name]
			if !slices.Equal(got, want) {
				t.Errorf("%s has %d messages from %s, want %d in order: %s", name, len(got), s.name, len(want), diffTexts(got, want, acked))
			}
			delete(bySender, s.name)
		}
		for from, texts := range bySender {
			t.Errorf("%s has %d messages from %s, who sent none", name, len(texts), from)
		}
		// Shown once each: every incoming one exactly once.
		m.mu.Lock()
		for _, s := range senders {
			if s == m {
				continue
			}
			for _, text := range attempted[s.name] {
				if n := m.shown[text]; n != 1 {
					t.Errorf("%s was shown %q %d times", name, text, n)
				}
			}
		}
		if m.resync {
			t.Logf("%s's subscription fell behind (EventResync): the counts of what it showed are partial", name)
		}
		m.mu.Unlock()
	}

	// A member who opens again and syncs is shown nothing again.
	for _, name := range []string{"bob", "dave"} {
		m := members[name]
		m.stopCl()
		m.shown = map[string]int{}
		m.open(t, ctx)
		if err := syncUntilEmpty(flushCtx, m.cl); err != nil {
			t.Fatalf("%s: sync again: %v", name, err)
		}
		m.mu.Lock()
		if len(m.shown) != 0 {
			t.Errorf("%s was shown %d messages again after a restart", name, len(m.shown))
		}
		m.mu.Unlock()
	}
	total := 0
	for _, s := range senders {
		total += len(attempted[s.name])
	}
	t.Logf("%d kill -9 cycles: %d group sends attempted (%d in flight at a kill), %d acknowledged, %d failed and retried from the outbox",
		cycles, total, inFlight, len(acked), fails.Load())
	for _, name := range names {
		members[name].stopCl()
	}
	srv.stop(t)
}

// diffTexts says how got differs from want: missing, duplicated and
// out-of-order texts (missing acknowledged ones marked).
func diffTexts(got, want []string, acked map[string]bool) string {
	count := map[string]int{}
	for _, s := range got {
		count[s]++
	}
	var missing, dup []string
	for _, s := range want {
		switch n := count[s]; {
		case n == 0 && acked[s]:
			missing = append(missing, s+" (acknowledged)")
		case n == 0:
			missing = append(missing, s)
		case n > 1:
			dup = append(dup, s+"×"+strconv.Itoa(n))
		}
	}
	var order []string
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] {
			order = append(order, got[i-1]+" before "+got[i])
		}
	}
	return fmt.Sprintf("missing %v; duplicated %v; out of order %v", missing, dup, order)
}
