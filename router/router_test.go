package router_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/router"
	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mailbox records pushes; it is the router's view of a connection.
type mailbox struct {
	mu         sync.Mutex
	pushes     []router.Push
	superseded bool
	changed    chan struct{}
}

func newMailbox() *mailbox { return &mailbox{changed: make(chan struct{}, 1)} }

func (m *mailbox) Push(p router.Push) bool {
	m.mu.Lock()
	m.pushes = append(m.pushes, p)
	m.mu.Unlock()
	select {
	case m.changed <- struct{}{}:
	default:
	}
	return true
}

func (m *mailbox) Superseded() {
	m.mu.Lock()
	m.superseded = true
	m.mu.Unlock()
}

// messages returns the seqs of pushed messages.
func (m *mailbox) messages() []uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var seqs []uint64
	for _, p := range m.pushes {
		if p.Message != nil {
			seqs = append(seqs, p.Message.Seq)
		}
	}
	return seqs
}

// drained reports whether a Drained push has arrived.
func (m *mailbox) drained() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.pushes {
		if p.Drained {
			return true
		}
	}
	return false
}

// waitFor waits until n messages have been pushed to m, and sub (m's
// subscription) has stopped pushing, then checks that no more than n were:
// no sleep decides that nothing more is coming.
func (m *mailbox) waitFor(t *testing.T, sub *router.Subscription, n int) []uint64 {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for len(m.messages()) < n {
		select {
		case <-m.changed:
		case <-deadline:
			t.Fatalf("%d messages pushed, want %d", len(m.messages()), n)
		}
	}
	waitIdle(t, sub)
	if got := m.messages(); len(got) != n {
		t.Fatalf("%d messages pushed, want exactly %d", len(got), n)
	}
	return m.messages()
}

// waitIdle waits until no pump or commit is pushing to subs (router.Busy).
func waitIdle(t *testing.T, subs ...*router.Subscription) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range subs {
		for s.Busy() {
			if time.Now().After(deadline) {
				t.Fatal("the router is still pushing after 10s")
			}
			time.Sleep(time.Millisecond)
		}
	}
}

var (
	alice = store.DeviceAddr{User: "alice", Device: 1}
	bob   = store.DeviceAddr{User: "bob", Device: 1}
)

// setup starts a router on a real store with users alice and bob. wrap, if
// given, wraps the store (to watch what the router asks of it).
func setup(t *testing.T, cfg router.Config, wrap ...func(store.Store) store.Store) *router.Router {
	t.Helper()
	cfg.Store = openStore(t)
	for _, w := range wrap {
		cfg.Store = w(cfg.Store)
	}
	r := router.New(cfg)
	t.Cleanup(r.Close)
	return r
}

