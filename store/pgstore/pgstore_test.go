package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/internal/pgtest"
	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/pgstore"
	"github.com/magpie-im/magpie/store/storetest"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// migrated prepares pgtest's template: the schema, as Open leaves it.
func migrated(url string) error {
	s, err := pgstore.Open(context.Background(), url, pgstore.Options{})
	if err != nil {
		return err
	}
	return s.Close()
}

// newDB returns a fresh migrated database's URL.
func newDB(t testing.TB) string {
	t.Helper()
	return pgtest.NewDatabase(t, "pgstore", migrated)
}

// open opens the store at url and closes it when t ends.
func open(t testing.TB, url string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), url, pgstore.Options{})
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
		url := newDB(t)
		s := open(t, url)
		return storetest.Harness{
			Store: s,
			Reopen: func(t *testing.T) storetest.Store {
				if err := s.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				return open(t, url)
			},
		}
	})
}
