package signupcodes_test

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/magpie-im/magpie/internal/signupcodes"
)

func TestCodesAreSpentOnceEach(t *testing.T) {
	b := signupcodes.Book{Dir: t.TempDir()}
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
	// A refund gives the use back.
	one, _ := b.Add(1)
	refund, ok, err := b.Take(one)
	if !ok || err != nil {
		t.Fatal(ok, err)
	}
	refund()
	if _, ok, _ := b.Take(one); !ok {
		t.Fatal("a refunded use was not there")
	}
	// The file holds hashes, not codes.
	data, err := os.ReadFile(filepath.Join(b.Dir, "signup-codes.json"))
	if err != nil || strings.Contains(string(data), string(code)) {
		t.Fatalf("the file: %v", err)
	}
	if _, err := b.Add(0); err == nil {
		t.Fatal("a code for no account")
	}
}

// Concurrent takers (the server's connections, two processes) spend a
// code exactly as many times as it allows.
func TestConcurrentTakes(t *testing.T) {
	b := signupcodes.Book{Dir: t.TempDir()}
	code, err := b.Add(5)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	taken := 0
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, ok, err := b.Take(code); ok && err == nil {
				mu.Lock()
				taken++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if taken != 5 {
		t.Fatalf("a code of 5 uses was taken %d times", taken)
	}
}
