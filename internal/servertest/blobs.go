package servertest

import (
	"path/filepath"
	"testing"

	"github.com/magpie-im/magpie/blobstore"
)

// Blobs opens an attachment store in a temporary directory, for
// server.Config.Blobs; it is closed when the test ends.
func Blobs(t testing.TB, opts blobstore.Options) *blobstore.Store {
	t.Helper()
	b, err := blobstore.Open(filepath.Join(t.TempDir(), "blobs"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}
