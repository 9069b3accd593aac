// Package blobstoretest is the conformance suite of blobstore.Blobs: the
// behaviour the package comment of blobstore promises, run against every
// implementation (the file store in blobstore, PostgreSQL in
// blobstore/pgblobs). What is about one implementation's files or tables
// stays in that implementation's own tests.
package blobstoretest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/magpie-im/magpie/blobstore"
)

// Store is what the suite uses: blobstore.Blobs, and Delete and Usage,
// which the tests need to check quota accounting.
type Store interface {
	blobstore.Blobs
	Delete(id blobstore.ID, owner string) error
	Usage(owner string) int64
}

// Harness is one store under test.
type Harness struct {
	Store Store
	// Reopen closes Store and opens the same store again with the same
	// options, as a server restart does; calls to the closed one return
	// blobstore.ErrClosed.
	Reopen func(t *testing.T) Store
	// Touch, when not nil, moves the last activity of an incomplete
	// upload, as recorded where Reopen reads it from, to at: for a store
	// that rebuilds it from something other than Options.Now (the file
	// store: the data file's modification time).
	Touch func(t *testing.T, id blobstore.ID, at time.Time)
}

// Open makes a new, empty store with opts (Options.Now included) for t,
// closed when t ends.
type Open func(t *testing.T, opts blobstore.Options) Harness

