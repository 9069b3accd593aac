package client_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/censor"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/transport/obfs"
)

// The censor acts on the path a conversation is using, in the middle of
// it: alice sends bob a message every 250 ms, and bob only receives, as
// `magpie listen` does (with its keepalive). Both must leave the path
// (the sender by its stalled requests, the recipient by its unanswered
// pings), remember it as blocked, and carry on through another endpoint,
// with no gap of 5 s or more between messages at bob, and every message
// shown exactly once. Plain tcp, offered but not marked safe, is never
// dialled.

func TestEscapesABlackHoleOnThePathInUse(t *testing.T) {
	escape(t, censor.PathBlackhole, 0, 0, true)
}

func TestEscapesResetsOnThePathInUse(t *testing.T) {
	escape(t, censor.PathReset, 0, 0, true)
}

// A throttle to 20 KB/s that the conversation fits in (short texts): the
// path still carries it, and the clients keep it.
func TestKeepsAThrottledPathThatCarriesTheConversation(t *testing.T) {
	escape(t, censor.PathThrottle, 20<<10, 0, false)
}

// The same throttle, and 6 KB texts (24 KB/s, more than the policed path
// carries): the sender's backlog and the recipient's late pushes show the
// path too slow, and both leave it.
func TestEscapesAThrottleTooSlowForTheConversation(t *testing.T) {
	escape(t, censor.PathThrottle, 20<<10, 6000, true)
}

// Timings of the conversation under censorship.
const (
	escapeEvery  = 250 * time.Millisecond // alice's pace
	escapeBefore = time.Second            // sending before the censor acts
	escapeDuring = 7 * time.Second        // sending after it acts
	escapeBound  = 5 * time.Second        // the longest gap allowed at bob
)

// censorPath puts a Path in front of e and returns the endpoint through it.
func censorPath(t testing.TB, e endpoints.Endpoint, priority int) (*censor.Path, endpoints.Endpoint) {
	t.Helper()
	p, err := censor.NewPath(e.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	e.Address, e.Priority = p.Addr(), priority
	return p, e
}

// stamped is an event's time.
type stamped struct {
	at time.Time
	ev client.Event
}

// record keeps sub's events, timed, until the test ends.
func record(t testing.TB, sub *client.Subscription) func() []stamped {
	var mu sync.Mutex
	var evs []stamped
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range sub.Events() {
			mu.Lock()
			evs = append(evs, stamped{time.Now(), ev})
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		sub.Close()
		<-done
	})
	return func() []stamped {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(evs)
	}
}

