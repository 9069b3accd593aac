// Package signupcodestest is the conformance suite of signupcodes.Codes,
// run against the data directory's Book and PostgreSQL's (pgcodes).
package signupcodestest

import (
	"sync"
	"testing"

	"github.com/magpie-im/magpie/internal/signupcodes"
)

// Run runs the suite. newBooks returns two views of one new, empty book
// for t, as two server processes have them (or one value twice).
func Run(t *testing.T, newBooks func(t *testing.T) (a, b signupcodes.Codes)) {
	t.Run("SpentOnceEach", func(t *testing.T) {
		a, _ := newBooks(t)
		testSpentOnceEach(t, a)
	})
	t.Run("ConcurrentTakes", func(t *testing.T) {
		a, b := newBooks(t)
		concurrentTakes(t, a, b, 5, 20)
	})
	t.Run("OneUseTwoTakers", func(t *testing.T) {
		// The cluster's case: two sign-ups with one code of one use,
		// through two processes at once, many times over.
		a, b := newBooks(t)
		for range 20 {
			concurrentTakes(t, a, b, 1, 2)
		}
	})
}

func testSpentOnceEach(t *testing.T, b signupcodes.Codes) {
	code, err := b.Add(2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, ok, err := b.Take(code); !ok || err != nil {
			t.Fatalf("use %d of 2: %v %v", i+1, ok, err)
		}
	}
	if _, ok, err := b.Take(code); ok || err != nil {
		t.Fatalf("a third use of 2: %v %v", ok, err)
	}
	if _, ok, _ := b.Take([]byte("0123456789abcdef")); ok {
		t.Fatal("an unknown code was taken")
	}
	if _, ok, _ := b.Take(nil); ok {
		t.Fatal("no code was taken")
	}
	// A refund gives the use back, once.
	one, _ := b.Add(1)
	refund, ok, err := b.Take(one)
	if !ok || err != nil {
		t.Fatal(ok, err)
	}
	refund()
	if _, ok, _ := b.Take(one); !ok {
		t.Fatal("a refunded use was not there")
	}
	if _, ok, _ := b.Take(one); ok {
		t.Fatal("a code of one use, refunded once, was taken a third time")
	}
	for _, uses := range []int{0, -1, signupcodes.MaxUses + 1} {
		if _, err := b.Add(uses); err == nil {
			t.Fatalf("a code for %d accounts", uses)
		}
	}
	// The bound is inclusive: a code for MaxUses accounts is made, and
	// takes.
	most, err := b.Add(signupcodes.MaxUses)
	if err != nil {
		t.Fatalf("a code for MaxUses (%d) accounts: %v", signupcodes.MaxUses, err)
	}
	if _, ok, err := b.Take(most); !ok || err != nil {
		t.Fatalf("a code for MaxUses accounts: %v %v", ok, err)
	}
}

// concurrentTakes spends a code of uses uses from takers goroutines at
// once, alternately through a and b, and checks that it was taken exactly
// uses times; then that a refund lets exactly one more take through.
func concurrentTakes(t *testing.T, a, b signupcodes.Codes, uses, takers int) {
	code, err := a.Add(uses)
	if err != nil {
		t.Fatal(err)
	}
	take := func(n int) (taken int, refunds []func()) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				refund, ok, err := []signupcodes.Codes{a, b}[i%2].Take(code)
				if err != nil {
					t.Error(err)
				}
				if ok {
					mu.Lock()
					taken++
					refunds = append(refunds, refund)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return taken, refunds
	}
	taken, refunds := take(takers)
	if taken != uses {
		t.Fatalf("a code of %d uses was taken %d times", uses, taken)
	}
	refunds[0]()
	if n, _ := take(takers); n != 1 {
		t.Fatalf("after one refund, %d more takes, want 1", n)
	}
}