// openStore opens a store with users alice and bob; it is closed when the
// test ends.
func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for i, name := range []string{"alice", "bob"} {
		if _, err := st.CreateUser(context.Background(), name, [32]byte{byte(i + 1)}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func send(t *testing.T, r *router.Router, payload []byte) {
	t.Helper()
	done := make(chan error, 1)
	var id [16]byte
	copy(id[:], fmt.Sprint(time.Now().UnixNano()))
	r.Send(&store.Enqueue{From: alice, ClientID: id, To: "bob", Payload: payload}, func(e *store.Enqueue, err error) {
		if err == nil {
			err = e.Err
		}
		done <- err
	})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWindowByCount(t *testing.T) {
	r := setup(t, router.Config{Window: 4})
	mb := newMailbox()
	sub := r.Attach(bob, mb)
	defer sub.Detach()
	for range 10 {
		send(t, r, []byte("x"))
	}
	seqs := mb.waitFor(t, sub, 4)
	// Acks for items never pushed do not open the window.
	if err := sub.Ack([]uint64{999_999}); err != nil {
		t.Fatal(err)
	}
	mb.waitFor(t, sub, 4)
	if err := sub.Ack(seqs[:2]); err != nil {
		t.Fatal(err)
	}
	mb.waitFor(t, sub, 6)
}

func TestWindowByBytes(t *testing.T) {
	r := setup(t, router.Config{WindowBytes: 1000})
	mb := newMailbox()
	sub := r.Attach(bob, mb)
	defer sub.Detach()
	// A message larger than the whole window still goes, alone.
	send(t, r, make([]byte, 5000))
	send(t, r, make([]byte, 600))
	send(t, r, make([]byte, 600))
	send(t, r, make([]byte, 600))
	seqs := mb.waitFor(t, sub, 1)
	sub.Ack(seqs[:1])
	// Then pushes go on while fewer than 1000 bytes are unacknowledged:
	// 600 (0 before it), 600 (600 before it); the third waits.
	seqs = mb.waitFor(t, sub, 3)
	sub.Ack(seqs[1:3])
	mb.waitFor(t, sub, 4)
}

func TestSupersede(t *testing.T) {
	r := setup(t, router.Config{})
	first, second := newMailbox(), newMailbox()
	firstSub := r.Attach(bob, first)
	sub := r.Attach(bob, second)
	defer sub.Detach()
	if !first.superseded {
		t.Fatal("first connection not told it was superseded")
	}
	send(t, r, []byte("x"))
	second.waitFor(t, sub, 1)
	waitIdle(t, firstSub)
	if n := len(first.messages()); n != 0 {
		t.Fatalf("superseded connection got %d pushes", n)
	}
}

// at is a handshake that began and was done at these offsets from a base.
func at(began, done time.Duration) router.Handshake {
	base := time.Unix(1_700_000_000, 0)
	return router.Handshake{Began: base.Add(began), Done: base.Add(done)}
}

// dial is h stamped as coming from the client's dial attempt.
func dial(h router.Handshake, attempt uint64) router.Handshake {
	h.Attempt = attempt
	return h
}

// Which of two connections of a device is its current one: the later of
// two in a row, the first done of two dialed at once (the client keeps
// that one and closes the other).
func TestHandshakeReplaces(t *testing.T) {
	for _, tc := range []struct {
		name    string
		h, cur  router.Handshake
		replace bool
	}{
		{"reconnected after", at(5, 6), at(0, 1), true},
		{"an older one, late", at(0, 1), at(5, 6), false},
		{"dialed at once, done later", at(1, 4), at(0, 3), false},
		{"dialed at once, done first", at(0, 3), at(1, 4), true},
		{"began as the other was done", at(3, 4), at(0, 3), true},
		{"the same instant (Attach)", at(2, 2), at(2, 2), true},

		// Stamped by the client: its order of its own dials decides,
		// whatever the servers' clocks say.
		{"a later dial, by clocks earlier", dial(at(0, 1), 2), dial(at(5, 6), 1), true},
		{"an earlier dial, by clocks later", dial(at(5, 6), 1), dial(at(0, 1), 2), false},
		{"one dial, done first though began after the other was done", dial(at(3, 4), 7), dial(at(0, 5), 7), true},
		{"one dial, done later though began after the other was done", dial(at(3, 4), 7), dial(at(0, 3), 7), false},
		{"one dial, the same instant", dial(at(2, 2), 7), dial(at(2, 2), 7), false},
		{"dials too far apart: the clocks decide", dial(at(5, 6), 1), dial(at(0, 1), 1+uint64(router.AttemptWindow)), true},
		{"dials just apart enough for the stamps", dial(at(5, 6), 1), dial(at(0, 1), uint64(router.AttemptWindow)), false},
		{"a later dial too far apart: the clocks decide", dial(at(0, 1), 1+uint64(router.AttemptWindow)), dial(at(5, 6), 1), false},
		{"only one stamped: the clocks decide", dial(at(5, 6), 0), dial(at(0, 1), 9), true},
		{"only the other stamped: the clocks decide", dial(at(5, 6), 9), dial(at(0, 1), 0), true},
	} {
		if got := tc.h.Replaces(tc.cur); got != tc.replace {
			t.Errorf("%s: Replaces = %v, want %v", tc.name, got, tc.replace)
		}
	}
}

// A device's old connection that attaches after its newer one (its
// goroutine ran late), or the losing one of two it dialed at once, is the
// one superseded, at once; the current one keeps the queue. Then a later
// handshake supersedes as usual.
func TestStaleConnectionAttachingLateIsSuperseded(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cur, stale router.Handshake
	}{
		{"older", at(5, 6), at(0, 1)},
		{"dial sibling done later", at(0, 3), at(1, 4)},
		{"stamped dial sibling done later", dial(at(0, 3), 7), dial(at(5, 6), 7)},
		{"an earlier dial, by the clock later", dial(at(0, 1), 2), dial(at(5, 6), 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := setup(t, router.Config{})
			current, stale, next := newMailbox(), newMailbox(), newMailbox()
			sub := r.AttachAt(bob, current, tc.cur)
			staleSub := r.AttachAt(bob, stale, tc.stale)
			if !stale.superseded || current.superseded {
				t.Fatalf("superseded: the stale connection %v, the current one %v; want only the stale one", stale.superseded, current.superseded)
			}
			send(t, r, []byte("x"))
			current.waitFor(t, sub, 1)
			staleSub.Detach() // what its connection does as it closes: the current one stays
			send(t, r, []byte("y"))
			current.waitFor(t, sub, 2)
			if n := len(stale.messages()); n != 0 {
				t.Fatalf("the stale connection got %d pushes", n)
			}
			last := r.AttachAt(bob, next, at(10, 11))
			defer last.Detach()
			if !current.superseded {
				t.Fatal("a later handshake did not supersede")
			}
		})
	}
}

func TestEphemeralSkipsSender(t *testing.T) {
	r := setup(t, router.Config{})
	mb := newMailbox()
	sub := r.Attach(alice, mb)
	defer sub.Detach()
	if n := r.SendEphemeral("alice", &router.Ephemeral{From: alice}); n != 0 {
		t.Fatalf("ephemeral echoed to its sender (%d)", n)
	}
	if n := r.SendEphemeral("bob", &router.Ephemeral{From: alice}); n != 0 {
		t.Fatalf("ephemeral to offline user reached %d devices", n)
	}
}

func TestCloseAnswersEverySend(t *testing.T) {
	r := setup(t, router.Config{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	answered := 0
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var id [16]byte
			copy(id[:], fmt.Sprint(i))
			r.Send(&store.Enqueue{From: alice, ClientID: id, To: "bob"}, func(*store.Enqueue, error) {
				mu.Lock()
				answered++
				mu.Unlock()
			})
		}()
	}
	r.Close()
	wg.Wait()
	if answered != 200 {
		t.Fatalf("%d of 200 sends answered", answered)
	}
}

// commitWatch sends through a router whose commit loop runs on a fake
// clock (router.FakeCommitClock), and sees every CommitDelay wait it starts.
type commitWatch struct {
	t     *testing.T
	r     *router.Router
	clock *router.FakeCommitClock
	next  byte
}

// watchCommits starts a router with cfg on a fake commit clock.
func watchCommits(t *testing.T, cfg router.Config, wrap ...func(store.Store) store.Store) *commitWatch {
	clock := router.NewFakeCommitClock()
	r := setup(t, router.WithCommitClock(cfg, clock), wrap...)
	t.Cleanup(clock.Stop) // before the router's Close
	return &commitWatch{t: t, r: r, clock: clock}
}

// send submits a send and returns its result, to come once committed.
func (w *commitWatch) send() <-chan error {
	w.next++
	res := make(chan error, 1)
	w.r.Send(&store.Enqueue{From: alice, ClientID: [16]byte{w.next}, To: "bob", Payload: []byte("x")}, func(e *store.Enqueue, err error) {
		if err == nil {
			err = e.Err
		}
		res <- err
	})
	return res
}

// committed waits for a send's result; no wait may start meanwhile.
func (w *commitWatch) committed(res <-chan error) {
	w.t.Helper()
	select {
	case err := <-res:
		if err != nil {
			w.t.Fatal(err)
		}
	case d := <-w.clock.Delays:
		w.t.Fatalf("a send waiting to commit, a new wait of %v started", d.D)
	case <-time.After(10 * time.Second):
		w.t.Fatal("send not committed")
	}
}

// atOnce checks that a send commits without the loop starting a wait.
func (w *commitWatch) atOnce(why string) {
	w.t.Helper()
	res := w.send()
	select {
	case d := <-w.clock.Delays:
		d.Fire()
		w.committed(res)
		w.t.Fatalf("%s: the commit waited %v", why, d.D)
	case err := <-res:
		if err != nil {
			w.t.Fatal(err)
		}
	}
}

// waits checks that a send starts a wait of delay, and returns the wait
// and the send's result.
func (w *commitWatch) waits(why string, delay time.Duration) (*router.FakeDelay, <-chan error) {
	w.t.Helper()
	res := w.send()
	select {
	case d := <-w.clock.Delays:
		if d.D != delay {
			w.t.Fatalf("%s: waited %v, want CommitDelay (%v)", why, d.D, delay)
		}
		return d, res
	case err := <-res:
		w.t.Fatalf("%s: committed alone at once (err %v)", why, err)
	}
	return nil, nil
}

// Under load (the previous commit ended less than 10 × CommitDelay ago) a
// small batch waits CommitDelay for company; an idle router commits at
// once. The commit loop's clock is the test's, so whether the router is
// under load and when a wait ends are the test's choice, not the
// scheduler's.
func TestCommitDelay(t *testing.T) {
	const delay = 300 * time.Millisecond
	var mu sync.Mutex
	var sizes []int
	w := watchCommits(t, router.Config{
		CommitDelay: delay,
		MaxBatch:    3, // a full batch ends the wait: the test need not time it
		OnCommit: func(ops int, _ time.Duration, _ error) {
			mu.Lock()
			sizes = append(sizes, ops)
			mu.Unlock()
		},
	})

	w.atOnce("no commit yet")
	// Right after a commit: the next send waits, and the two sent
	// meanwhile share its commit, which a full batch ends.
	_, first := w.waits("just after a commit", delay)
	second, third := w.send(), w.send()
	w.committed(first)
	w.committed(second)
	w.committed(third)
	// A lone send under load commits when the wait runs out.
	d, res := w.waits("just after a commit", delay)
	d.Fire()
	w.committed(res)
	// Just inside 10 × CommitDelay still counts as load; 10 × is idle.
	w.clock.Advance(10*delay - time.Nanosecond)
	d, res = w.waits("10 × CommitDelay - 1ns after a commit", delay)
	d.Fire()
	w.committed(res)
	w.clock.Advance(10 * delay)
	w.atOnce("10 × CommitDelay after a commit")

	mu.Lock()
	defer mu.Unlock()
	if want := []int{1, 3, 1, 1, 1}; !slices.Equal(sizes, want) {
		t.Errorf("commits of %v operations, want %v", sizes, want)
	}
}

// Under load, a batch of 16 operations (smallBatch) commits without
// waiting; a negative CommitDelay never waits.
func TestCommitDelayOnlyForSmallBatches(t *testing.T) {
	gs := &gatedStore{entered: make(chan struct{}), gate: make(chan struct{})}
	w := watchCommits(t, router.Config{CommitDelay: time.Second}, func(s store.Store) store.Store { gs.Store = s; return gs })
	w.atOnce("no commit yet")
	// Hold a commit while 16 sends line up behind it.
	gs.armed.Store(true)
	d, held := w.waits("just after a commit", time.Second)
	d.Fire()
	<-gs.entered
	var batch []<-chan error
	for range 16 {
		batch = append(batch, w.send())
	}
	close(gs.gate)
	w.committed(held)
	for _, res := range batch {
		w.committed(res)
	}

	w = watchCommits(t, router.Config{CommitDelay: -1})
	w.atOnce("no commit yet")
	w.atOnce("CommitDelay negative, just after a commit")
}

// pendingCounter counts the router's queue reads.
type pendingCounter struct {
	store.Store
	reads atomic.Int64
}

func (p *pendingCounter) Pending(ctx context.Context, dev store.DeviceAddr, after uint64, limit int, now time.Time) ([]store.Message, error) {
	p.reads.Add(1)
	return p.Store.Pending(ctx, dev, after, limit, now)
}

// A device that has been pushed everything gets new items straight from the
// commit, without the router reading them back from the store; a device
// with a backlog (here: a full window) is fed from the store.
func TestCommittedItemsSkipTheStore(t *testing.T) {
	pc := &pendingCounter{}
	r := setup(t, router.Config{Window: 4}, func(s store.Store) store.Store { pc.Store = s; return pc })
	mb := newMailbox()
	sub := r.Attach(bob, mb)
	defer sub.Detach()
	deadline := time.Now().Add(10 * time.Second)
	for !mb.drained() {
		if time.Now().After(deadline) {
			t.Fatal("no Drained push for an empty queue")
		}
		time.Sleep(time.Millisecond)
	}
	before := pc.reads.Load()
	for range 4 {
		send(t, r, []byte("x"))
	}
	seqs := mb.waitFor(t, sub, 4)
	if n := pc.reads.Load() - before; n != 0 {
		t.Errorf("%d queue reads for 4 items pushed into an open window, want 0", n)
	}
	// The window is full: these two wait in the store.
	send(t, r, []byte("y"))
	send(t, r, []byte("z"))
	mb.waitFor(t, sub, 4)
	if err := sub.Ack(seqs); err != nil {
		t.Fatal(err)
	}
	got := mb.waitFor(t, sub, 6)
	if pc.reads.Load() == before {
		t.Error("the backlog behind a full window was pushed without reading the store")
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("pushed out of order: %v", got)
		}
	}
}

// Many senders, a small window and a device that acknowledges as it
// receives: every item is pushed exactly once, in seq order, whether it
// came straight from a commit or from the store.
func TestPushOrderUnderLoad(t *testing.T) {
	r := setup(t, router.Config{Window: 8})
	acks := make(chan uint64, 1024)
	mb := &ackingMailbox{mailbox: newMailbox(), acks: acks}
	sub := r.Attach(bob, mb)
	defer sub.Detach()
	ackerDone := make(chan struct{})
	go func() {
		defer close(ackerDone)
		for q := range acks {
			if err := sub.Ack([]uint64{q}); err != nil {
				return
			}
		}
	}()
	const senders, each = 8, 100
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				var id [16]byte
				id[0], id[1], id[2] = byte(g), byte(i), byte(i>>8)
				done := make(chan error, 1)
				r.Send(&store.Enqueue{From: alice, ClientID: id, To: "bob", Payload: []byte("x")}, func(e *store.Enqueue, err error) {
					if err == nil {
						err = e.Err
					}
					done <- err
				})
				if err := <-done; err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := mb.waitFor(t, sub, senders*each)
	close(acks)
	<-ackerDone
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("push %d has seq %d after %d", i, got[i], got[i-1])
		}
	}
}

