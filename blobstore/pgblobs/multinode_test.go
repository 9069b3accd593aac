package pgblobs_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/blobstore/blobstoretest"
	"github.com/magpie-im/magpie/blobstore/pgblobs"
)

// Two Stores (two connection pools) on one database stand for two server
// processes of a cluster.
func nodes(t *testing.T, opts blobstore.Options) (a, b *pgblobs.Store) {
	t.Helper()
	url := newDB(t)
	return open(t, url, opts), open(t, url, opts)
}

// run starts f(i) for i in [0, n) and waits for them.
func run(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { f(i) })
	}
	wg.Wait()
}

// Appends at one offset through both nodes at once: exactly one wins each
// round, the others learn the winner's length, and the blob holds the
// winners' chunks.
func TestNodesAppendRace(t *testing.T) {
	a, b := nodes(t, blobstore.Options{})
	const rounds, racers, chunk = 6, 8, 1000
	id, err := a.Create("alice", rounds*chunk)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for round := range rounds {
		off := int64(round * chunk)
		datas := make([][]byte, racers)
		for i := range datas {
			datas[i] = bytes.Repeat([]byte{byte(round*racers + i)}, chunk)
		}
		var wins, conflicts atomic.Int32
		var winner atomic.Int32
		run(racers, func(i int) {
			node := []*pgblobs.Store{a, b}[i%2]
			n, err := node.Append(id, "alice", off, datas[i])
			var oe *blobstore.OffsetError
			switch {
			case err == nil && n == off+chunk:
				wins.Add(1)
				winner.Store(int32(i))
			case errors.As(err, &oe) && oe.Confirmed == off+chunk && n == off+chunk:
				conflicts.Add(1)
			default:
				t.Errorf("round %d, racer %d: Append = %d, %v", round, i, n, err)
			}
		})
		if wins.Load() != 1 || conflicts.Load() != racers-1 {
			t.Fatalf("round %d: %d appends won and %d conflicted, want 1 and %d", round, wins.Load(), conflicts.Load(), racers-1)
		}
		want = append(want, datas[winner.Load()]...)
	}
	if err := b.Complete(id, "alice", sha256.Sum256(want)); err != nil {
		t.Fatalf("Complete with the winners' bytes: %v", err)
	}
	if !bytes.Equal(blobstoretest.ReadAll(t, a, id), want) {
		t.Fatal("the blob is not the winners' chunks")
	}
}

// Creates of one owner through both nodes at once stay within the quota
// and the limit of incomplete uploads.
func TestNodesQuota(t *testing.T) {
	const fit = 10
	a, b := nodes(t, blobstore.Options{Quota: fit * blobstore.Cost(1000), MaxIncomplete: 1000})
	var ok, quota atomic.Int32
	run(4*fit, func(i int) {
		_, err := []*pgblobs.Store{a, b}[i%2].Create("alice", 1000)
		switch {
		case err == nil:
			ok.Add(1)
		case errors.Is(err, blobstore.ErrQuota):
			quota.Add(1)
		default:
			t.Error(err)
		}
	})
	if ok.Load() != fit || quota.Load() != 3*fit {
		t.Fatalf("%d Creates succeeded and %d hit the quota, want %d and %d", ok.Load(), quota.Load(), fit, 3*fit)
	}
	for _, s := range []*pgblobs.Store{a, b} {
		if got, want := s.Usage("alice"), fit*blobstore.Cost(1000); got != want {
			t.Errorf("Usage = %d, want %d", got, want)
		}
	}

	const max = 5
	c, d := nodes(t, blobstore.Options{MaxIncomplete: max})
	ok.Store(0)
	var many atomic.Int32
	run(4*max, func(i int) {
		_, err := []*pgblobs.Store{c, d}[i%2].Create("bob", 10)
		switch {
		case err == nil:
			ok.Add(1)
		case errors.Is(err, blobstore.ErrTooManyUploads):
			many.Add(1)
		default:
			t.Error(err)
		}
	})
	if ok.Load() != max || many.Load() != 3*max {
		t.Fatalf("%d Creates succeeded and %d were too many, want %d and %d", ok.Load(), many.Load(), max, 3*max)
	}
}

