package signuppow

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var dev = [32]byte{1, 2, 3}

// clock is a settable clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func solve(t *testing.T, ch []byte, name string, device [32]byte) uint64 {
	t.Helper()
	n, err := Solve(context.Background(), ch, name, device)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A genuine solution is accepted once; every way of getting one wrong is
// refused with the error that says so.
func TestVerify(t *testing.T) {
	clk := &clock{time.Unix(1_800_000_000, 0)}
	is := NewIssuer(Options{TTL: time.Minute, Now: clk.now})
	ch := is.Issue(10)
	n := solve(t, ch, "alice", dev)

	// Wrong in each bound part: name, device, counter. Each stand-in is
	// one the counter does not happen to solve as well (at 10 bits, one
	// in 1,024 would).
	otherName := "alicf"
	for i := 0; Check(ch, otherName, dev, n); i++ {
		otherName = fmt.Sprintf("alice%d", i)
	}
	if err := is.Verify(ch, otherName, dev, n, 10); !errors.Is(err, ErrWrong) {
		t.Errorf("other username: %v, want ErrWrong", err)
	}
	otherDev := [32]byte{9}
	for Check(ch, "alice", otherDev, n) {
		otherDev[1]++
	}
	if err := is.Verify(ch, "alice", otherDev, n, 10); !errors.Is(err, ErrWrong) {
		t.Errorf("other device key: %v, want ErrWrong", err)
	}
	bad := n + 1
	for Check(ch, "alice", dev, bad) {
		bad++
	}
	if err := is.Verify(ch, "alice", dev, bad, 10); !errors.Is(err, ErrWrong) {
		t.Errorf("wrong counter: %v, want ErrWrong", err)
	}
	// The difficulty is the MAC's to vouch for.
	easier := append([]byte(nil), ch...)
	easier[1] = 0
	if err := is.Verify(easier, "alice", dev, n, 0); !errors.Is(err, ErrForged) {
		t.Errorf("lowered difficulty: %v, want ErrForged", err)
	}
	if err := NewIssuer(Options{Now: clk.now}).Verify(ch, "alice", dev, n, 10); !errors.Is(err, ErrForged) {
		t.Errorf("another issuer's challenge: %v, want ErrForged", err)
	}
	if err := is.Verify(ch[:len(ch)-1], "alice", dev, n, 10); !errors.Is(err, ErrMalformed) {
		t.Errorf("short challenge: %v, want ErrMalformed", err)
	}
	if err := is.Verify(ch, "alice", dev, n, 11); !errors.Is(err, ErrTooEasy) {
		t.Errorf("challenge below the current difficulty: %v, want ErrTooEasy", err)
	}
	// Genuine: accepted, once.
	if err := is.Verify(ch, "alice", dev, n, 10); err != nil {
		t.Fatalf("genuine solution refused: %v", err)
	}
	if err := is.Verify(ch, "alice", dev, n, 10); !errors.Is(err, ErrUsed) {
		t.Errorf("replayed: %v, want ErrUsed", err)
	}
	// Expired.
	ch2 := is.Issue(4)
	n2 := solve(t, ch2, "bob", dev)
	clk.t = clk.t.Add(time.Minute)
	if err := is.Verify(ch2, "bob", dev, n2, 0); !errors.Is(err, ErrExpired) {
		t.Errorf("expired: %v, want ErrExpired", err)
	}
}

// A full spent set neither forgets spent challenges (replays) nor refuses
// fresh ones: the oldest are refused as expired instead.
func TestSpentSetFull(t *testing.T) {
	clk := &clock{time.Unix(1_800_000_000, 0)}
	is := NewIssuer(Options{TTL: time.Hour, MaxUsed: 16, Now: clk.now})
	type sol struct {
		ch []byte
		n  uint64
	}
	var spent []sol
	for i := range 40 {
		ch := is.Issue(2)
		n := solve(t, ch, "alice", dev)
		if err := is.Verify(ch, "alice", dev, n, 0); err != nil {
			t.Fatalf("fresh challenge %d refused: %v", i, err)
		}
		spent = append(spent, sol{ch, n})
		clk.t = clk.t.Add(time.Second)
	}
	if len(is.used) > 16 {
		t.Errorf("spent set holds %d, bound 16", len(is.used))
	}
	for i, s := range spent {
		if err := is.Verify(s.ch, "alice", dev, s.n, 0); !errors.Is(err, ErrUsed) && !errors.Is(err, ErrExpired) {
			t.Errorf("spent challenge %d accepted again: %v", i, err)
		}
	}
}

func TestSolveCancelled(t *testing.T) {
	is := NewIssuer(Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := Solve(ctx, is.Issue(MaxBits), "alice", dev)
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Solve of a 40-bit puzzle with 20 ms: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Solve went on 5 s after its context ended")
	}
}

func TestBits(t *testing.T) {
	for _, c := range []struct {
		debts []float64
		want  int
	}{
		{nil, 18},
		{[]float64{0, 0}, 18},
		{[]float64{-3}, 18},
		{[]float64{1}, 19},
		{[]float64{3}, 20},
		{[]float64{4}, 21},
		{[]float64{0.5, 1}, 20},
		{[]float64{1e9}, 26},
	} {
		if got := Bits(18, 26, c.debts...); got != c.want {
			t.Errorf("Bits(18, 26, %v) = %d, want %d", c.debts, got, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(NewIssuer(Options{}).Issue(20))
	f.Add([]byte{1, 41})
	is := NewIssuer(Options{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		if c.Bits > MaxBits || len(b) != ChallengeSize {
			t.Fatalf("Parse accepted %x as %+v", b, c)
		}
		// Only the issuer's own challenges verify.
		if err := is.Verify(b, "alice", dev, 0, 0); err == nil || !errors.Is(err, ErrForged) {
			t.Fatalf("Verify of fuzzed %x: %v", b, err)
		}
	})
}

// BenchmarkSolve measures the time to solve a puzzle of each difficulty
// with every core (docs/SECURITY.md); the expected work is 2^bits hashes,
// so run it with -benchtime to average over several puzzles:
//
//	go test ./internal/signuppow -run '^$' -bench Solve -benchtime 20x
func BenchmarkSolve(b *testing.B) {
	is := NewIssuer(Options{})
	for _, bits := range []int{12, 18, 20, 22, 24, 26} {
		b.Run(fmt.Sprintf("bits=%d", bits), func(b *testing.B) {
			for b.Loop() {
				if _, err := Solve(context.Background(), is.Issue(bits), "alice", dev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHash is one hash: the server's cost to check a solution.
func BenchmarkHash(b *testing.B) {
	ch := NewIssuer(Options{}).Issue(20)
	p := append(prefix(ch, "alice", dev), make([]byte, 8)...)
	for i := uint64(0); b.Loop(); i++ {
		zeroBits(p, i)
	}
}

// The wire's size check is this package's size.
var _ = [1]struct{}{}[wire.PoWChallengeSize-ChallengeSize]
