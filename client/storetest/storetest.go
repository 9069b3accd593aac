// Package storetest checks that a client.Store keeps the contract the
// client relies on (see client.Store): atomic updates, views that see only
// what was committed, bytewise key order, and the edge cases of Get, Scan
// and Delete. A third-party store runs it from its own tests:
//
//	func TestStoreContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) client.Store {
//			return mystore.New(t.TempDir())
//		})
//	}
//
// It does not check durability across a crash, which needs the store's own
// way of reopening its data.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/magpie-im/magpie/client"
)

// Run runs the suite. open is called once per subtest and must return a
// new, empty store; Run closes it when the subtest ends.
func Run(t *testing.T, open func(t *testing.T) client.Store) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, opened(t, open)) })
	}
}

var cases = []struct {
	name string
	fn   func(t *testing.T, s client.Store)
}{
	{"GetMissingIsNilNil", testGetMissing},
	{"EmptyValueIsNotMissing", testEmptyValue},
	{"ValuesAreCopied", testValuesCopied},
	{"BinaryValues", testBinaryValues},
	{"FailedUpdateLeavesNothing", testFailedUpdate},
	{"UpdateReadsItsOwnWrites", testOwnWrites},
	{"ViewSeesCommittedOnly", testViewCommittedOnly},
	{"ViewIsASnapshot", testViewSnapshot},
	{"UpdatesRunOneAtATime", testUpdatesSerialize},
	{"ScanOrderIsBytewise", testScanOrder},
	{"ScanRanges", testScanRanges},
	{"ScanManyKeys", testScanMany},
	{"ScanStops", testScanStops},
	{"ScanKeepsToItsNamespace", testScanNamespace},
	{"GetInsideScan", testGetInsideScan},
	{"Delete", testDelete},
}