// ackingMailbox hands each pushed message's seq to an acknowledging
// goroutine, as a client's connection does (acks come from its reader, not
// from inside Push).
type ackingMailbox struct {
	*mailbox
	acks chan<- uint64
}

func (m *ackingMailbox) Push(p router.Push) bool {
	m.mailbox.Push(p)
	if p.Message != nil {
		m.acks <- p.Message.Seq
	}
	return true
}

// gatedStore holds one Commit at the gate when armed, so that a test can
// line up the operations that go into the next batch.
type gatedStore struct {
	store.Store
	armed   atomic.Bool
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedStore) Commit(ctx context.Context, b *store.Batch) error {
	if g.armed.CompareAndSwap(true, false) {
		g.entered <- struct{}{}
		<-g.gate
	}
	return g.Store.Commit(ctx, b)
}

// An ack ahead of a send in one batch: the store queues the send's copy
// first (enqueues, then acks), so the receipt has the higher seq. Both go
// to alice, who is caught up; she must get both, whatever order the
// operations were submitted in.
func TestReceiptAndMessageInOneBatch(t *testing.T) {
	gs := &gatedStore{entered: make(chan struct{}), gate: make(chan struct{})}
	r := setup(t, router.Config{CommitDelay: -1}, func(s store.Store) store.Store { gs.Store = s; return gs })
	toBob, toAlice := newMailbox(), newMailbox()
	bobSub := r.Attach(bob, toBob)
	defer bobSub.Detach()
	aliceSub := r.Attach(alice, toAlice)
	defer aliceSub.Detach()
	send(t, r, []byte("to bob"))
	delivered := toBob.waitFor(t, bobSub, 1)
	for !toAlice.drained() {
		time.Sleep(time.Millisecond)
	}

	// Hold a commit at the gate while the ack and a send line up behind it.
	gs.armed.Store(true)
	held := make(chan error, 1)
	r.Send(&store.Enqueue{From: alice, ClientID: [16]byte{'h'}, To: "bob", Payload: []byte("held")}, func(e *store.Enqueue, err error) { held <- err })
	<-gs.entered
	if err := bobSub.Ack(delivered); err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	r.Send(&store.Enqueue{From: bob, ClientID: [16]byte{'b'}, To: "alice", Payload: []byte("to alice")}, func(e *store.Enqueue, err error) {
		if err == nil {
			err = e.Err
		}
		sent <- err
	})
	// Ack and Send have put both in the committer's channel, behind the
	// held commit, before they returned: they share the next batch.
	close(gs.gate)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}

	deadline := time.After(5 * time.Second)
	for {
		toAlice.mu.Lock()
		var msgs, receipts int
		for _, p := range toAlice.pushes {
			switch {
			case p.Message == nil:
			case p.Message.Kind == store.KindReceipt:
				receipts++
			default:
				msgs++
			}
		}
		toAlice.mu.Unlock()
		if msgs == 1 && receipts == 1 {
			break
		}
		select {
		case <-toAlice.changed:
		case <-deadline:
			t.Fatalf("alice got %d messages and %d receipts, want 1 and 1", msgs, receipts)
		}
	}
	if got := toAlice.messages(); len(got) != 2 || got[0] >= got[1] {
		t.Fatalf("alice's pushes have seqs %v, want two, increasing", got)
	}
}

