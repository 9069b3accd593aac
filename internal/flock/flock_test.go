//go:build unix

package flock

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLockExcludesAndReleases(t *testing.T) {
	path := filepath.Join(t.TempDir(), "LOCK")
	f, err := Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	// flock belongs to the open file, so a second open in this process
	// conflicts just as another process would.
	if g, err := Lock(path); !errors.Is(err, ErrLocked) {
		if g != nil {
			g.Close()
		}
		t.Fatalf("second Lock = %v, want ErrLocked", err)
	}
	if fi, err := os.Stat(path); err != nil {
		t.Fatal(err)
	} else if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("lock file mode %v, want 0600", perm)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g, err := Lock(path)
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	g.Close()
}
