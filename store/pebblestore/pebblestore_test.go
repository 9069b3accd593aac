package pebblestore_test

import (
	"errors"
	"testing"

	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/pebblestore"
	"github.com/magpie-im/magpie/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open opens the store in dir and closes it when t ends.
func open(t testing.TB, dir string) *pebblestore.Store {
	t.Helper()
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		dir := t.TempDir()
		s := open(t, dir)
		return storetest.Harness{
			Store: s,
			Reopen: func(t *testing.T) storetest.Store {
				if err := s.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				return open(t, dir)
			},
		}
	})
}