// ackCounter counts the acknowledged seqs that reach the store.
type ackCounter struct {
	store.Store
	seqs atomic.Int64
}

func (a *ackCounter) Commit(ctx context.Context, b *store.Batch) error {
	for _, ack := range b.Acks {
		a.seqs.Add(int64(len(ack.Seqs)))
	}
	return a.Store.Commit(ctx, b)
}

// Only acks of what the subscription pushed and has not had acknowledged
// reach the store: a flood of made-up or repeated seqs costs it nothing.
func TestAcksOfUnpushedItemsSkipTheStore(t *testing.T) {
	counter := &ackCounter{}
	r := setup(t, router.Config{}, func(s store.Store) store.Store { counter.Store = s; return counter })
	mb := newMailbox()
	sub := r.Attach(bob, mb)
	defer sub.Detach()
	send(t, r, []byte("x"))
	seqs := mb.waitFor(t, sub, 1)
	flood := make([]uint64, 4096)
	for i := range flood {
		flood[i] = uint64(1_000_000 + i)
	}
	for range 50 {
		if err := sub.Ack(flood); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 { // the real one, and then repeats of it
		if err := sub.Ack(append([]uint64{seqs[0]}, flood[:100]...)); err != nil {
			t.Fatal(err)
		}
	}
	// Operations commit in the order submitted: once a later send has
	// committed, so has every ack before it.
	send(t, r, []byte("y"))
	if n := counter.seqs.Load(); n != 1 {
		t.Fatalf("%d acknowledged seqs reached the store, want 1 (the one pushed)", n)
	}
}

// Drain makes the subscription report again, with the token, after pushing
// what is queued now, including items the router was never told about
// (here: written to the store behind its back). Without a Drain there is
// one report, at connect.
func TestDrainReportsAfterWhatIsQueuedNow(t *testing.T) {
	var st store.Store
	r := setup(t, router.Config{}, func(s store.Store) store.Store { st = s; return s })
	mb := newMailbox()
	sub := r.Attach(bob, mb)
	defer sub.Detach()
	report := func(tok uint64) int { // the index of the Drained push with tok, or -1
		mb.mu.Lock()
		defer mb.mu.Unlock()
		for i, p := range mb.pushes {
			if p.Drained && p.DrainTok == tok {
				return i
			}
		}
		return -1
	}
	waitReport := func(tok uint64) int {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for report(tok) < 0 {
			select {
			case <-mb.changed:
			case <-deadline:
				t.Fatalf("no Drained push with token %d", tok)
			}
		}
		return report(tok)
	}
	waitReport(0)
	now := time.Now()
	e := &store.Enqueue{From: alice, ClientID: [store.ClientIDSize]byte{9}, To: "bob", Payload: []byte("behind its back"), Expires: now.Add(time.Hour)}
	if err := st.Commit(context.Background(), &store.Batch{Now: now, Enqueues: []*store.Enqueue{e}}); err != nil || e.Err != nil {
		t.Fatal(err, e.Err)
	}
	sub.Drain(7)
	i := waitReport(7)
	mb.mu.Lock()
	pushes := append([]router.Push(nil), mb.pushes...)
	mb.mu.Unlock()
	var reports, before int
	for j, p := range pushes {
		if p.Drained {
			reports++
		}
		if p.Message != nil && j < i {
			before++
		}
	}
	if before != 1 || reports != 2 {
		t.Fatalf("pushes %+v: want the queued item, then the report for Drain 7 (2 reports in all)", pushes)
	}
}

// failingStore fails every Commit while fail is set, writing nothing. It
// fills in the results first, as a store whose final sync failed may have.
type failingStore struct {
	store.Store
	fail atomic.Bool
}

func (f *failingStore) Commit(ctx context.Context, b *store.Batch) error {
	if f.fail.Load() {
		for i, e := range b.Enqueues {
			e.Queued = []store.Message{{Seq: uint64(1000 + i), To: bob, From: e.From, Payload: e.Payload, Expires: e.Expires}}
		}
		for i, g := range b.GroupSends {
			g.Queued = []store.Message{{Seq: uint64(2000 + i), To: bob, From: g.From, Payload: g.Payload, Expires: g.Expires}}
		}
		return errors.New("disk gone")
	}
	return f.Store.Commit(ctx, b)
}

// A commit that fails is reported to every sender as a failure, never as
// an acknowledgement, and nothing of it is pushed; once the store works
// again, the same sends are acknowledged and delivered.
func TestFailedCommitIsReportedNotDelivered(t *testing.T) {
	fs := &failingStore{}
	errs := &errorLog{}
	r := setup(t, router.Config{Logger: slog.New(errs)}, func(s store.Store) store.Store { fs.Store = s; return fs })
	mb := newMailbox()
	sub := r.Attach(bob, mb)
	defer sub.Detach()
	sendErr := func(id byte) error {
		done := make(chan error, 1)
		r.Send(&store.Enqueue{From: alice, ClientID: [16]byte{id}, To: "bob", Payload: []byte("x"), Expires: time.Now().Add(time.Hour)}, func(e *store.Enqueue, err error) {
			if err == nil {
				err = e.Err
			}
			done <- err
		})
		return <-done
	}
	groupErr := func() error {
		done := make(chan error, 1)
		r.GroupSend(&store.GroupSend{From: alice, ClientID: [16]byte{9}, Group: [16]byte{1}, Payload: []byte("g"), To: []store.DeviceAddr{bob}, Expires: time.Now().Add(time.Hour)}, func(err error) { done <- err })
		return <-done
	}
	fs.fail.Store(true)
	if err := sendErr(1); err == nil {
		t.Fatal("a send whose commit failed was acknowledged")
	}
	if err := groupErr(); err == nil {
		t.Fatal("a group send whose commit failed was acknowledged")
	}
	// A commit's pushes are made before its callbacks: once the router
	// is idle, whatever it would push from those commits is here.
	waitIdle(t, sub)
	if got := mb.messages(); len(got) != 0 {
		t.Fatalf("pushed %v from a failed commit", got)
	}
	// Each failed commit is logged for the operator; good ones are not.
	if n := errs.count(); n != 2 {
		t.Fatalf("%d errors logged for two failed commits", n)
	}
	fs.fail.Store(false)
	if err := sendErr(1); err != nil {
		t.Fatalf("the same send once the store works: %v", err)
	}
	if err := groupErr(); err != nil {
		t.Fatalf("the same group send once the store works: %v", err)
	}
	mb.waitFor(t, sub, 2)
	if n := errs.count(); n != 2 {
		t.Fatalf("%d errors logged after two good commits, want the 2 of the failed ones", n)
	}
}

// errorLog is a slog handler that counts records of level Error.
type errorLog struct{ n atomic.Int64 }

func (e *errorLog) Enabled(context.Context, slog.Level) bool { return true }
func (e *errorLog) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		e.n.Add(1)
	}
	return nil
}
func (e *errorLog) WithAttrs([]slog.Attr) slog.Handler { return e }
func (e *errorLog) WithGroup(string) slog.Handler      { return e }
func (e *errorLog) count() int64                       { return e.n.Load() }