// opened opens a store for t and closes it when t ends.
func opened(t *testing.T, open func(t *testing.T) client.Store) client.Store {
	s := open(t)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

const ns = "test"

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// put commits key=value pairs (kv alternates keys and values).
func put(t *testing.T, s client.Store, kv ...string) {
	t.Helper()
	err := s.Update(ctx(t), func(tx client.Tx) error {
		for i := 0; i+1 < len(kv); i += 2 {
			if err := tx.Put(ns, kv[i], []byte(kv[i+1])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// view runs fn in a View; a failing View fails the test.
func view(t *testing.T, s client.Store, fn func(r client.ReadTx) error) {
	t.Helper()
	if err := s.View(ctx(t), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

// get reads key in a View.
func get(t *testing.T, s client.Store, key string) []byte {
	t.Helper()
	var v []byte
	view(t, s, func(r client.ReadTx) error {
		var err error
		v, err = r.Get(ns, key)
		return err
	})
	return v
}

// scan lists the keys Scan returns, in the order it returns them.
func scan(t *testing.T, r client.ReadTx, ns, from, to string, reverse bool) []string {
	t.Helper()
	keys := []string{}
	err := r.Scan(ns, from, to, reverse, func(k string, _ []byte) (bool, error) {
		keys = append(keys, k)
		return true, nil
	})
	if err != nil {
		t.Fatalf("Scan(%q, %q, %q, %v): %v", ns, from, to, reverse, err)
	}
	return keys
}

// viewScan is scan in a View of its own.
func viewScan(t *testing.T, s client.Store, from, to string, reverse bool) []string {
	t.Helper()
	var keys []string
	view(t, s, func(r client.ReadTx) error {
		keys = scan(t, r, ns, from, to, reverse)
		return nil
	})
	return keys
}

func testGetMissing(t *testing.T, s client.Store) {
	put(t, s, "present", "1")
	if err := s.Update(ctx(t), func(tx client.Tx) error { return tx.Put("other", "absent", []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"absent", "presen", "present\x00", "Present"} {
		if v := get(t, s, key); v != nil {
			t.Errorf("View Get(%q) = %q, want nil", key, v)
		}
		err := s.Update(ctx(t), func(tx client.Tx) error {
			v, err := tx.Get(ns, key)
			if err == nil && v != nil {
				err = fmt.Errorf("in Update, Get(%q) = %q, want nil", key, v)
			}
			return err
		})
		if err != nil {
			t.Error(err)
		}
	}
}

func testEmptyValue(t *testing.T, s client.Store) {
	// The client marks things as seen with an empty value: it must read
	// back as present.
	put(t, s, "empty", "")
	if v := get(t, s, "empty"); v == nil || len(v) != 0 {
		t.Fatalf("Get of an empty value = %#v, want a non-nil empty slice", v)
	}
	if keys := viewScan(t, s, "", "", false); !slices.Equal(keys, []string{"empty"}) {
		t.Fatalf("Scan = %q, want the empty value's key", keys)
	}
}

func testValuesCopied(t *testing.T, s client.Store) {
	v := []byte("original")
	if err := s.Update(ctx(t), func(tx client.Tx) error {
		err := tx.Put(ns, "k", v)
		copy(v, "CHANGED!") // the caller reuses its buffer
		return err
	}); err != nil {
		t.Fatal(err)
	}
	got := get(t, s, "k")
	if string(got) != "original" {
		t.Fatalf("after the caller changed its buffer, Get = %q", got)
	}
	copy(got, "CHANGED!") // and changes what Get returned
	if got := get(t, s, "k"); string(got) != "original" {
		t.Fatalf("after the caller changed Get's result, Get = %q", got)
	}
}

func testBinaryValues(t *testing.T, s client.Store) {
	// Sealed values are arbitrary bytes, some of them large.
	small := make([]byte, 256)
	for i := range small {
		small[i] = byte(i)
	}
	large := bytes.Repeat(small, 1024)
	if err := s.Update(ctx(t), func(tx client.Tx) error {
		return errors.Join(tx.Put(ns, "small", small), tx.Put(ns, "large", large))
	}); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "small"); !bytes.Equal(got, small) {
		t.Fatalf("every byte value: got %x", got)
	}
	if got := get(t, s, "large"); !bytes.Equal(got, large) {
		t.Fatalf("256 KiB value: got %d bytes", len(got))
	}
}

var errTest = errors.New("storetest: fn failed on purpose")

func testFailedUpdate(t *testing.T, s client.Store) {
	put(t, s, "keep", "1", "drop", "2")
	err := s.Update(ctx(t), func(tx client.Tx) error {
		if err := tx.Put(ns, "keep", []byte("overwritten")); err != nil {
			return err
		}
		if err := tx.Delete(ns, "drop"); err != nil {
			return err
		}
		if err := tx.Put(ns, "new", []byte("3")); err != nil {
			return err
		}
		if err := tx.Put("elsewhere", "new", []byte("4")); err != nil {
			return err
		}
		return errTest
	})
	if !errors.Is(err, errTest) {
		t.Fatalf("Update returned %v, want fn's error", err)
	}
	if got := get(t, s, "keep"); string(got) != "1" {
		t.Errorf("an overwrite of a failed Update was kept: %q", got)
	}
	if got := get(t, s, "drop"); string(got) != "2" {
		t.Errorf("a delete of a failed Update was kept: %q", got)
	}
	if got := get(t, s, "new"); got != nil {
		t.Errorf("a put of a failed Update was kept: %q", got)
	}
	if keys := viewScan(t, s, "", "", false); !slices.Equal(keys, []string{"drop", "keep"}) {
		t.Errorf("after a failed Update, Scan = %q", keys)
	}
	view(t, s, func(r client.ReadTx) error {
		if keys := scan(t, r, "elsewhere", "", "", false); len(keys) != 0 {
			t.Errorf("another namespace kept %q from a failed Update", keys)
		}
		return nil
	})
}

func testOwnWrites(t *testing.T, s client.Store) {
	put(t, s, "a", "1", "b", "2", "c", "3")
	err := s.Update(ctx(t), func(tx client.Tx) error {
		if err := errors.Join(tx.Put(ns, "b", []byte("two")), tx.Delete(ns, "c"), tx.Put(ns, "d", []byte("4"))); err != nil {
			return err
		}
		if v, err := tx.Get(ns, "b"); err != nil || string(v) != "two" {
			return fmt.Errorf("in Update, Get of an overwrite in the same Update = %q, %v", v, err)
		}
		if v, err := tx.Get(ns, "c"); err != nil || v != nil {
			return fmt.Errorf("in Update, Get of a delete in the same Update = %q, %v", v, err)
		}
		if keys := scan(t, tx, ns, "", "", false); !slices.Equal(keys, []string{"a", "b", "d"}) {
			return fmt.Errorf("in Update, Scan in the same Update = %q, want [a b d]", keys)
		}
		if keys := scan(t, tx, ns, "", "", true); !slices.Equal(keys, []string{"d", "b", "a"}) {
			return fmt.Errorf("reverse Scan in the same Update = %q, want [d b a]", keys)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// During an Update, a View either waits for it or sees what was there
// before; it never sees the Update's writes before they commit, nor those
// of an Update that fails.
func testViewCommittedOnly(t *testing.T, s client.Store) {
	put(t, s, "x", "old")
	for _, fail := range []bool{false, true} {
		inside, release := make(chan struct{}), make(chan struct{})
		updated := make(chan error, 1)
		go func() {
			updated <- s.Update(ctx(t), func(tx client.Tx) error {
				if err := tx.Put(ns, "x", []byte("uncommitted")); err != nil {
					return err
				}
				close(inside)
				<-release
				if fail {
					return errTest
				}
				return tx.Put(ns, "x", []byte("new"))
			})
		}()
		<-inside
		seen := make(chan string, 1)
		go func() {
			v, err := viewGet(ctx(t), s, "x")
			if err != nil {
				v = "error: " + err.Error()
			}
			seen <- v
		}()
		select {
		case v := <-seen: // this store runs Views beside an Update
			if v != "old" {
				t.Errorf("a View during an Update saw %q, want %q", v, "old")
			}
			close(release)
		case <-time.After(500 * time.Millisecond): // it makes them wait
			close(release)
			if v := <-seen; v == "uncommitted" {
				t.Errorf("a View saw an uncommitted write")
			}
		}
		err := <-updated
		want := "new"
		if fail {
			want = "old"
			if !errors.Is(err, errTest) {
				t.Fatalf("failing Update returned %v", err)
			}
		} else if err != nil {
			t.Fatal(err)
		}
		if got := get(t, s, "x"); string(got) != want {
			t.Fatalf("after the Update (failed: %v), Get = %q, want %q", fail, got, want)
		}
		put(t, s, "x", "old")
	}
}

func viewGet(c context.Context, s client.Store, key string) (string, error) {
	var v []byte
	err := s.View(c, func(r client.ReadTx) error {
		var err error
		v, err = r.Get(ns, key)
		return err
	})
	return string(v), err
}

// A View reads one state: an Update that commits while it runs changes
// nothing it reads.
func testViewSnapshot(t *testing.T, s client.Store) {
	put(t, s, "x", "1", "y", "1")
	firstRead, committed := make(chan struct{}), make(chan struct{})
	var x, y []byte
	viewed := make(chan error, 1)
	go func() {
		viewed <- s.View(ctx(t), func(r client.ReadTx) error {
			var err error
			if x, err = r.Get(ns, "x"); err != nil {
				return err
			}
			close(firstRead)
			select {
			case <-committed:
			case <-time.After(500 * time.Millisecond): // the store makes Updates wait for Views
			}
			y, err = r.Get(ns, "y")
			return err
		})
	}()
	<-firstRead
	if err := s.Update(ctx(t), func(tx client.Tx) error {
		return errors.Join(tx.Put(ns, "x", []byte("2")), tx.Put(ns, "y", []byte("2")))
	}); err != nil {
		t.Fatal(err)
	}
	close(committed)
	if err := <-viewed; err != nil {
		t.Fatal(err)
	}
	if string(x) != string(y) {
		t.Fatalf("one View read x=%s and y=%s: an Update committed in the middle of it", x, y)
	}
}

func testUpdatesSerialize(t *testing.T, s client.Store) {
	const n = 20
	errs := make(chan error, n)
	for range n {
		go func() {
			errs <- s.Update(ctx(t), func(tx client.Tx) error {
				v, err := tx.Get(ns, "counter")
				if err != nil {
					return err
				}
				return tx.Put(ns, "counter", append(v, 'x'))
			})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := get(t, s, "counter"); len(got) != n {
		t.Fatalf("%d concurrent increments left %d: Updates overlapped", n, len(got))
	}
}

// sortedKeys are in bytewise order: digits, upper case, lower case, a
// prefix before its extensions, then multi-byte UTF-8.
var sortedKeys = []string{"0", "B", "a", "a/1", "a/2", "a0", "ab", "b", "~", "é"}

func testScanOrder(t *testing.T, s client.Store) {
	for _, i := range []int{7, 2, 9, 0, 4, 1, 8, 3, 6, 5} {
		put(t, s, sortedKeys[i], "v"+sortedKeys[i])
	}
	if got := viewScan(t, s, "", "", false); !slices.Equal(got, sortedKeys) {
		t.Errorf("Scan = %q, want %q", got, sortedKeys)
	}
	want := slices.Clone(sortedKeys)
	slices.Reverse(want)
	if got := viewScan(t, s, "", "", true); !slices.Equal(got, want) {
		t.Errorf("reverse Scan = %q, want %q", got, want)
	}
	// Values go with their keys.
	view(t, s, func(r client.ReadTx) error {
		return r.Scan(ns, "", "", false, func(k string, v []byte) (bool, error) {
			if string(v) != "v"+k {
				return false, fmt.Errorf("scan gave %q the value %q", k, v)
			}
			return true, nil
		})
	})
}

func testScanRanges(t *testing.T, s client.Store) {
	for _, k := range sortedKeys {
		put(t, s, k, "v")
	}
	for _, c := range []struct {
		from, to string
		want     []string
	}{
		{"a", "b", []string{"a", "a/1", "a/2", "a0", "ab"}}, // from included, to excluded
		{"a/", "a0", []string{"a/1", "a/2"}},                // a prefix's range
		{"a/1", "a/2", []string{"a/1"}},
		{"a/10", "", []string{"a/2", "a0", "ab", "b", "~", "é"}}, // from need not exist; no upper bound
		{"", "B", []string{"0"}},
		{"b", "b", []string{}}, // empty
		{"b", "a", []string{}}, // backwards
		{"zz", "", []string{"~", "é"}},
		{"\x7f", "", []string{"é"}},
		{"\xff", "", []string{}},
	} {
		if got := viewScan(t, s, c.from, c.to, false); !slices.Equal(got, c.want) {
			t.Errorf("Scan [%q, %q) = %q, want %q", c.from, c.to, got, c.want)
		}
		rev := slices.Clone(c.want)
		slices.Reverse(rev)
		if got := viewScan(t, s, c.from, c.to, true); !slices.Equal(got, rev) {
			t.Errorf("reverse Scan [%q, %q) = %q, want %q", c.from, c.to, got, rev)
		}
	}
}

func testScanMany(t *testing.T, s client.Store) {
	// More keys than a store is likely to read in one batch.
	const n = 300
	var all []string
	err := s.Update(ctx(t), func(tx client.Tx) error {
		for i := range n {
			k := fmt.Sprintf("k%04d", i)
			all = append(all, k)
			if err := tx.Put(ns, k, []byte(k)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := viewScan(t, s, "", "", false); !slices.Equal(got, all) {
		t.Errorf("Scan of %d keys returned %d, first %q", n, len(got), got[:min(3, len(got))])
	}
	want := slices.Clone(all[37:251])
	if got := viewScan(t, s, all[37], all[251], false); !slices.Equal(got, want) {
		t.Errorf("Scan of a range of %d keys returned %d", len(want), len(got))
	}
	slices.Reverse(want)
	if got := viewScan(t, s, all[37], all[251], true); !slices.Equal(got, want) {
		t.Errorf("reverse Scan of a range of %d keys returned %d, first %q", len(want), len(got), got[:min(3, len(got))])
	}
}

func testScanStops(t *testing.T, s client.Store) {
	put(t, s, "a", "1", "b", "2", "c", "3", "d", "4")
	for _, reverse := range []bool{false, true} {
		var seen []string
		err := s.View(ctx(t), func(r client.ReadTx) error {
			return r.Scan(ns, "", "", reverse, func(k string, _ []byte) (bool, error) {
				seen = append(seen, k)
				return len(seen) < 2, nil
			})
		})
		want := []string{"a", "b"}
		if reverse {
			want = []string{"d", "c"}
		}
		if err != nil || !slices.Equal(seen, want) {
			t.Errorf("Scan (reverse %v) that stops after two saw %q (%v), want %q", reverse, seen, err, want)
		}
		seen = nil
		err = s.View(ctx(t), func(r client.ReadTx) error {
			return r.Scan(ns, "", "", reverse, func(k string, _ []byte) (bool, error) {
				seen = append(seen, k)
				return true, errTest
			})
		})
		if !errors.Is(err, errTest) || len(seen) != 1 {
			t.Errorf("Scan (reverse %v) whose fn fails returned %v after %d keys, want fn's error after one", reverse, err, len(seen))
		}
	}
}

func testScanNamespace(t *testing.T, s client.Store) {
	err := s.Update(ctx(t), func(tx client.Tx) error {
		for _, n := range []string{"a", "a.b", "ab", "b"} {
			if err := tx.Put(n, "k", []byte(n)); err != nil {
				return err
			}
			if err := tx.Put(n, "k."+n, []byte(n)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	view(t, s, func(r client.ReadTx) error {
		for _, n := range []string{"a", "a.b", "ab", "b"} {
			if got := scan(t, r, n, "", "", false); !slices.Equal(got, []string{"k", "k." + n}) {
				t.Errorf("Scan of namespace %q = %q", n, got)
			}
			if v, err := r.Get(n, "k"); err != nil || string(v) != n {
				t.Errorf("Get(%q, k) = %q, %v", n, v, err)
			}
		}
		if got := scan(t, r, "c", "", "", false); len(got) != 0 {
			t.Errorf("Scan of an empty namespace = %q", got)
		}
		return nil
	})
}

// The client reads records that a Scan points to while the Scan runs.
func testGetInsideScan(t *testing.T, s client.Store) {
	const n = 150
	err := s.Update(ctx(t), func(tx client.Tx) error {
		for i := range n {
			if err := tx.Put("index", fmt.Sprintf("%04d", i), []byte(fmt.Sprintf("rec%d", i))); err != nil {
				return err
			}
			if err := tx.Put(ns, fmt.Sprintf("rec%d", i), []byte("found")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	follow := func(r client.ReadTx) error {
		found := 0
		err := r.Scan("index", "", "", false, func(_ string, v []byte) (bool, error) {
			rec, err := r.Get(ns, string(v))
			if err != nil || string(rec) != "found" {
				return false, fmt.Errorf("Get(%q) inside Scan = %q, %v", v, rec, err)
			}
			found++
			return true, nil
		})
		if err == nil && found != n {
			err = fmt.Errorf("a Scan with a Get inside saw %d of %d keys", found, n)
		}
		return err
	}
	if err := s.View(ctx(t), follow); err != nil {
		t.Error("View:", err)
	}
	if err := s.Update(ctx(t), func(tx client.Tx) error { return follow(tx) }); err != nil {
		t.Error("Update:", err)
	}
}

func testDelete(t *testing.T, s client.Store) {
	put(t, s, "a", "1", "b", "2")
	err := s.Update(ctx(t), func(tx client.Tx) error {
		// Deleting what is not there is not an error.
		return errors.Join(tx.Delete(ns, "missing"), tx.Delete("empty-namespace", "a"), tx.Delete(ns, "a"))
	})
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if v := get(t, s, "a"); v != nil {
		t.Fatalf("Get after Delete = %q", v)
	}
	if keys := viewScan(t, s, "", "", false); !slices.Equal(keys, []string{"b"}) {
		t.Fatalf("Scan after Delete = %q", keys)
	}
	// Put again after a Delete, in one Update.
	if err := s.Update(ctx(t), func(tx client.Tx) error {
		return errors.Join(tx.Delete(ns, "b"), tx.Put(ns, "b", []byte("again")))
	}); err != nil {
		t.Fatal(err)
	}
	if v := get(t, s, "b"); string(v) != "again" {
		t.Fatalf("Get after Delete then Put = %q", v)
	}
}
