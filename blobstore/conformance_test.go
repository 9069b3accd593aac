package blobstore_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/blobstore/blobstoretest"
)

func TestConformance(t *testing.T) {
	blobstoretest.Run(t, func(t *testing.T, opts blobstore.Options) blobstoretest.Harness {
		dir := t.TempDir()
		open := func(t *testing.T) *blobstore.Store {
			s, err := blobstore.Open(dir, opts)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		cur := open(t)
		return blobstoretest.Harness{
			Store: cur,
			Reopen: func(t *testing.T) blobstoretest.Store {
				if err := cur.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				cur = open(t)
				return cur
			},
			// After a restart an upload's last activity is its data
			// file's modification time, which the fake clock does not set.
			Touch: func(t *testing.T, id blobstore.ID, at time.Time) {
				if err := os.Chtimes(filepath.Join(dir, "incomplete", id.String()), time.Time{}, at); err != nil {
					t.Fatal(err)
				}
			},
		}
	})
}
