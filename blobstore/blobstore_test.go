package blobstore

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(killChildEnv); dir != "" {
		os.Exit(killChild(dir)) // the child process of TestKill9
	}
	goleak.VerifyTestMain(m)
}

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func open(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// upload appends data in chunks of the given size and returns the
// confirmed length.
func upload(t testing.TB, s *Store, id ID, owner string, from int64, data []byte, chunk int) int64 {
	t.Helper()
	off := from
	for off < int64(len(data)) {
		end := min(off+int64(chunk), int64(len(data)))
		n, err := s.Append(id, owner, off, data[off:end])
		if err != nil {
			t.Fatalf("Append at %d: %v", off, err)
		}
		if n != end {
			t.Fatalf("Append at %d returned %d, want %d", off, n, end)
		}
		off = n
	}
	return off
}

func readAll(t testing.TB, s *Store, id ID) []byte {
	t.Helper()
	r, size, err := s.Open(id)
	if err != nil {
		t.Fatalf("Open(%s): %v", id.Short(), err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(got)) != size {
		t.Fatalf("read %d bytes, Open said %d", len(got), size)
	}
	return got
}

// completeBlob creates, uploads and completes a blob.
func completeBlob(t testing.TB, s *Store, owner string, data []byte) ID {
	t.Helper()
	id, err := s.Create(owner, int64(len(data)))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	upload(t, s, id, owner, 0, data, 64<<10)
	if err := s.Complete(id, owner, sha256.Sum256(data)); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	return id
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "blobs")
	s := open(t, dir, Options{})
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", fi.Mode().Perm())
	}

	data := randomBytes(t, 10<<20)
	id, err := s.Create("alice", int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Usage("alice"); got != Cost(int64(len(data))) {
		t.Errorf("Usage after Create = %d, want %d", got, Cost(int64(len(data))))
	}
	if !exists(filepath.Join(dir, "incomplete", id.String())) || !exists(filepath.Join(dir, "meta", id.String())) {
		t.Fatal("Create did not make incomplete/<id> and meta/<id>")
	}
	upload(t, s, id, "alice", 0, data, 64<<10)
	conf, size, complete, err := s.Status(id, "alice")
	if err != nil || conf != int64(len(data)) || size != int64(len(data)) || complete {
		t.Fatalf("Status before Complete = %d, %d, %v, %v", conf, size, complete, err)
	}
	if err := s.Complete(id, "alice", sha256.Sum256(data)); err != nil {
		t.Fatal(err)
	}
	if !exists(filepath.Join(dir, "complete", id.String())) || exists(filepath.Join(dir, "incomplete", id.String())) {
		t.Fatal("Complete did not move the data to complete/")
	}
	if _, _, complete, _ := s.Status(id, "alice"); !complete {
		t.Error("Status after Complete: not complete")
	}
	if got := readAll(t, s, id); !bytes.Equal(got, data) {
		t.Fatal("downloaded bytes differ from uploaded")
	}

	// Seeking works for resumed downloads.
	r, _, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Seek(5<<20, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(r, buf); err != nil || !bytes.Equal(buf, data[5<<20:5<<20+1000]) {
		t.Fatalf("read after seek: %v", err)
	}

	// A retried Complete with the same digest succeeds; another digest is refused.
	if err := s.Complete(id, "alice", sha256.Sum256(data)); err != nil {
		t.Errorf("repeated Complete: %v", err)
	}
	if err := s.Complete(id, "alice", [32]byte{1}); !errors.Is(err, ErrDigest) {
		t.Errorf("Complete with another digest: %v, want ErrDigest", err)
	}
	if _, err := s.Append(id, "alice", int64(len(data)), []byte{1}); !errors.Is(err, ErrComplete) {
		t.Errorf("Append to complete blob: %v, want ErrComplete", err)
	}
	if got := readAll(t, s, id); !bytes.Equal(got, data) {
		t.Fatal("blob changed")
	}
}

func TestEmptyBlob(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	id := completeBlob(t, s, "alice", nil)
	if got := readAll(t, s, id); len(got) != 0 {
		t.Fatalf("got %d bytes", len(got))
	}
	if got := s.Usage("alice"); got != blockSize {
		t.Errorf("Usage of an empty blob = %d, want %d (metadata block)", got, blockSize)
	}
}

func TestResumeAfterRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(t, 3<<20+123)
	id, err := s.Create("alice", int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	upload(t, s, id, "alice", 0, data[:1<<20+77], 64<<10)
	other := completeBlob(t, s, "alice", data[:5000])
	usage := s.Usage("alice")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Status(id, "alice"); !errors.Is(err, ErrClosed) {
		t.Errorf("Status after Close: %v, want ErrClosed", err)
	}

	s = open(t, dir, Options{})
	if got := s.Usage("alice"); got != usage {
		t.Errorf("Usage after restart = %d, want %d", got, usage)
	}
	conf, size, complete, err := s.Status(id, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if conf != 1<<20+77 || size != int64(len(data)) || complete {
		t.Fatalf("Status after restart = %d, %d, %v", conf, size, complete)
	}
	upload(t, s, id, "alice", conf, data, 100<<10)
	if err := s.Complete(id, "alice", sha256.Sum256(data)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, s, id), data) || !bytes.Equal(readAll(t, s, other), data[:5000]) {
		t.Fatal("blob content differs after restart")
	}
}

func TestLockedDir(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, Options{})
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
}

func TestWrongOffset(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	id, err := s.Create("alice", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(id, "alice", 0, make([]byte, 300)); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 299, 301, 1000, -1} {
		n, err := s.Append(id, "alice", off, make([]byte, 10))
		var oe *OffsetError
		if !errors.Is(err, ErrOffset) || !errors.As(err, &oe) {
			t.Fatalf("Append at %d: %v, want ErrOffset", off, err)
		}
		if oe.Confirmed != 300 || n != 300 {
			t.Errorf("Append at %d: confirmed %d, returned %d, want 300", off, oe.Confirmed, n)
		}
	}
	if n, err := s.Append(id, "alice", 300, make([]byte, 10)); err != nil || n != 310 {
		t.Fatalf("Append at the confirmed length: %d, %v", n, err)
	}
}

func TestOtherOwner(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	id, err := s.Create("alice", 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(id, "mallory", 0, []byte("x")); err != ErrNotFound {
		t.Errorf("Append by another owner: %v, want ErrNotFound", err)
	}
	if _, _, _, err := s.Status(id, "mallory"); err != ErrNotFound {
		t.Errorf("Status by another owner: %v", err)
	}
	if err := s.Complete(id, "mallory", [32]byte{}); err != ErrNotFound {
		t.Errorf("Complete by another owner: %v", err)
	}
	if err := s.Delete(id, "mallory"); err != ErrNotFound {
		t.Errorf("Delete by another owner: %v", err)
	}
	if err := s.ExpectFetches(id, "mallory", 1); err != ErrNotFound {
		t.Errorf("ExpectFetches by another owner: %v", err)
	}
	if _, err := s.Append(newID(), "alice", 0, []byte("x")); err != ErrNotFound {
		t.Errorf("Append to an unknown id: %v", err)
	}
	if conf, _, _, err := s.Status(id, "alice"); err != nil || conf != 0 {
		t.Errorf("the owner's blob was touched: %d, %v", conf, err)
	}
}

func TestOverflow(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	id, err := s.Create("alice", 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(id, "alice", 0, make([]byte, 101)); !errors.Is(err, ErrOverflow) {
		t.Fatalf("Append past the size: %v, want ErrOverflow", err)
	}
	if _, err := s.Append(id, "alice", 0, make([]byte, 60)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Append(id, "alice", 60, make([]byte, 41)); !errors.Is(err, ErrOverflow) || n != 60 {
		t.Fatalf("Append past the size: %d, %v, want 60, ErrOverflow", n, err)
	}
	if n, err := s.Append(id, "alice", 60, make([]byte, 40)); err != nil || n != 100 {
		t.Fatalf("Append to the size: %d, %v", n, err)
	}
	if n, err := s.Append(id, "alice", 100, []byte{1}); !errors.Is(err, ErrOverflow) || n != 100 {
		t.Fatalf("Append at the end: %d, %v, want ErrOverflow", n, err)
	}
	fi, err := os.Stat(s.dataPath(id, false))
	if err != nil || fi.Size() != 100 {
		t.Fatalf("data file: %v, %v", fi, err)
	}

	big, err := s.Create("alice", 10<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(big, "alice", 0, make([]byte, MaxChunk+1)); !errors.Is(err, ErrChunkTooLarge) {
		t.Fatalf("Append of MaxChunk+1: %v, want ErrChunkTooLarge", err)
	}
	if _, err := s.Append(big, "alice", 0, make([]byte, MaxChunk)); err != nil {
		t.Fatalf("Append of MaxChunk: %v", err)
	}
}

func TestDigestMismatch(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	data := randomBytes(t, 200<<10)
	id, err := s.Create("alice", int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	upload(t, s, id, "alice", 0, data[:100<<10], 64<<10)
	if err := s.Complete(id, "alice", sha256.Sum256(data)); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Complete before all bytes: %v, want ErrIncomplete", err)
	}
	upload(t, s, id, "alice", 100<<10, data, 64<<10)
	wrong := sha256.Sum256(data[1:])
	if err := s.Complete(id, "alice", wrong); !errors.Is(err, ErrDigest) {
		t.Fatalf("Complete with the wrong digest: %v, want ErrDigest", err)
	}
	// Documented: the blob is deleted and its quota returned.
	if _, _, _, err := s.Status(id, "alice"); err != ErrNotFound {
		t.Errorf("Status after ErrDigest: %v, want ErrNotFound", err)
	}
	if got := s.Usage("alice"); got != 0 {
		t.Errorf("Usage after ErrDigest = %d, want 0", got)
	}
	if exists(filepath.Join(dir, "incomplete", id.String())) || exists(filepath.Join(dir, "meta", id.String())) {
		t.Error("files left after ErrDigest")
	}
	if err := s.Complete(id, "alice", sha256.Sum256(data)); err != ErrNotFound {
		t.Errorf("Complete after ErrDigest: %v, want ErrNotFound", err)
	}
}

func TestLimits(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxSize: 1 << 20, Quota: 3 << 20, MaxIncomplete: 3})
	if _, err := s.Create("alice", 1<<20+1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Create over MaxSize: %v, want ErrTooLarge", err)
	}
	if _, err := s.Create("alice", -1); !errors.Is(err, ErrBadSize) {
		t.Errorf("Create of size -1: %v, want ErrBadSize", err)
	}
	if _, err := s.Create("", 1); !errors.Is(err, ErrBadOwner) {
		t.Errorf("Create with no owner: %v, want ErrBadOwner", err)
	}
	if _, err := s.Create(string(make([]byte, MaxOwnerLen+1)), 1); !errors.Is(err, ErrBadOwner) {
		t.Errorf("Create with a long owner: %v, want ErrBadOwner", err)
	}

	// Quota: Cost(1 MiB) is 1 MiB + 4 KiB, so two fit in 3 MiB and a third does not.
	a, err := s.Create("alice", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("alice", 1<<20); err != nil {
		t.Fatal(err)
	}
	_, err = s.Create("alice", 1<<20)
	if !errors.Is(err, ErrQuota) {
		t.Fatalf("Create over quota: %v, want ErrQuota", err)
	}
	t.Logf("quota error reads: %v", err)
	if got, want := s.Usage("alice"), 2*Cost(1<<20); got != want {
		t.Errorf("Usage = %d, want %d", got, want)
	}
	// Another owner has a quota of its own.
	if _, err := s.Create("bob", 1<<20); err != nil {
		t.Errorf("bob's Create: %v", err)
	}
	// Deleting returns the quota.
	if err := s.Delete(a, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("alice", 1<<20); err != nil {
		t.Errorf("Create after Delete: %v", err)
	}

	// Incomplete uploads per owner; completing one frees a slot.
	c1 := completeBlobStart(t, s, "carol", 10)
	completeBlobStart(t, s, "carol", 10)
	completeBlobStart(t, s, "carol", 10)
	if _, err := s.Create("carol", 10); !errors.Is(err, ErrTooManyUploads) {
		t.Fatalf("fourth incomplete upload: %v, want ErrTooManyUploads", err)
	}
	data := make([]byte, 10)
	if _, err := s.Append(c1, "carol", 0, data); err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(c1, "carol", sha256.Sum256(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("carol", 10); err != nil {
		t.Errorf("Create after a Complete: %v", err)
	}
}

func completeBlobStart(t *testing.T, s *Store, owner string, size int64) ID {
	t.Helper()
	id, err := s.Create(owner, size)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestIncompleteCannotBeOpened(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	id, err := s.Create("alice", 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(id, "alice", 0, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	// All bytes are there, but until Complete the blob is not served, and
	// the error is the one an unknown id gets.
	_, _, errIncomplete := s.Open(id)
	_, _, errUnknown := s.Open(newID())
	if errIncomplete != ErrNotFound || errUnknown != ErrNotFound {
		t.Fatalf("Open incomplete: %v; Open unknown: %v; want ErrNotFound for both", errIncomplete, errUnknown)
	}
	if err := s.Fetched(id, "bob.1"); err != ErrNotFound {
		t.Errorf("Fetched on an incomplete blob: %v, want ErrNotFound", err)
	}
}

func TestGC(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	opts := Options{Now: clk.Now, TTL: 30 * 24 * time.Hour, IncompleteTTL: 7 * 24 * time.Hour}
	s := open(t, dir, opts)
	data := randomBytes(t, 10000)

	old := completeBlob(t, s, "alice", data) // will pass the TTL
	clk.Advance(20 * 24 * time.Hour)
	idle, _ := s.Create("alice", 100) // will sit idle
	active, _ := s.Create("alice", 100)
	fetched := completeBlob(t, s, "bob", data) // will be fetched by every device
	fresh := completeBlob(t, s, "bob", data)   // stays
	if err := s.ExpectFetches(fetched, "bob", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.ExpectFetches(fresh, "bob", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.ExpectFetches(fresh, "alice", 1); err != ErrNotFound {
		t.Errorf("ExpectFetches by a non-owner: %v", err)
	}
	if err := s.Fetched(fetched, "carol.1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Fetched(fetched, "carol.1"); err != nil { // the same device again counts once
		t.Fatal(err)
	}
	readAll(t, s, fetched) // still served: one device left

	clk.Advance(5 * 24 * time.Hour)
	if _, err := s.Append(active, "alice", 0, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	// Across restarts the last activity of an upload is its data file's
	// mtime; move it to the fake clock's time of that append.
	if err := os.Chtimes(filepath.Join(dir, "incomplete", active.String()), time.Time{}, clk.Now()); err != nil {
		t.Fatal(err)
	}
	if n, err := s.GC(); err != nil || n != 0 {
		t.Fatalf("GC with nothing due = %d, %v", n, err)
	}
	if err := s.Fetched(fetched, "dave.1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Open(fetched); err != ErrNotFound {
		t.Errorf("Open after every device fetched: %v, want ErrNotFound", err)
	}
	clk.Advance(6 * 24 * time.Hour) // day 31: old is past the TTL, idle idle for 11 days, active for 6

	// Expired blobs are gone before GC runs.
	if _, _, err := s.Open(old); err != ErrNotFound {
		t.Errorf("Open of an expired blob: %v, want ErrNotFound", err)
	}
	if _, _, _, err := s.Status(idle, "alice"); err != ErrNotFound {
		t.Errorf("Status of an idle upload: %v, want ErrNotFound", err)
	}
	beforeAlice, beforeBob := s.Usage("alice"), s.Usage("bob")
	n, err := s.GC()
	if err != nil || n != 3 {
		t.Fatalf("GC = %d, %v, want 3", n, err)
	}
	if got, want := s.Usage("alice"), beforeAlice-Cost(10000)-Cost(100); got != want {
		t.Errorf("alice's Usage after GC = %d, want %d", got, want)
	}
	if got, want := s.Usage("bob"), beforeBob-Cost(10000); got != want {
		t.Errorf("bob's Usage after GC = %d, want %d", got, want)
	}
	for _, id := range []ID{old, idle, fetched} {
		for _, sub := range []string{"meta", "incomplete", "complete"} {
			if exists(filepath.Join(dir, sub, id.String())) {
				t.Errorf("%s/%s left after GC", sub, id.Short())
			}
		}
	}
	if conf, _, _, err := s.Status(active, "alice"); err != nil || conf != 10 {
		t.Errorf("active upload after GC: %d, %v", conf, err)
	}
	if !bytes.Equal(readAll(t, s, fresh), data) {
		t.Error("fresh blob damaged")
	}

	// After a restart: the same blobs, the same usage, fetch records kept.
	aliceUse, bobUse := s.Usage("alice"), s.Usage("bob")
	s.Close()
	s = open(t, dir, opts)
	if s.Usage("alice") != aliceUse || s.Usage("bob") != bobUse {
		t.Errorf("Usage after restart = %d, %d, want %d, %d", s.Usage("alice"), s.Usage("bob"), aliceUse, bobUse)
	}
	if n, err := s.GC(); err != nil || n != 0 {
		t.Errorf("GC after restart = %d, %v, want 0", n, err)
	}
	clk.Advance(24 * time.Hour) // active has now been idle for 7 days
	if n, err := s.GC(); err != nil || n != 1 {
		t.Errorf("GC of the upload idle since before the restart = %d, %v, want 1", n, err)
	}
	if got, want := s.Usage("alice"), aliceUse-Cost(100); got != want {
		t.Errorf("alice's Usage = %d, want %d", got, want)
	}
	if err := s.ExpectFetches(fresh, "bob", 1); err != nil { // forwarded once more: 2 copies
		t.Fatal(err)
	}
	if err := s.Fetched(fresh, "erin.1"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, opts)
	if err := s.Fetched(fresh, "erin.1"); err != nil { // recorded before the restart
		t.Fatal(err)
	}
	readAll(t, s, fresh)
	if err := s.Fetched(fresh, "frank.2"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.GC(); err != nil || n != 1 {
		t.Errorf("GC after the last fetch = %d, %v, want 1", n, err)
	}
	if got := s.Usage("bob"); got != 0 {
		t.Errorf("bob's Usage = %d, want 0", got)
	}
}

func TestFetchLimits(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxFetches: 3})
	id := completeBlob(t, s, "alice", []byte("x"))
	if err := s.ExpectFetches(id, "alice", 0); !errors.Is(err, ErrFetches) {
		t.Errorf("ExpectFetches(0): %v, want ErrFetches", err)
	}
	if err := s.ExpectFetches(id, "alice", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.ExpectFetches(id, "alice", 2); !errors.Is(err, ErrFetches) {
		t.Errorf("ExpectFetches beyond MaxFetches: %v, want ErrFetches", err)
	}
}

func TestConcurrentAppends(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	const blobs = 6
	datas := make([][]byte, blobs)
	ids := make([]ID, blobs)
	for i := range blobs {
		datas[i] = randomBytes(t, 1<<20+i*1000)
		var err error
		if ids[i], err = s.Create("alice", int64(len(datas[i]))); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, blobs)
	for i := range blobs {
		wg.Go(func() {
			data := datas[i]
			for off := 0; off < len(data); off += 64 << 10 {
				end := min(off+64<<10, len(data))
				if _, err := s.Append(ids[i], "alice", int64(off), data[off:end]); err != nil {
					errs <- err
					return
				}
			}
			errs <- s.Complete(ids[i], "alice", sha256.Sum256(data))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range blobs {
		if !bytes.Equal(readAll(t, s, ids[i]), datas[i]) {
			t.Fatalf("blob %d differs", i)
		}
	}

	// Racing appends at the same offset of one blob: exactly one wins.
	id, err := s.Create("alice", 1000)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for range 8 {
		wg.Go(func() {
			_, err := s.Append(id, "alice", 0, make([]byte, 100))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrOffset):
				conflicts++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins != 1 || conflicts != 7 {
		t.Fatalf("%d appends won and %d conflicted, want 1 and 7", wins, conflicts)
	}
	if conf, _, _, _ := s.Status(id, "alice"); conf != 100 {
		t.Fatalf("confirmed %d, want 100", conf)
	}
}

func TestRecoveryRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	keep := completeBlob(t, s, "alice", []byte("keep"))
	up, _ := s.Create("alice", 10)
	s.Close()

	// What crashes leave: metadata without data (inside Create or a
	// delete), data without metadata (inside a delete), a temporary
	// metadata file, and a data file in both places (never happens; the
	// complete one wins).
	noData, noMeta := newID(), newID()
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

	s = open(t, dir, Options{})
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
	if got := string(readAll(t, s, keep)); got != "keep" {
		t.Errorf("kept blob reads %q", got)
	}
	if conf, _, _, err := s.Status(up, "alice"); err != nil || conf != 10 {
		t.Errorf("upload after recovery: %d, %v, want 10", conf, err)
	}
	if got, want := s.Usage("alice"), Cost(4)+Cost(10); got != want {
		t.Errorf("Usage = %d, want %d", got, want)
	}
}

func TestParseID(t *testing.T) {
	id := newID()
	s := id.String()
	if len(s) != 22 {
		t.Fatalf("String() has %d characters", len(s))
	}
	got, err := ParseID(s)
	if err != nil || got != id {
		t.Fatalf("ParseID(String()) = %v, %v", got, err)
	}
	for _, bad := range []string{"", s[:21], s + "A", "!!!!!!!!!!!!!!!!!!!!!!", "AAAAAAAAAAAAAAAAAAAAAB"} {
		if _, err := ParseID(bad); err == nil {
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
	s := open(b, b.TempDir(), Options{MaxSize: 1 << 40, Quota: 1 << 41})
	data := randomBytes(b, chunk)
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
	s, err := Open(t.TempDir(), Options{MinFree: 1 << 62})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Create("alice", 100); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Create on a disk below MinFree: %v, want ErrNoSpace", err)
	}
	roomy, err := Open(t.TempDir(), Options{MinFree: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer roomy.Close()
	if _, err := roomy.Create("alice", 100); err != nil {
		t.Fatalf("Create with no floor: %v", err)
	}
}

// The limits are inclusive: an owner name of MaxOwnerLen bytes, uploads
// that fill the quota exactly, and fetches up to MaxFetches in all are
// accepted.
func TestLimitsAreInclusive(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxSize: 1 << 20, Quota: 2 * Cost(1<<20), MaxFetches: 3})
	if _, err := s.Create(strings.Repeat("o", MaxOwnerLen), 1); err != nil {
		t.Errorf("Create with an owner of MaxOwnerLen bytes: %v", err)
	}
	for i := range 2 {
		if _, err := s.Create("alice", 1<<20); err != nil {
			t.Fatalf("upload %d of two that fill the quota exactly: %v", i+1, err)
		}
	}
	if _, err := s.Create("alice", 1); !errors.Is(err, ErrQuota) {
		t.Errorf("a byte over the quota: %v, want ErrQuota", err)
	}
	id := completeBlob(t, s, "bob", []byte("x"))
	for _, n := range []int{2, 1} {
		if err := s.ExpectFetches(id, "bob", n); err != nil {
			t.Fatalf("ExpectFetches(%d) within MaxFetches: %v", n, err)
		}
	}
	if err := s.ExpectFetches(id, "bob", 1); !errors.Is(err, ErrFetches) {
		t.Errorf("a fetch beyond MaxFetches: %v, want ErrFetches", err)
	}
}

// Unfinished uploads still count toward their owner's limit after a
// restart.
func TestIncompleteUploadsCountAfterRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{MaxIncomplete: 2})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		completeBlobStart(t, s, "alice", 10)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{MaxIncomplete: 2})
	if _, err := s.Create("alice", 10); !errors.Is(err, ErrTooManyUploads) {
		t.Errorf("a third unfinished upload after a restart: %v, want ErrTooManyUploads", err)
	}
}