// escape runs the conversation: texts of size bytes (short ones for 0),
// the censor's action at rate, and whether the clients must leave the
// path (or keep it).
func escape(t *testing.T, action censor.PathAction, rate, size int, leave bool) {
	s, pub := publishingServer(t, server.Config{})
	direct := s.TransportEndpoints(t, obfs.Config{})
	inUse, first := censorPath(t, direct["obfs"], 0)
	other, second := censorPath(t, direct["tls"], 5)
	// A third way, never used: once the first is found blocked, it goes
	// behind even this one.
	_, third := censorPath(t, direct["obfs"], 10)
	// Plain tcp comes first by priority, and is not marked safe.
	plain, tcpEp := censorPath(t, direct["tcp"], -10)
	pub.set(t, tcpEp, first, second, third)
	inv := pub.invite(t, s)
	alice := newUser(t, inv, "alice", client.Options{})
	bob := newUser(t, inv, "bob", client.Options{Keepalive: 1500 * time.Millisecond}) // as listen
	aliceEvents, bobEvents := record(t, alice.Subscribe()), record(t, bob.Subscribe())
	runOnline(t, alice)
	runOnline(t, bob)
	for _, c := range []*client.Client{alice, bob} {
		if st := c.Status(); st.Endpoint != first.Key() {
			t.Fatalf("online through %s, want the first stealthy endpoint %s", st.Endpoint, first.Key())
		}
	}

	var sent []string
	tick := time.NewTicker(escapeEvery)
	defer tick.Stop()
	var actedAt time.Time
	for start := time.Now(); time.Since(start) < escapeBefore+escapeDuring; <-tick.C {
		if actedAt.IsZero() && time.Since(start) >= escapeBefore {
			inUse.Set(action, rate)
			actedAt = time.Now()
		}
		text := fmt.Sprintf("m%03d", len(sent))
		if size > 0 {
			text += strings.Repeat(".", size-len(text))
		}
		send(t, alice, "bob", text)
		sent = append(sent, text)
	}
	// Everything arrives.
	var got []stamped
	waitFor(t, "every message at bob", func() bool {
		got = got[:0]
		for _, e := range bobEvents() {
			if e.ev.Kind == client.EventMessage && !e.ev.Message.Outgoing {
				got = append(got, e)
			}
		}
		return len(got) >= len(sent)
	})

	// Exactly once, in the events and in the history.
	var shown []string
	for _, e := range got {
		shown = append(shown, e.ev.Message.Text)
	}
	slices.Sort(shown)
	if !slices.Equal(shown, sent) {
		t.Fatalf("bob was shown %d messages %v, want each of %d once", len(shown), shown, len(sent))
	}
	if h := texts(history(t, bob, "alice")); len(h) != len(sent) {
		t.Fatalf("bob's history has %d messages, want %d", len(h), len(sent))
	}

	// The gaps at bob.
	var longest, firstAfter time.Duration
	for i := 1; i < len(got); i++ {
		longest = max(longest, got[i].at.Sub(got[i-1].at))
	}
	for _, e := range got {
		if e.at.After(actedAt) {
			firstAfter = e.at.Sub(actedAt)
			break
		}
	}
	moved := func(evs []stamped) time.Duration {
		for _, e := range evs {
			if e.at.After(actedAt) && e.ev.Kind == client.EventState && e.ev.Status.State == client.ConnOnline && e.ev.Status.Endpoint != first.Key() {
				return e.at.Sub(actedAt)
			}
		}
		return -1
	}
	aliceMoved, bobMoved := moved(aliceEvents()), moved(bobEvents())
	t.Logf("| %s %d | %v | %v | %v | %v (bob moved after) | %d messages, each once |", action, rate,
		fmtMoved(aliceMoved), firstAfter.Round(10*time.Millisecond), longest.Round(10*time.Millisecond), fmtMoved(bobMoved), len(sent))
	if longest >= escapeBound {
		t.Errorf("longest gap between messages at bob %v, want under %v", longest, escapeBound)
	}
	if plain.Flows() != 0 {
		t.Errorf("%d connections walked into plain tcp, which is not marked safe", plain.Flows())
	}
	if !leave {
		if aliceMoved >= 0 || bobMoved >= 0 {
			t.Fatalf("left a path that carried the conversation: alice after %v, bob after %v", aliceMoved, bobMoved)
		}
		return
	}
	if aliceMoved < 0 || bobMoved < 0 {
		t.Fatalf("still on the censored path: alice moved after %v, bob after %v", aliceMoved, bobMoved)
	}
	switch action {
	case censor.PathBlackhole:
		// The recipient, which only receives, notices about as soon as
		// the sender, whose request stalls.
		if bobMoved > aliceMoved+time.Second {
			t.Errorf("bob left the black hole %v after alice", bobMoved-aliceMoved)
		}
	case censor.PathReset:
		// A reset is no reason to wait out a backoff (0.5 s at least).
		if max(aliceMoved, bobMoved) >= 450*time.Millisecond {
			t.Errorf("after resets, alice moved after %v and bob after %v: a backoff was waited", aliceMoved, bobMoved)
		}
	}
	if other.Flows() == 0 {
		t.Fatal("nothing went through the other endpoint")
	}
	// The choice is remembered: the censored path is now tried last,
	// after one that never worked.
	for _, c := range []*client.Client{alice, bob} {
		order, err := c.Endpoints(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if order[len(order)-1].Key() != first.Key() {
			t.Errorf("dial order after the censor acted: %v, want %s last", keys(order), first.Key())
		}
	}
}

func fmtMoved(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return d.Round(10 * time.Millisecond).String()
}

func keys(eps []endpoints.Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.Key())
	}
	return out
}

// A censor that drops what the client sends, while the server's pushes
// still arrive: the pushes do not prove the path alive to a request whose
// answer never comes, and the sender leaves within the stall timeout.
func TestPushesDoNotKeepAStalledPathAlive(t *testing.T) {
	s, pub := publishingServer(t, server.Config{})
	direct := s.TransportEndpoints(t, obfs.Config{})
	inUse, first := censorPath(t, direct["obfs"], 0)
	_, second := censorPath(t, direct["tls"], 5)
	pub.set(t, first, second)
	inv := pub.invite(t, s)
	alice := newUser(t, inv, "alice", client.Options{})
	bob := newUser(t, inv, "bob", client.Options{})
	// bob goes the other way.
	bob.ReorderByProbe(testCtx(t), []client.ProbeResult{{Endpoint: second, Verdict: client.VerdictOK}, {Endpoint: first, Verdict: client.VerdictTimeout}})
	bsub := subscribe(t, bob)
	runOnline(t, alice)
	runOnline(t, bob)
	if a, b := alice.Status().Endpoint, bob.Status().Endpoint; a != first.Key() || b != second.Key() {
		t.Fatalf("alice through %s, bob through %s", a, b)
	}
	send(t, alice, "bob", "before")
	waitMessage(t, bsub, "alice", "before")

	// bob types at alice, and the server pushes it to her, all along.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				bob.Typing(testCtx(t), "alice", true)
			}
		}
	})
	defer func() {
		close(stop)
		wg.Wait()
	}()
	inUse.Set(censor.PathDropUp, 0)
	cut := time.Now()
	send(t, alice, "bob", "during")
	waitMessage(t, bsub, "alice", "during")
	took := time.Since(cut)
	t.Logf("through another endpoint %v after alice's packets were dropped", took.Round(10*time.Millisecond))
	if took >= escapeBound {
		t.Fatalf("the message took %v, want under %v", took, escapeBound)
	}
}