// The windows are exact: with Window pushes unacknowledged, or exactly
// WindowBytes, the next push waits; an ack lets it go.
func TestWindowBoundsAreExact(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  router.Config
		size int
	}{
		{"count", router.Config{Window: 2}, 10},
		{"bytes", router.Config{WindowBytes: 1000}, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := setup(t, tc.cfg)
			mb := newMailbox()
			sub := r.Attach(bob, mb)
			defer sub.Detach()
			for range 3 {
				send(t, r, make([]byte, tc.size))
			}
			seqs := mb.waitFor(t, sub, 2)
			waitIdle(t, sub)
			if n := len(mb.messages()); n != 2 {
				t.Fatalf("%d pushed with the window full, want 2", n)
			}
			if err := sub.Ack(seqs[:1]); err != nil {
				t.Fatal(err)
			}
			mb.waitFor(t, sub, 3)
		})
	}
}

// pumpFirst is a store whose Commit, once it has committed, lets the
// subscription's pump read and push what it committed before the
// committer offers it: the order a busy router can see.
type pumpFirst struct {
	store.Store
	sub atomic.Pointer[router.Subscription]
	t   *testing.T
}

func (p *pumpFirst) Commit(ctx context.Context, b *store.Batch) error {
	err := p.Store.Commit(ctx, b)
	if sub := p.sub.Load(); sub != nil && err == nil && len(b.Enqueues) > 0 {
		sub.Drain(1)
		waitIdle(p.t, sub)
	}
	return err
}

