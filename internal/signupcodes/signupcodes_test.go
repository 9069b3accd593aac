package signupcodes_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/internal/flock"
	"github.com/magpie-im/magpie/internal/signupcodes"
	"github.com/magpie-im/magpie/internal/signupcodes/signupcodestest"
)

func TestConformance(t *testing.T) {
	signupcodestest.Run(t, func(t *testing.T) (a, b signupcodes.Codes) {
		dir := t.TempDir()
		return signupcodes.Book{Dir: dir}, signupcodes.Book{Dir: dir}
	})
}

// The file holds hashes, not codes.
func TestFileHoldsHashes(t *testing.T) {
	b := signupcodes.Book{Dir: t.TempDir()}
	code, err := b.Add(2)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(b.Dir, "signup-codes.json"))
	if err != nil || strings.Contains(string(data), string(code)) {
		t.Fatalf("the file: %v", err)
	}
}

// lockedBook returns a new book holding one code of one use, and its lock
// taken as another process (magpie invite --signup) would take it.
func lockedBook(t *testing.T) (signupcodes.Book, []byte, *os.File) {
	t.Helper()
	b := signupcodes.Book{Dir: t.TempDir()}
	code, err := b.Add(1)
	if err != nil {
		t.Fatal(err)
	}
	lock, err := flock.Lock(filepath.Join(b.Dir, "signup-codes.lock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	return b, code, lock
}

// A Take while another process updates the file waits for it, and then
// spends the use.
func TestTakeWaitsForAnotherProcess(t *testing.T) {
	b, code, lock := lockedBook(t)
	pauses := 0
	// The other process finishes during Take's first pause (within the
	// default wait).
	signupcodes.SetPause(t, func() {
		if pauses++; pauses == 1 {
			lock.Close()
		}
	})
	if _, ok, err := b.Take(code); !ok || err != nil {
		t.Fatalf("Take after the other process finished: %v %v", ok, err)
	}
	if pauses != 1 {
		t.Fatalf("Take paused %d times, want 1", pauses)
	}
	if _, ok, _ := b.Take(code); ok {
		t.Fatal("a code of one use was taken twice")
	}
}

// A lock held past the wait fails the call with ErrLocked, and spends
// nothing.
func TestLockHeldTooLongFails(t *testing.T) {
	b, code, lock := lockedBook(t)
	signupcodes.SetLockWait(t, 20*time.Millisecond)
	if _, ok, err := b.Take(code); ok || !errors.Is(err, flock.ErrLocked) {
		t.Fatalf("Take under a held lock: %v %v, want ErrLocked", ok, err)
	}
	lock.Close()
	if _, ok, err := b.Take(code); !ok || err != nil {
		t.Fatalf("the use after the lock was released: %v %v", ok, err)
	}
}

// A file with no uses in it (written by hand, or by a tool that dropped
// the map) is an empty book, not a crash.
func TestFileWithoutUses(t *testing.T) {
	for _, content := range []string{`{}`, `{"uses": null}`} {
		b := signupcodes.Book{Dir: t.TempDir()}
		if err := os.WriteFile(filepath.Join(b.Dir, "signup-codes.json"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		code, err := b.Add(1)
		if err != nil {
			t.Fatalf("%s: Add: %v", content, err)
		}
		if _, ok, err := b.Take(code); !ok || err != nil {
			t.Fatalf("%s: Take: %v %v", content, ok, err)
		}
	}
}

// A file that cannot be read fails the call (and spends nothing), rather
// than being taken for an empty book that a write would then replace.
func TestUnreadableFileIsAnError(t *testing.T) {
	b := signupcodes.Book{Dir: t.TempDir()}
	if err := os.Mkdir(filepath.Join(b.Dir, "signup-codes.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Add(1); err == nil {
		t.Fatal("Add over an unreadable file succeeded")
	}
	if _, ok, err := b.Take(make([]byte, 16)); ok || err == nil {
		t.Fatalf("Take over an unreadable file: %v %v, want an error", ok, err)
	}
}