// An upload that moves from node to node, as a client reconnecting does,
// is downloaded through the other, and through it alone once the first
// is gone.
func TestNodesUploadThroughOneDownloadThroughOther(t *testing.T) {
	a, b := nodes(t, blobstore.Options{})
	data := blobstoretest.RandomBytes(t, 3<<20+17)
	id, err := a.Create("alice", int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	half := int64(len(data) / 2)
	blobstoretest.Upload(t, a, id, "alice", 0, data[:half], 64<<10)
	// The client reconnects to b and asks where to resume.
	conf, size, complete, err := b.Status(id, "alice")
	if err != nil || conf != half || size != int64(len(data)) || complete {
		t.Fatalf("Status through the other node = %d, %d, %v, %v", conf, size, complete, err)
	}
	blobstoretest.Upload(t, b, id, "alice", conf, data, 64<<10)
	if err := b.Complete(id, "alice", sha256.Sum256(data)); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil { // the first node is lost
		t.Fatal(err)
	}
	if !bytes.Equal(blobstoretest.ReadAll(t, b, id), data) {
		t.Fatal("the blob read through the other node differs")
	}
	// A resumed download through b, from the middle.
	r, _, err := b.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Seek(half-5, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(rest, data[half-5:]) {
		t.Fatalf("resumed download: %d bytes, %v", len(rest), err)
	}
}

// Devices reported through both nodes, many times each and at once, count
// once each; GC on both nodes at once deletes each dead blob once.
func TestNodesFetchCounting(t *testing.T) {
	a, b := nodes(t, blobstore.Options{})
	id := blobstoretest.CompleteBlob(t, a, "alice", []byte("photo"))
	if err := a.ExpectFetches(id, "alice", 2); err != nil {
		t.Fatal(err)
	}
	if err := b.ExpectFetches(id, "alice", 1); err != nil {
		t.Fatal(err)
	}
	// last: the reports complete the count, after which the blob is gone
	// and later reports get ErrNotFound.
	report := func(last bool, devices ...string) {
		t.Helper()
		run(8*len(devices), func(i int) {
			err := []*pgblobs.Store{a, b}[i%2].Fetched(id, devices[i%len(devices)])
			if err != nil && !(last && err == blobstore.ErrNotFound) {
				t.Error(err)
			}
		})
	}
	report(false, "bob.1", "carol.1")
	for _, s := range []*pgblobs.Store{a, b} {
		if _, _, err := s.Open(id); err != nil {
			t.Fatalf("Open after two of three devices: %v", err)
		}
	}
	report(true, "bob.1", "dave.1")
	for _, s := range []*pgblobs.Store{a, b} {
		if _, _, err := s.Open(id); err != blobstore.ErrNotFound {
			t.Fatalf("Open after every device: %v, want ErrNotFound", err)
		}
	}

	// More dead blobs, collected by both nodes at once.
	const more = 20
	for i := range more {
		x := blobstoretest.CompleteBlob(t, b, "bob", []byte(fmt.Sprint(i)))
		if err := b.ExpectFetches(x, "bob", 1); err != nil {
			t.Fatal(err)
		}
		if err := a.Fetched(x, "erin.1"); err != nil {
			t.Fatal(err)
		}
	}
	var removed atomic.Int32
	run(4, func(i int) {
		n, err := []*pgblobs.Store{a, b}[i%2].GC()
		if err != nil {
			t.Error(err)
		}
		removed.Add(int32(n))
	})
	if removed.Load() != more+1 {
		t.Errorf("the nodes' GCs removed %d blobs in all, want %d", removed.Load(), more+1)
	}
	if a.Usage("alice") != 0 || b.Usage("bob") != 0 {
		t.Errorf("Usage after GC: %d, %d, want 0, 0", a.Usage("alice"), b.Usage("bob"))
	}
}
