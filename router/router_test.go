package router_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
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

// waitFor waits until n messages have been pushed, then checks that no more
// arrive for a moment.
func (m *mailbox) waitFor(t *testing.T, n int) []uint64 {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for len(m.messages()) < n {
		select {
		case <-m.changed:
		case <-deadline:
			t.Fatalf("%d messages pushed, want %d", len(m.messages()), n)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if got := m.messages(); len(got) != n {
		t.Fatalf("%d messages pushed, want exactly %d", len(got), n)
	}
	return m.messages()
}

var (
	alice = store.DeviceAddr{User: "alice", Device: 1}
	bob   = store.DeviceAddr{User: "bob", Device: 1}
)

func setup(t *testing.T, cfg router.Config) *router.Router {
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
	cfg.Store = st
	r := router.New(cfg)
	t.Cleanup(r.Close)
	return r
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
	seqs := mb.waitFor(t, 4)
	// Acks for items never pushed do not open the window.
	if err := sub.Ack([]uint64{999_999}); err != nil {
		t.Fatal(err)
	}
	mb.waitFor(t, 4)
	if err := sub.Ack(seqs[:2]); err != nil {
		t.Fatal(err)
	}
	mb.waitFor(t, 6)
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
	seqs := mb.waitFor(t, 1)
	sub.Ack(seqs[:1])
	// Then pushes go on while fewer than 1000 bytes are unacknowledged:
	// 600 (0 before it), 600 (600 before it); the third waits.
	seqs = mb.waitFor(t, 3)
	sub.Ack(seqs[1:3])
	mb.waitFor(t, 4)
}

func TestSupersede(t *testing.T) {
	r := setup(t, router.Config{})
	first, second := newMailbox(), newMailbox()
	r.Attach(bob, first)
	sub := r.Attach(bob, second)
	defer sub.Detach()
	if !first.superseded {
		t.Fatal("first connection not told it was superseded")
	}
	send(t, r, []byte("x"))
	second.waitFor(t, 1)
	if n := len(first.messages()); n != 0 {
		t.Fatalf("superseded connection got %d pushes", n)
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

// Under load a small batch waits CommitDelay for company; an idle router
// commits at once.
func TestCommitDelay(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	r := setup(t, router.Config{
		CommitDelay: 300 * time.Millisecond,
		OnCommit: func(ops int, _ time.Duration, _ error) {
			mu.Lock()
			sizes = append(sizes, ops)
			mu.Unlock()
		},
	})
	// Idle: no commit in the last 10 × CommitDelay, so no wait.
	start := time.Now()
	send(t, r, []byte("first"))
	if d := time.Since(start); d >= 300*time.Millisecond {
		t.Errorf("an idle router took %v to commit one send", d)
	}
	// Load: sends 10 ms apart right after a commit share one.
	results := make(chan error, 3)
	for i := range 3 {
		var id [16]byte
		id[0] = byte(i + 1)
		r.Send(&store.Enqueue{From: alice, ClientID: id, To: "bob", Payload: []byte("x")}, func(e *store.Enqueue, err error) {
			if err == nil {
				err = e.Err
			}
			results <- err
		})
		time.Sleep(10 * time.Millisecond)
	}
	for range 3 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 2 || sizes[0] != 1 || sizes[1] != 3 {
		t.Errorf("commits of %v operations, want [1 3]", sizes)
	}
}
