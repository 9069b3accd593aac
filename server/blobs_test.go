package server_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// A blob waits for the fetches its uploader announced, and only a read
// that returns its last bytes counts as one: an empty read at its end
// (which anyone who knows the id can make) does not delete it before its
// recipient has it.
func TestBlobFetchCountsOnlyRealReads(t *testing.T) {
	s := servertest.Start(t, server.Config{Blobs: servertest.Blobs(t, blobstore.Options{})})
	alice := s.Register(t, "alice")
	bob := s.Register(t, "bob")
	mallory := s.Register(t, "mallory")
	data := bytes.Repeat([]byte("attachment "), 1000)
	us, err := alice.UploadStart(ctx(t), uint64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.UploadChunk(ctx(t), us.BlobID, 0, data); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.UploadComplete(ctx(t), us.BlobID, sha256.Sum256(data), 1); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got, size, err := mallory.Download(ctx(t), us.BlobID, uint64(len(data)), 1024); err != nil || len(got) != 0 || size != uint64(len(data)) {
			t.Fatalf("an empty read at the end: %d bytes, size %d, %v", len(got), size, err)
		}
	}
	got, _, err := bob.Download(ctx(t), us.BlobID, 0, len(data))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the recipient's fetch after empty reads: %d bytes, %v", len(got), err)
	}
	// bob's was the one fetch expected: the blob is gone.
	if _, _, err := mallory.Download(ctx(t), us.BlobID, 0, len(data)); !errors.Is(err, clientconn.ErrNotFound) {
		t.Fatalf("after its one expected fetch: %v, want ErrNotFound", err)
	}
}
