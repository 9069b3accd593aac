package pgblobs_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/blobstore/blobstoretest"
	"github.com/magpie-im/magpie/blobstore/pgblobs"
	"github.com/magpie-im/magpie/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.MainNoLeaks(m)) }

// migrated prepares pgtest's template: the tables, as Open leaves them.
func migrated(url string) error {
	s, err := pgblobs.Open(context.Background(), url, blobstore.Options{})
	if err != nil {
		return err
	}
	return s.Close()
}

// newDB returns a fresh migrated database's URL.
func newDB(t testing.TB) string {
	t.Helper()
	return pgtest.NewDatabase(t, "pgblobs", migrated)
}

// open opens the store at url and closes it when t ends.
func open(t testing.TB, url string, opts blobstore.Options) *pgblobs.Store {
	t.Helper()
	s, err := pgblobs.Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, blobstore.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	blobstoretest.Run(t, func(t *testing.T, opts blobstore.Options) blobstoretest.Harness {
		url := newDB(t)
		cur := open(t, url, opts)
		return blobstoretest.Harness{
			Store: cur,
			Reopen: func(t *testing.T) blobstoretest.Store {
				if err := cur.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				cur = open(t, url, opts)
				return cur
			},
		}
	})
}