// A message the pump has already pushed is not pushed again when the
// committer offers it.
func TestMessagePumpedBeforeItsOfferIsPushedOnce(t *testing.T) {
	pf := &pumpFirst{t: t}
	r := setup(t, router.Config{}, func(s store.Store) store.Store { pf.Store = s; return pf })
	mb := newMailbox()
	sub := r.Attach(bob, mb)
	defer sub.Detach()
	mustDrained(t, mb)
	pf.sub.Store(sub)
	send(t, r, []byte("once"))
	waitIdle(t, sub)
	if got := mb.messages(); len(got) != 1 {
		t.Fatalf("pushed %v, want the message once", got)
	}
}

// SendEphemeral counts the devices that took the envelope: every
// connected device of the user but the sender's, only those with a
// payload of their own when there are per-device payloads.
func TestSendEphemeralCountsTheDevicesThatTookIt(t *testing.T) {
	r := setup(t, router.Config{})
	bob2 := store.DeviceAddr{User: "bob", Device: 2}
	for _, d := range []store.DeviceAddr{bob, bob2} {
		sub := r.Attach(d, newMailbox())
		defer sub.Detach()
	}
	if n := r.SendEphemeral("bob", &router.Ephemeral{From: alice, Payload: []byte("typing")}); n != 2 {
		t.Errorf("to both of bob's devices: %d, want 2", n)
	}
	if n := r.SendEphemeral("bob", &router.Ephemeral{From: bob, Payload: []byte("read")}); n != 1 {
		t.Errorf("from bob's device 1 to his other: %d, want 1", n)
	}
	if n := r.SendEphemeral("bob", &router.Ephemeral{From: alice, Payloads: map[uint32][]byte{2: []byte("x"), 9: []byte("y")}}); n != 1 {
		t.Errorf("per-device payloads for device 2 and an absent 9: %d, want 1", n)
	}
	if n := r.SendEphemeral("carol", &router.Ephemeral{From: alice, Payload: []byte("typing")}); n != 0 {
		t.Errorf("to a user with no device connected: %d, want 0", n)
	}
}