// Run runs the suite; every subtest opens its own store.
func Run(t *testing.T, open Open) {
	tests := []struct {
		name string
		fn   func(*testing.T, Open)
	}{
		{"RoundTrip", testRoundTrip},
		{"SeekAndRead", testSeekAndRead},
		{"EmptyBlob", testEmptyBlob},
		{"ResumeAfterRestart", testResumeAfterRestart},
		{"WrongOffset", testWrongOffset},
		{"OtherOwner", testOtherOwner},
		{"Overflow", testOverflow},
		{"DigestMismatch", testDigestMismatch},
		{"Limits", testLimits},
		{"IncompleteCannotBeOpened", testIncompleteCannotBeOpened},
		{"GC", testGC},
		{"FetchLimits", testFetchLimits},
		{"ConcurrentAppends", testConcurrentAppends},
		{"LimitsAreInclusive", testLimitsAreInclusive},
		{"IncompleteUploadsCountAfterRestart", testIncompleteUploadsCountAfterRestart},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// Clock is a settable Options.Now.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock at the current time.
func NewClock() *Clock { return &Clock{t: time.Now()} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// RandomBytes returns n random bytes.
func RandomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// Upload appends data in chunks of the given size and returns the
// confirmed length.
func Upload(t testing.TB, s Store, id blobstore.ID, owner string, from int64, data []byte, chunk int) int64 {
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

// ReadAll opens and reads a whole blob, checking its size.
func ReadAll(t testing.TB, s Store, id blobstore.ID) []byte {
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

// CompleteBlob creates, uploads and completes a blob.
func CompleteBlob(t testing.TB, s Store, owner string, data []byte) blobstore.ID {
	t.Helper()
	id, err := s.Create(owner, int64(len(data)))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	Upload(t, s, id, owner, 0, data, 64<<10)
	if err := s.Complete(id, owner, sha256.Sum256(data)); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	return id
}

func testRoundTrip(t *testing.T, open Open) {
	s := open(t, blobstore.Options{}).Store
	data := RandomBytes(t, 10<<20)
	id, err := s.Create("alice", int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Usage("alice"); got != blobstore.Cost(int64(len(data))) {
		t.Errorf("Usage after Create = %d, want %d", got, blobstore.Cost(int64(len(data))))
	}
	Upload(t, s, id, "alice", 0, data, 64<<10)
	conf, size, complete, err := s.Status(id, "alice")
	if err != nil || conf != int64(len(data)) || size != int64(len(data)) || complete {
		t.Fatalf("Status before Complete = %d, %d, %v, %v", conf, size, complete, err)
	}
	if err := s.Complete(id, "alice", sha256.Sum256(data)); err != nil {
		t.Fatal(err)
	}
	if _, _, complete, _ := s.Status(id, "alice"); !complete {
		t.Error("Status after Complete: not complete")
	}
	if got := ReadAll(t, s, id); !bytes.Equal(got, data) {
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
	if err := s.Complete(id, "alice", [32]byte{1}); !errors.Is(err, blobstore.ErrDigest) {
		t.Errorf("Complete with another digest: %v, want ErrDigest", err)
	}
	if _, err := s.Append(id, "alice", int64(len(data)), []byte{1}); !errors.Is(err, blobstore.ErrComplete) {
		t.Errorf("Append to complete blob: %v, want ErrComplete", err)
	}
	if got := ReadAll(t, s, id); !bytes.Equal(got, data) {
		t.Fatal("blob changed")
	}
}

// Reads of ranges that start and end inside and across the chunks the
// blob was uploaded in, after every kind of Seek, read what was uploaded.
func testSeekAndRead(t *testing.T, open Open) {
	s := open(t, blobstore.Options{}).Store
	data := RandomBytes(t, 3<<20+4321)
	id, err := s.Create("alice", int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	// Uneven chunks, so that reads cross their boundaries at odd places.
	sizes := []int{1000, 64<<10 + 7, 1, 4096, blobstore.MaxChunk}
	for off, i := 0, 0; off < len(data); i++ {
		end := min(off+sizes[i%len(sizes)], len(data))
		if _, err := s.Append(id, "alice", int64(off), data[off:end]); err != nil {
			t.Fatalf("Append at %d: %v", off, err)
		}
		off = end
	}
	if err := s.Complete(id, "alice", sha256.Sum256(data)); err != nil {
		t.Fatal(err)
	}
	r, size, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if size != int64(len(data)) {
		t.Fatalf("Open: size %d, want %d", size, len(data))
	}
	for _, c := range []struct{ off, n int }{
		{0, 1}, {999, 2}, {1000, 64<<10 + 7}, {500, 200_000}, {66543, 1}, {66544, 5000},
		{1 << 20, 1<<20 + 3}, {len(data) - 10, 10}, {0, len(data)}, {123_456, 2<<20 + 1},
	} {
		if pos, err := r.Seek(int64(c.off), io.SeekStart); err != nil || pos != int64(c.off) {
			t.Fatalf("Seek(%d): %d, %v", c.off, pos, err)
		}
		buf := make([]byte, c.n)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatalf("read %d bytes at %d: %v", c.n, c.off, err)
		}
		if !bytes.Equal(buf, data[c.off:c.off+c.n]) {
			t.Fatalf("%d bytes at %d differ from what was uploaded", c.n, c.off)
		}
	}
	// Relative seeks.
	if pos, err := r.Seek(-100, io.SeekEnd); err != nil || pos != int64(len(data)-100) {
		t.Fatalf("Seek(-100, end): %d, %v", pos, err)
	}
	if pos, err := r.Seek(-50, io.SeekCurrent); err != nil || pos != int64(len(data)-150) {
		t.Fatalf("Seek(-50, current): %d, %v", pos, err)
	}
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(rest, data[len(data)-150:]) {
		t.Fatalf("the last 150 bytes: %d bytes, %v", len(rest), err)
	}
	if n, err := r.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("Read at the end: %d, %v, want 0, EOF", n, err)
	}
	if _, err := r.Seek(-1, io.SeekStart); err == nil {
		t.Fatal("Seek to -1 succeeded")
	}
	if _, err := r.Seek(int64(len(data))+5, io.SeekStart); err != nil {
		t.Fatalf("Seek past the end: %v", err)
	}
	if n, err := r.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("Read past the end: %d, %v, want 0, EOF", n, err)
	}
	// A second reader has a position of its own.
	r2, _, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	head := make([]byte, 3000)
	if _, err := io.ReadFull(r2, head); err != nil || !bytes.Equal(head, data[:3000]) {
		t.Fatalf("second reader: %v", err)
	}
}

// A closed store refuses every call with ErrClosed.
func testClosed(t *testing.T, open Open) {
	h := open(t, blobstore.Options{})
	s := h.Store
	done := CompleteBlob(t, s, "alice", []byte("done"))
	up, err := s.Create("alice", 10)
	if err != nil {
		t.Fatal(err)
	}
	h.Reopen(t)
	checks := map[string]error{}
	_, checks["Create"] = s.Create("alice", 1)
	_, checks["Append"] = s.Append(up, "alice", 0, []byte{1})
	_, _, _, checks["Status"] = s.Status(up, "alice")
	checks["Complete"] = s.Complete(up, "alice", [32]byte{})
	checks["ExpectFetches"] = s.ExpectFetches(done, "alice", 1)
	_, _, checks["Open"] = s.Open(done)
	checks["Fetched"] = s.Fetched(done, "bob.1")
	_, checks["GC"] = s.GC()
	checks["Delete"] = s.Delete(done, "alice")
	for name, err := range checks {
		if !errors.Is(err, blobstore.ErrClosed) {
			t.Errorf("%s on a closed store: %v, want ErrClosed", name, err)
		}
	}
}

func testEmptyBlob(t *testing.T, open Open) {
	s := open(t, blobstore.Options{}).Store
	id := CompleteBlob(t, s, "alice", nil)
	if got := ReadAll(t, s, id); len(got) != 0 {
		t.Fatalf("got %d bytes", len(got))
	}
	if got := s.Usage("alice"); got != blobstore.Cost(0) {
		t.Errorf("Usage of an empty blob = %d, want %d (metadata block)", got, blobstore.Cost(0))
	}
}

func testResumeAfterRestart(t *testing.T, open Open) {
	h := open(t, blobstore.Options{})
	s := h.Store
	data := RandomBytes(t, 3<<20+123)
	id, err := s.Create("alice", int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	Upload(t, s, id, "alice", 0, data[:1<<20+77], 64<<10)
	other := CompleteBlob(t, s, "alice", data[:5000])
	usage := s.Usage("alice")
	closed := s
	s = h.Reopen(t)
	if _, _, _, err := closed.Status(id, "alice"); !errors.Is(err, blobstore.ErrClosed) {
		t.Errorf("Status after Close: %v, want ErrClosed", err)
	}

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
	Upload(t, s, id, "alice", conf, data, 100<<10)
	if err := s.Complete(id, "alice", sha256.Sum256(data)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ReadAll(t, s, id), data) || !bytes.Equal(ReadAll(t, s, other), data[:5000]) {
		t.Fatal("blob content differs after restart")
	}
}

func testWrongOffset(t *testing.T, open Open) {
	s := open(t, blobstore.Options{}).Store
	id, err := s.Create("alice", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(id, "alice", 0, make([]byte, 300)); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 299, 301, 1000, -1} {
		n, err := s.Append(id, "alice", off, make([]byte, 10))
		var oe *blobstore.OffsetError
		if !errors.Is(err, blobstore.ErrOffset) || !errors.As(err, &oe) {
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

func testOtherOwner(t *testing.T, open Open) {
	s := open(t, blobstore.Options{}).Store
	id, err := s.Create("alice", 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(id, "mallory", 0, []byte("x")); err != blobstore.ErrNotFound {
		t.Errorf("Append by another owner: %v, want ErrNotFound", err)
	}
	if _, _, _, err := s.Status(id, "mallory"); err != blobstore.ErrNotFound {
		t.Errorf("Status by another owner: %v", err)
	}
	if err := s.Complete(id, "mallory", [32]byte{}); err != blobstore.ErrNotFound {
		t.Errorf("Complete by another owner: %v", err)
	}
	if err := s.Delete(id, "mallory"); err != blobstore.ErrNotFound {
		t.Errorf("Delete by another owner: %v", err)
	}
	if err := s.ExpectFetches(id, "mallory", 1); err != blobstore.ErrNotFound {
		t.Errorf("ExpectFetches by another owner: %v", err)
	}
	if _, err := s.Append(blobstore.NewID(), "alice", 0, []byte("x")); err != blobstore.ErrNotFound {
		t.Errorf("Append to an unknown id: %v", err)
	}
	if conf, _, _, err := s.Status(id, "alice"); err != nil || conf != 0 {
		t.Errorf("the owner's blob was touched: %d, %v", conf, err)
	}
}

func testOverflow(t *testing.T, open Open) {
	s := open(t, blobstore.Options{}).Store
	id, err := s.Create("alice", 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(id, "alice", 0, make([]byte, 101)); !errors.Is(err, blobstore.ErrOverflow) {
		t.Fatalf("Append past the size: %v, want ErrOverflow", err)
	}
	if _, err := s.Append(id, "alice", 0, make([]byte, 60)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Append(id, "alice", 60, make([]byte, 41)); !errors.Is(err, blobstore.ErrOverflow) || n != 60 {
		t.Fatalf("Append past the size: %d, %v, want 60, ErrOverflow", n, err)
	}
	if n, err := s.Append(id, "alice", 60, make([]byte, 40)); err != nil || n != 100 {
		t.Fatalf("Append to the size: %d, %v", n, err)
	}
	if n, err := s.Append(id, "alice", 100, []byte{1}); !errors.Is(err, blobstore.ErrOverflow) || n != 100 {
		t.Fatalf("Append at the end: %d, %v, want ErrOverflow", n, err)
	}
	if conf, _, _, err := s.Status(id, "alice"); err != nil || conf != 100 {
		t.Fatalf("Status after the refused appends: %d, %v, want 100", conf, err)
	}

	big, err := s.Create("alice", 10<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(big, "alice", 0, make([]byte, blobstore.MaxChunk+1)); !errors.Is(err, blobstore.ErrChunkTooLarge) {
		t.Fatalf("Append of MaxChunk+1: %v, want ErrChunkTooLarge", err)
	}
	if _, err := s.Append(big, "alice", 0, make([]byte, blobstore.MaxChunk)); err != nil {
		t.Fatalf("Append of MaxChunk: %v", err)
	}
}

func testDigestMismatch(t *testing.T, open Open) {
	s := open(t, blobstore.Options{}).Store
	data := RandomBytes(t, 200<<10)
	id, err := s.Create("alice", int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	Upload(t, s, id, "alice", 0, data[:100<<10], 64<<10)
	if err := s.Complete(id, "alice", sha256.Sum256(data)); !errors.Is(err, blobstore.ErrIncomplete) {
		t.Fatalf("Complete before all bytes: %v, want ErrIncomplete", err)
	}
	Upload(t, s, id, "alice", 100<<10, data, 64<<10)
	wrong := sha256.Sum256(data[1:])
	if err := s.Complete(id, "alice", wrong); !errors.Is(err, blobstore.ErrDigest) {
		t.Fatalf("Complete with the wrong digest: %v, want ErrDigest", err)
	}
	// Documented: the blob is deleted and its quota returned.
	if _, _, _, err := s.Status(id, "alice"); err != blobstore.ErrNotFound {
		t.Errorf("Status after ErrDigest: %v, want ErrNotFound", err)
	}
	if got := s.Usage("alice"); got != 0 {
		t.Errorf("Usage after ErrDigest = %d, want 0", got)
	}
	if err := s.Complete(id, "alice", sha256.Sum256(data)); err != blobstore.ErrNotFound {
		t.Errorf("Complete after ErrDigest: %v, want ErrNotFound", err)
	}
}

func testLimits(t *testing.T, open Open) {
	s := open(t, blobstore.Options{MaxSize: 1 << 20, Quota: 3 << 20, MaxIncomplete: 3}).Store
	if _, err := s.Create("alice", 1<<20+1); !errors.Is(err, blobstore.ErrTooLarge) {
		t.Errorf("Create over MaxSize: %v, want ErrTooLarge", err)
	}
	if _, err := s.Create("alice", -1); !errors.Is(err, blobstore.ErrBadSize) {
		t.Errorf("Create of size -1: %v, want ErrBadSize", err)
	}
	if _, err := s.Create("", 1); !errors.Is(err, blobstore.ErrBadOwner) {
		t.Errorf("Create with no owner: %v, want ErrBadOwner", err)
	}
	if _, err := s.Create(string(make([]byte, blobstore.MaxOwnerLen+1)), 1); !errors.Is(err, blobstore.ErrBadOwner) {
		t.Errorf("Create with a long owner: %v, want ErrBadOwner", err)
	}

	// Quota: blobstore.Cost(1 MiB) is 1 MiB + 4 KiB, so two fit in 3 MiB and a third does not.
	a, err := s.Create("alice", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("alice", 1<<20); err != nil {
		t.Fatal(err)
	}
	_, err = s.Create("alice", 1<<20)
	if !errors.Is(err, blobstore.ErrQuota) {
		t.Fatalf("Create over quota: %v, want ErrQuota", err)
	}
	t.Logf("quota error reads: %v", err)
	if got, want := s.Usage("alice"), 2*blobstore.Cost(1<<20); got != want {
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
	if _, err := s.Create("carol", 10); !errors.Is(err, blobstore.ErrTooManyUploads) {
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

func completeBlobStart(t *testing.T, s Store, owner string, size int64) blobstore.ID {
	t.Helper()
	id, err := s.Create(owner, size)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func testIncompleteCannotBeOpened(t *testing.T, open Open) {
	s := open(t, blobstore.Options{}).Store
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
	_, _, errUnknown := s.Open(blobstore.NewID())
	if errIncomplete != blobstore.ErrNotFound || errUnknown != blobstore.ErrNotFound {
		t.Fatalf("Open incomplete: %v; Open unknown: %v; want ErrNotFound for both", errIncomplete, errUnknown)
	}
	if err := s.Fetched(id, "bob.1"); err != blobstore.ErrNotFound {
		t.Errorf("Fetched on an incomplete blob: %v, want ErrNotFound", err)
	}
}

func testGC(t *testing.T, open Open) {
	clk := NewClock()
	h := open(t, blobstore.Options{Now: clk.Now, TTL: 30 * 24 * time.Hour, IncompleteTTL: 7 * 24 * time.Hour})
	s := h.Store
	data := RandomBytes(t, 10000)

	old := CompleteBlob(t, s, "alice", data) // will pass the TTL
	clk.Advance(20 * 24 * time.Hour)
	idle, _ := s.Create("alice", 100) // will sit idle
	active, _ := s.Create("alice", 100)
	fetched := CompleteBlob(t, s, "bob", data) // will be fetched by every device
	fresh := CompleteBlob(t, s, "bob", data)   // stays
	if err := s.ExpectFetches(fetched, "bob", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.ExpectFetches(fresh, "bob", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.ExpectFetches(fresh, "alice", 1); err != blobstore.ErrNotFound {
		t.Errorf("ExpectFetches by a non-owner: %v", err)
	}
	if err := s.Fetched(fetched, "carol.1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Fetched(fetched, "carol.1"); err != nil { // the same device again counts once
		t.Fatal(err)
	}
	ReadAll(t, s, fetched) // still served: one device left

	clk.Advance(5 * 24 * time.Hour)
	if _, err := s.Append(active, "alice", 0, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if h.Touch != nil {
		h.Touch(t, active, clk.Now())
	}
	if n, err := s.GC(); err != nil || n != 0 {
		t.Fatalf("GC with nothing due = %d, %v", n, err)
	}
	if err := s.Fetched(fetched, "dave.1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Open(fetched); err != blobstore.ErrNotFound {
		t.Errorf("Open after every device fetched: %v, want ErrNotFound", err)
	}
	clk.Advance(6 * 24 * time.Hour) // day 31: old is past the TTL, idle idle for 11 days, active for 6

	// Expired blobs are gone before GC runs.
	if _, _, err := s.Open(old); err != blobstore.ErrNotFound {
		t.Errorf("Open of an expired blob: %v, want ErrNotFound", err)
	}
	if _, _, _, err := s.Status(idle, "alice"); err != blobstore.ErrNotFound {
		t.Errorf("Status of an idle upload: %v, want ErrNotFound", err)
	}
	beforeAlice, beforeBob := s.Usage("alice"), s.Usage("bob")
	n, err := s.GC()
	if err != nil || n != 3 {
		t.Fatalf("GC = %d, %v, want 3", n, err)
	}
	if got, want := s.Usage("alice"), beforeAlice-blobstore.Cost(10000)-blobstore.Cost(100); got != want {
		t.Errorf("alice's Usage after GC = %d, want %d", got, want)
	}
	if got, want := s.Usage("bob"), beforeBob-blobstore.Cost(10000); got != want {
		t.Errorf("bob's Usage after GC = %d, want %d", got, want)
	}
	for id, owner := range map[blobstore.ID]string{old: "alice", idle: "alice", fetched: "bob"} {
		if err := s.Delete(id, owner); err != blobstore.ErrNotFound {
			t.Errorf("Delete of %s after GC: %v, want ErrNotFound", id.Short(), err)
		}
	}
	if conf, _, _, err := s.Status(active, "alice"); err != nil || conf != 10 {
		t.Errorf("active upload after GC: %d, %v", conf, err)
	}
	if !bytes.Equal(ReadAll(t, s, fresh), data) {
		t.Error("fresh blob damaged")
	}

	// After a restart: the same blobs, the same usage, fetch records kept.
	aliceUse, bobUse := s.Usage("alice"), s.Usage("bob")
	s = h.Reopen(t)
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
	if got, want := s.Usage("alice"), aliceUse-blobstore.Cost(100); got != want {
		t.Errorf("alice's Usage = %d, want %d", got, want)
	}
	if err := s.ExpectFetches(fresh, "bob", 1); err != nil { // forwarded once more: 2 copies
		t.Fatal(err)
	}
	if err := s.Fetched(fresh, "erin.1"); err != nil {
		t.Fatal(err)
	}
	s = h.Reopen(t)
	if err := s.Fetched(fresh, "erin.1"); err != nil { // recorded before the restart
		t.Fatal(err)
	}
	ReadAll(t, s, fresh)
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

func testFetchLimits(t *testing.T, open Open) {
	s := open(t, blobstore.Options{MaxFetches: 3}).Store
	id := CompleteBlob(t, s, "alice", []byte("x"))
	if err := s.ExpectFetches(id, "alice", 0); !errors.Is(err, blobstore.ErrFetches) {
		t.Errorf("ExpectFetches(0): %v, want ErrFetches", err)
	}
	if err := s.ExpectFetches(id, "alice", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.ExpectFetches(id, "alice", 2); !errors.Is(err, blobstore.ErrFetches) {
		t.Errorf("ExpectFetches beyond MaxFetches: %v, want ErrFetches", err)
	}
}

func testConcurrentAppends(t *testing.T, open Open) {
	s := open(t, blobstore.Options{}).Store
	const blobs = 6
	datas := make([][]byte, blobs)
	ids := make([]blobstore.ID, blobs)
	for i := range blobs {
		datas[i] = RandomBytes(t, 1<<20+i*1000)
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
		if !bytes.Equal(ReadAll(t, s, ids[i]), datas[i]) {
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
			case errors.Is(err, blobstore.ErrOffset):
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

// The limits are inclusive: an owner name of blobstore.MaxOwnerLen bytes, uploads
// that fill the quota exactly, and fetches up to MaxFetches in all are
// accepted.
func testLimitsAreInclusive(t *testing.T, open Open) {
	s := open(t, blobstore.Options{MaxSize: 1 << 20, Quota: 2 * blobstore.Cost(1<<20), MaxFetches: 3}).Store
	if _, err := s.Create(strings.Repeat("o", blobstore.MaxOwnerLen), 1); err != nil {
		t.Errorf("Create with an owner of MaxOwnerLen bytes: %v", err)
	}
	for i := range 2 {
		if _, err := s.Create("alice", 1<<20); err != nil {
			t.Fatalf("upload %d of two that fill the quota exactly: %v", i+1, err)
		}
	}
	if _, err := s.Create("alice", 1); !errors.Is(err, blobstore.ErrQuota) {
		t.Errorf("a byte over the quota: %v, want ErrQuota", err)
	}
	id := CompleteBlob(t, s, "bob", []byte("x"))
	for _, n := range []int{2, 1} {
		if err := s.ExpectFetches(id, "bob", n); err != nil {
			t.Fatalf("ExpectFetches(%d) within MaxFetches: %v", n, err)
		}
	}
	if err := s.ExpectFetches(id, "bob", 1); !errors.Is(err, blobstore.ErrFetches) {
		t.Errorf("a fetch beyond MaxFetches: %v, want ErrFetches", err)
	}
}

// Unfinished uploads still count toward their owner's limit after a
// restart.
func testIncompleteUploadsCountAfterRestart(t *testing.T, open Open) {
	h := open(t, blobstore.Options{MaxIncomplete: 2})
	for range 2 {
		completeBlobStart(t, h.Store, "alice", 10)
	}
	s := h.Reopen(t)
	if _, err := s.Create("alice", 10); !errors.Is(err, blobstore.ErrTooManyUploads) {
		t.Errorf("a third unfinished upload after a restart: %v, want ErrTooManyUploads", err)
	}
}
