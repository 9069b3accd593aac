package blobstore_test

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/blobstore/blobstoretest"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(killChildEnv); dir != "" {
		os.Exit(killChild(dir)) // the child process of TestKill9
	}
	goleak.VerifyTestMain(m)
}

func open(t testing.TB, dir string, opts blobstore.Options) *blobstore.Store {
	t.Helper()
	s, err := blobstore.Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestLockedDir(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, blobstore.Options{})
	if _, err := blobstore.Open(dir, blobstore.Options{}); !errors.Is(err, blobstore.ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
}

func TestRecoveryRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	s, err := blobstore.Open(dir, blobstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	keep := blobstoretest.CompleteBlob(t, s, "alice", []byte("keep"))
	up, _ := s.Create("alice", 10)
	s.Close()

	// What crashes leave: metadata without data (inside Create or a
	// delete), data without metadata (inside a delete), a temporary
	// metadata file, and a data file in both places (never happens; the
	// complete one wins).
	noData, noMeta := blobstore.NewID(), blobstore.NewID()
	write := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	metaRaw, err := os.ReadFile(filepath.Join(dir, "meta", up.String()))
	if err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(dir, "meta", noData.String()), string(metaRaw))
	write(filepath.Join(dir, "complete", noMeta.String()), "orphan")
	write(filepath.Join(dir, "incomplete", noMeta.String()), "orphan")
	write(filepath.Join(dir, "meta", ".tmp-"+up.String()+"-123"), "{")
	write(filepath.Join(dir, "incomplete", keep.String()), "keep")
	// An upload whose data grew past its size (outside damage) is trimmed.
	write(filepath.Join(dir, "incomplete", up.String()), "0123456789abc")

	s = open(t, dir, blobstore.Options{})
	for _, p := range []string{
		filepath.Join(dir, "meta", noData.String()),
		filepath.Join(dir, "complete", noMeta.String()),
		filepath.Join(dir, "incomplete", noMeta.String()),
		filepath.Join(dir, "meta", ".tmp-"+up.String()+"-123"),
		filepath.Join(dir, "incomplete", keep.String()),
	} {
		if exists(p) {
			t.Errorf("%s survived recovery", filepath.Base(filepath.Dir(p)))
		}
	}
	if got := string(blobstoretest.ReadAll(t, s, keep)); got != "keep" {
		t.Errorf("kept blob reads %q", got)
	}
	if conf, _, _, err := s.Status(up, "alice"); err != nil || conf != 10 {
		t.Errorf("upload after recovery: %d, %v, want 10", conf, err)
	}
	if got, want := s.Usage("alice"), blobstore.Cost(4)+blobstore.Cost(10); got != want {
		t.Errorf("Usage = %d, want %d", got, want)
	}
}

func TestParseID(t *testing.T) {
	id := blobstore.NewID()
	s := id.String()
	if len(s) != 22 {
		t.Fatalf("String() has %d characters", len(s))
	}
	got, err := blobstore.ParseID(s)
	if err != nil || got != id {
		t.Fatalf("ParseID(String()) = %v, %v", got, err)
	}
	for _, bad := range []string{"", s[:21], s + "A", "!!!!!!!!!!!!!!!!!!!!!!", "AAAAAAAAAAAAAAAAAAAAAB"} {
		if _, err := blobstore.ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
	if id.Short() != s[:6] {
		t.Error("Short is not a prefix")
	}
}

// BenchmarkAppend64K measures Append with 64 KiB chunks, each synced to
// disk before Append returns.
func BenchmarkAppend64K(b *testing.B) {
	const chunk = 64 << 10
	s := open(b, b.TempDir(), blobstore.Options{MaxSize: 1 << 40, Quota: 1 << 41})
	data := blobstoretest.RandomBytes(b, chunk)
	id, err := s.Create("alice", int64(b.N)*chunk)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(chunk)
	b.ResetTimer()
	var off int64
	for range b.N {
		if off, err = s.Append(id, "alice", off, data); err != nil {
			b.Fatal(err)
		}
	}
}

// Uploads stop while the disk has less free space than MinFree: the
// message store beside the blobs keeps room to commit.
func TestUploadsStopWhenTheDiskIsLow(t *testing.T) {
	s, err := blobstore.Open(t.TempDir(), blobstore.Options{MinFree: 1 << 62})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Create("alice", 100); !errors.Is(err, blobstore.ErrNoSpace) {
		t.Fatalf("Create on a disk below MinFree: %v, want ErrNoSpace", err)
	}
	roomy, err := blobstore.Open(t.TempDir(), blobstore.Options{MinFree: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer roomy.Close()
	if _, err := roomy.Create("alice", 100); err != nil {
		t.Fatalf("Create with no floor: %v", err)
	}
}

// The files of the package comment's On disk, through a blob's life: the
// directory's mode, where Create, Complete, a refused Append, ErrDigest
// and GC leave the data and metadata. (The behaviour itself is
// blobstoretest's, run in conformance_test.go.)
func TestFilesOnDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "blobs")
	clk := blobstoretest.NewClock()
	s := open(t, dir, blobstore.Options{Now: clk.Now})
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", fi.Mode().Perm())
	}
	has := func(sub string, id blobstore.ID) bool { return exists(filepath.Join(dir, sub, id.String())) }

	data := blobstoretest.RandomBytes(t, 200<<10)
	id, err := s.Create("alice", int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if !has("incomplete", id) || !has("meta", id) {
		t.Fatal("Create did not make incomplete/<id> and meta/<id>")
	}
	blobstoretest.Upload(t, s, id, "alice", 0, data, 64<<10)
	if err := s.Complete(id, "alice", sha256.Sum256(data)); err != nil {
		t.Fatal(err)
	}
	if !has("complete", id) || has("incomplete", id) {
		t.Fatal("Complete did not move the data to complete/")
	}

	// A refused Append writes nothing.
	small, err := s.Create("alice", 100)
	if err != nil {
		t.Fatal(err)
	}
	blobstoretest.Upload(t, s, small, "alice", 0, make([]byte, 100), 60)
	if _, err := s.Append(small, "alice", 100, []byte{1}); !errors.Is(err, blobstore.ErrOverflow) {
		t.Fatalf("Append at the end: %v, want ErrOverflow", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "incomplete", small.String())); err != nil || fi.Size() != 100 {
		t.Fatalf("data file: %v, %v", fi, err)
	}

	// ErrDigest deletes the files.
	if err := s.Complete(small, "alice", [32]byte{1}); !errors.Is(err, blobstore.ErrDigest) {
		t.Fatalf("Complete with the wrong digest: %v, want ErrDigest", err)
	}
	if has("incomplete", small) || has("meta", small) {
		t.Error("files left after ErrDigest")
	}

	// GC deletes them too.
	if err := s.ExpectFetches(id, "alice", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Fetched(id, "bob.1"); err != nil {
		t.Fatal(err)
	}
	idle, err := s.Create("alice", 10)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(blobstore.DefaultIncompleteTTL)
	if n, err := s.GC(); err != nil || n != 2 {
		t.Fatalf("GC = %d, %v, want 2", n, err)
	}
	for _, id := range []blobstore.ID{id, idle} {
		for _, sub := range []string{"meta", "incomplete", "complete"} {
			if has(sub, id) {
				t.Errorf("%s/%s left after GC", sub, id.Short())
			}
		}
	}
}
