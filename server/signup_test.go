package server_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/internal/signuppow"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/server"
)

// lowPoW keeps the puzzles of tests fast: 2^8 hashes.
var lowPoW = server.SignupPoW{MinBits: 8, MaxBits: 12}

// challenge fetches a sign-up puzzle on c.
func challenge(t *testing.T, c *clientconn.Conn) ([]byte, signuppow.Challenge) {
	t.Helper()
	ch, err := c.SignupChallenge(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	p, err := signuppow.Parse(ch)
	if err != nil {
		t.Fatalf("challenge %x: %v", ch, err)
	}
	return ch, p
}

func solveFor(t *testing.T, ch []byte, name string, key link.KeyPair) uint64 {
	t.Helper()
	n, err := signuppow.Solve(ctx(t), ch, name, key.Public)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// refused checks that a registration was refused for its proof of work,
// with a message saying why.
func refused(t *testing.T, what string, err error, why string) {
	t.Helper()
	var se *clientconn.ServerError
	if !errors.Is(err, clientconn.ErrPoWRequired) || !errors.As(err, &se) || !strings.Contains(se.Message, why) {
		t.Errorf("%s: %v, want POW_REQUIRED saying %q", what, err, why)
	}
}

// A server run with --signup pow opens an account only for a solution of
// its own, unexpired, unused puzzle, solved for that username and that
// device key; a genuine one is accepted.
func TestSignupPoWChecks(t *testing.T) {
	var skew atomic.Int64
	s := servertest.Start(t, server.Config{SignupPoW: &lowPoW, Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	key := servertest.NewKey(t)
	c := s.Dial(t, key)

	_, err := c.RegisterSolved(ctx(t), "alice", nil, nil, 0)
	refused(t, "no solution", err, "solve a puzzle")

	ch, p := challenge(t, c)
	if p.Bits != lowPoW.MinBits || time.Until(p.Expires) < 9*time.Minute {
		t.Errorf("a quiet server's puzzle: %d bits, expiring in %v; want %d bits, 10 minutes", p.Bits, time.Until(p.Expires), lowPoW.MinBits)
	}
	n := solveFor(t, ch, "alice", key)
	// Stand-ins the counter does not happen to solve too (at 8 bits, one
	// in 256 would).
	other := "mallory"
	for i := 0; signuppow.Check(ch, other, key.Public, n); i++ {
		other = fmt.Sprintf("mallory%d", i)
	}
	_, err = c.RegisterSolved(ctx(t), other, nil, ch, n)
	refused(t, "solved for another username", err, "wrong")
	bad := n + 1
	for signuppow.Check(ch, "alice", key.Public, bad) {
		bad++
	}
	_, err = c.RegisterSolved(ctx(t), "alice", nil, ch, bad)
	refused(t, "wrong counter", err, "wrong")
	easier := append([]byte(nil), ch...)
	easier[1] = 0
	_, err = c.RegisterSolved(ctx(t), "alice", nil, easier, n)
	refused(t, "difficulty lowered", err, "not issued")
	// Another device (key) with alice's solution.
	thiefKey := servertest.NewKey(t)
	for signuppow.Check(ch, "alice", thiefKey.Public, n) {
		thiefKey = servertest.NewKey(t)
	}
	thief := s.Dial(t, thiefKey)
	_, err = thief.RegisterSolved(ctx(t), "alice", nil, ch, n)
	refused(t, "solved for another device key", err, "wrong")

	if _, err := c.RegisterSolved(ctx(t), "Alice", nil, ch, n); err != nil {
		t.Fatalf("a genuine solution (for the normalized name) was refused: %v", err)
	}

	// Used: a puzzle spent on a name that was taken is spent.
	late := servertest.NewKey(t)
	lc := s.Dial(t, late)
	ch, _ = challenge(t, lc)
	n = solveFor(t, ch, "alice", late)
	if _, err := lc.RegisterSolved(ctx(t), "alice", nil, ch, n); !errors.Is(err, clientconn.ErrUsernameTaken) {
		t.Fatalf("alice again: %v, want ErrUsernameTaken", err)
	}
	_, err = lc.RegisterSolved(ctx(t), "alice", nil, ch, n)
	refused(t, "replayed", err, "used")

	// Expired.
	ch, _ = challenge(t, lc)
	n = solveFor(t, ch, "bob", late)
	skew.Store(int64(10*time.Minute + time.Second))
	_, err = lc.RegisterSolved(ctx(t), "bob", nil, ch, n)
	refused(t, "expired", err, "expired")
	skew.Store(0)

	// The client does all of it by itself.
	var told int
	if _, err := lc.RegisterWith(ctx(t), "bob", clientconn.RegisterOptions{OnPuzzle: func(bits int) { told = bits }}); err != nil {
		t.Fatalf("RegisterWith on a pow server: %v", err)
	}
	if told != lowPoW.MinBits {
		t.Errorf("OnPuzzle told %d bits, want %d", told, lowPoW.MinBits)
	}
}

// Puzzles cost the server little but are still bounded: per connection and
// per source network. A server not asking for proof of work says so with
// an empty challenge.
func TestSignupPoWChallengeLimits(t *testing.T) {
	cfg := lowPoW
	cfg.ChallengesPerConn, cfg.ChallengeBurst, cfg.ChallengeRate = 3, 5, rate.Every(time.Hour)
	s := servertest.Start(t, server.Config{SignupPoW: &cfg})
	c := s.Dial(t, servertest.NewKey(t))
	for range 3 {
		challenge(t, c)
	}
	if _, err := c.SignupChallenge(ctx(t)); !errors.Is(err, clientconn.ErrRateLimited) || !strings.Contains(err.Error(), "connection") {
		t.Fatalf("a fourth puzzle on a connection allowed three: %v", err)
	}
	c2 := s.Dial(t, servertest.NewKey(t))
	challenge(t, c2)
	challenge(t, c2)
	if _, err := c2.SignupChallenge(ctx(t)); !errors.Is(err, clientconn.ErrRateLimited) || !strings.Contains(err.Error(), "network") {
		t.Fatalf("a sixth puzzle from a network allowed five: %v", err)
	}
	c3, err := dialFrom(t, s, "127.0.5.1")
	if err != nil {
		t.Fatal(err)
	}
	challenge(t, c3) // another network's budget

	open := servertest.Start(t, server.Config{})
	if ch, err := open.Dial(t, servertest.NewKey(t)).SignupChallenge(ctx(t)); err != nil || ch != nil {
		t.Fatalf("an open server's challenge: %x, %v; want none", ch, err)
	}
}

// A burst of sign-ups from one network makes its puzzle harder, up to
// the ceiling; other networks feel the server-wide rate only; nobody is
// refused for the rate.
func TestSignupPoWDifficultyRises(t *testing.T) {
	cfg := server.SignupPoW{MinBits: 4, MaxBits: 12, Rate: rate.Every(time.Hour), Burst: 4}
	reg := prometheus.NewRegistry()
	s := servertest.Start(t, server.Config{SignupPoW: &cfg, SignupRate: rate.Every(time.Hour), SignupBurst: 2, Metrics: server.NewMetrics(reg)})
	// A puzzle fetched before the burst, kept to be used after it.
	early, err := dialFrom(t, s, "127.0.3.1")
	if err != nil {
		t.Fatal(err)
	}
	earlyCh, _ := challenge(t, early)
	earlyN := solveFor(t, earlyCh, "early", link.KeyPair{Public: early.PublicKey()})
	var seen []int
	for i := range 24 {
		c, err := dialFrom(t, s, "127.0.3.1")
		if err != nil {
			t.Fatal(err)
		}
		ch, p := challenge(t, c)
		seen = append(seen, p.Bits)
		n, err := signuppow.Solve(ctx(t), ch, fmt.Sprint("flood", i), c.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.RegisterSolved(ctx(t), fmt.Sprint("flood", i), nil, ch, n); err != nil {
			t.Fatalf("sign-up %d of a burst (%d bits): %v", i+1, p.Bits, err)
		}
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] < seen[i-1] {
			t.Fatalf("difficulty fell during a burst: %v", seen)
		}
	}
	if seen[0] != cfg.MinBits || seen[len(seen)-1] != cfg.MaxBits {
		t.Fatalf("difficulty over a burst of 24: %v; want from %d to %d", seen, cfg.MinBits, cfg.MaxBits)
	}
	if got := gather(t, reg, "magpie_signup_puzzle_bits"); got != float64(cfg.MaxBits) {
		t.Errorf("magpie_signup_puzzle_bits = %v after the burst, want %d", got, cfg.MaxBits)
	}
	_, err = early.RegisterSolved(ctx(t), "early", nil, earlyCh, earlyN)
	refused(t, "a puzzle fetched before the burst", err, "easier")
	c, err := dialFrom(t, s, "127.0.4.1")
	if err != nil {
		t.Fatal(err)
	}
	_, p := challenge(t, c)
	if p.Bits <= cfg.MinBits || p.Bits >= cfg.MaxBits {
		t.Fatalf("another network during the burst: %d bits, want between %d and %d (the server-wide rate's share)", p.Bits, cfg.MinBits, cfg.MaxBits)
	}
	t.Logf("burst: %v; another network: %d", seen, p.Bits)
}

// A connection that fetched a puzzle may stay unregistered for as long
// as the puzzle lasts (solving on a slow device may take longer than
// RegisterTimeout), not longer.
func TestSignupPoWSolvingKeepsTheConnection(t *testing.T) {
	cfg := lowPoW
	cfg.TTL = 3 * time.Second
	s := servertest.Start(t, server.Config{SignupPoW: &cfg, RegisterTimeout: 300 * time.Millisecond})
	key := servertest.NewKey(t)
	c := s.Dial(t, key)
	ch, _ := challenge(t, c)
	n := solveFor(t, ch, "slow", key)
	time.Sleep(time.Second)
	if _, err := c.RegisterSolved(ctx(t), "slow", nil, ch, n); err != nil {
		t.Fatalf("registering 1 s after fetching a 3 s puzzle, with a 300 ms RegisterTimeout: %v", err)
	}
	idle := s.Dial(t, servertest.NewKey(t))
	challenge(t, idle)
	time.Sleep(1500 * time.Millisecond)
	challenge(t, idle) // does not extend it again
	select {
	case <-idle.Done():
	case <-time.After(2500 * time.Millisecond):
		t.Fatal("an unregistered connection outlived its first puzzle")
	}
}