// Drained comes after the whole backlog, not after a read that filled the
// window with more still queued.
func TestDrainedComesAfterTheWholeBacklog(t *testing.T) {
	r := setup(t, router.Config{Window: 4})
	for range 6 {
		send(t, r, []byte("queued"))
	}
	mb := newMailbox()
	sub := r.Attach(bob, mb)
	defer sub.Detach()
	seqs := mb.waitFor(t, sub, 4)
	waitIdle(t, sub)
	if mb.drained() {
		t.Fatal("Drained with 2 of 6 queued items not yet pushed")
	}
	if err := sub.Ack(seqs); err != nil {
		t.Fatal(err)
	}
	mb.waitFor(t, sub, 6)
	mustDrained(t, mb)
}

// A group change reaches the connected devices of the users it notifies
// as it is committed; a refused one (it does not extend the head) reaches
// nobody.
func TestGroupChangeReachesConnectedDevices(t *testing.T) {
	r := setup(t, router.Config{})
	mb := newMailbox()
	sub := r.Attach(bob, mb)
	defer sub.Detach()
	mustDrained(t, mb)
	change := func(body string) *store.GroupChange {
		gc := &store.GroupChange{From: alice, Group: [16]byte{7}, Change: []byte(body), State: []byte("state"), Notify: []string{"alice", "bob"}}
		done := make(chan error, 1)
		r.GroupChange(gc, func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		return gc
	}
	if gc := change("create"); gc.Err != nil {
		t.Fatal(gc.Err)
	}
	mb.waitFor(t, sub, 1)
	if gc := change("create again"); !errors.Is(gc.Err, store.ErrConflict) {
		t.Fatalf("a second creation: %v, want ErrConflict", gc.Err)
	}
	waitIdle(t, sub)
	if n := len(mb.messages()); n != 1 {
		t.Fatalf("%d pushed, want the one accepted change", n)
	}
}
