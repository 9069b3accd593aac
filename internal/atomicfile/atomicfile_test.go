package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestWriteReplaces(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	for _, v := range []string{"one", "two"} {
		if err := Write(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(p); string(b) != "two" {
		t.Fatalf("content %q", b)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
}

func TestCreateFirstWriterWins(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	var wg sync.WaitGroup
	results := make([]string, 16)
	created := make([]bool, 16)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, c, err := Create(p, fmt.Appendf(nil, "key-%d", i), 0o600)
			if err != nil {
				t.Error(err)
				return
			}
			results[i], created[i] = string(b), c
		}()
	}
	wg.Wait()
	winners := 0
	for i := range results {
		if results[i] != results[0] {
			t.Fatalf("callers disagree: %q vs %q", results[i], results[0])
		}
		if created[i] {
			winners++
		}
	}
	if b, _ := os.ReadFile(p); winners != 1 || string(b) != results[0] {
		t.Fatalf("%d creators; file %q, callers %q", winners, b, results[0])
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
