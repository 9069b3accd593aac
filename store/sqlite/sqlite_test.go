package sqlite_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/sqlite"
	"github.com/magpie-im/magpie/store/storetest"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		killChild(path)
		return
	}
	goleak.VerifyTestMain(m)
}

// open opens path and closes it when t ends.
func open(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(path, sqlite.Options{})
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

// createUsers creates one-device users with distinct keys.
func createUsers(t testing.TB, s *sqlite.Store, now time.Time, names ...string) {
	t.Helper()
	for i, u := range names {
		if _, err := s.CreateUser(context.Background(), u, [store.KeySize]byte{byte(i), byte(i >> 8), 1}, now); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		path := filepath.Join(t.TempDir(), "magpie.db")
		s := open(t, path)
		return storetest.Harness{
			Store: s,
			Reopen: func(t *testing.T) storetest.Store {
				if err := s.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				return open(t, path)
			},
		}
	})
}

func TestPragmas(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "magpie.db"))
	for _, c := range []struct {
		name  string
		write bool
		want  string
	}{
		{"journal_mode", true, "wal"},
		{"journal_mode", false, "wal"},
		{"synchronous", true, "2"}, // FULL
		{"synchronous", false, "2"},
		{"foreign_keys", true, "1"},
		{"foreign_keys", false, "1"},
		{"busy_timeout", true, "5000"},
		{"busy_timeout", false, "5000"},
		{"query_only", true, "0"},
		{"query_only", false, "1"},
		{"user_version", true, strconv.Itoa(sqlite.SchemaVersion)},
	} {
		got, err := sqlite.Pragma(s, c.name, c.write)
		if err != nil {
			t.Fatalf("PRAGMA %s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("PRAGMA %s (write conn %v) = %q, want %q", c.name, c.write, got, c.want)
		}
	}
	if len(sqlite.Migrations) != sqlite.SchemaVersion {
		t.Errorf("SchemaVersion = %d but there are %d migrations", sqlite.SchemaVersion, len(sqlite.Migrations))
	}
}

// TestCountersConsistent drives sends, acks (own, foreign, unknown, receipt)
// and expiry, and checks that every queue counter equals its queue length.
func TestCountersConsistent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "magpie.db")
	s := open(t, path)
	now := time.Unix(1_700_000_000, 0)
	createUsers(t, s, now, "alice", "bob")
	if _, err := s.AddDevice(ctx, "bob", [store.KeySize]byte{9}, now); err != nil {
		t.Fatal(err)
	}
	check := func(step string) {
		t.Helper()
		if err := sqlite.CheckCounters(s); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	alice, bob1, bob2 := store.DeviceAddr{User: "alice", Device: 1}, store.DeviceAddr{User: "bob", Device: 1}, store.DeviceAddr{User: "bob", Device: 2}
	var es []*store.Enqueue
	for i := range 10 {
		e := &store.Enqueue{From: alice, To: "bob", Payload: []byte{byte(i)}, Expires: now.Add(time.Duration(i+1) * time.Minute), QueueLimit: 8}
		e.ClientID[0] = byte(i)
		es = append(es, e)
	}
	if err := s.Commit(ctx, &store.Batch{Now: now, Enqueues: es}); err != nil {
		t.Fatal(err)
	}
	check("after sends")
	ms, err := s.Pending(ctx, bob1, 0, 100, now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.Pending(ctx, bob2, 0, 100, now)
	if err != nil {
		t.Fatal(err)
	}
	acks := []*store.Ack{
		{Device: bob1, Seqs: []uint64{ms[0].Seq, ms[0].Seq, ms[1].Seq, other[2].Seq, 1 << 40}, Expires: now.Add(time.Hour)},
		{Device: bob2, Seqs: []uint64{other[0].Seq}, Expires: now.Add(time.Minute)},
	}
	if err := s.Commit(ctx, &store.Batch{Now: now, Acks: acks}); err != nil {
		t.Fatal(err)
	}
	check("after acks")
	r, err := s.Pending(ctx, alice, 0, 100, now)
	if err != nil || len(r) != 3 {
		t.Fatalf("alice receipts = %d, %v; want 3", len(r), err)
	}
	if err := s.Commit(ctx, &store.Batch{Now: now, Acks: []*store.Ack{{Device: alice, Seqs: []uint64{r[0].Seq}}}}); err != nil {
		t.Fatal(err)
	}
	check("after receipt ack")
	if _, err := s.Expire(ctx, now.Add(4*time.Minute)); err != nil {
		t.Fatal(err)
	}
	check("after expire")
	// The counts are memory only: reopening must count the same queues.
	depth, err := s.QueueDepth(ctx)
	if err != nil || depth == 0 {
		t.Fatalf("QueueDepth = %d, %v; want some items left to recount", depth, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	check("after reopen")
	if got, err := s.QueueDepth(ctx); err != nil || got != depth {
		t.Fatalf("QueueDepth after reopen = %d, %v; want %d", got, err, depth)
	}
}

// TestReceiptForAGoneSender acknowledges a message whose sender's device no
// longer exists: the ack succeeds and queues no receipt.
func TestReceiptForAGoneSender(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "magpie.db")
	s := open(t, path)
	now := time.Unix(1_700_000_000, 0)
	createUsers(t, s, now, "alice", "bob")
	alice, bob := store.DeviceAddr{User: "alice", Device: 1}, store.DeviceAddr{User: "bob", Device: 1}
	e := &store.Enqueue{From: alice, To: "bob", Payload: []byte("hi"), Expires: now.Add(time.Hour)}
	if err := s.Commit(ctx, &store.Batch{Now: now, Enqueues: []*store.Enqueue{e}}); err != nil || e.Err != nil {
		t.Fatalf("enqueue: %v, %v", err, e.Err)
	}
	// No API removes a device yet; the schema allows it (ON DELETE CASCADE).
	db, err := sql.Open("sqlite", path+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(`DELETE FROM devices WHERE user = 'alice'`)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	a := &store.Ack{Device: bob, Seqs: []uint64{e.Queued[0].Seq}, Expires: now.Add(time.Hour)}
	if err := s.Commit(ctx, &store.Batch{Now: now, Acks: []*store.Ack{a}}); err != nil {
		t.Fatalf("ack: %v", err)
	}
	if len(a.Receipts) != 0 {
		t.Fatalf("ack queued %d receipts for a device that is gone", len(a.Receipts))
	}
	if err := sqlite.CheckCounters(s); err != nil {
		t.Fatal(err)
	}
	if n, err := s.QueueDepth(ctx); err != nil || n != 0 {
		t.Fatalf("QueueDepth = %d, %v; want 0", n, err)
	}
}

// TestMigrateCountsFromVersion2 opens a version 2 database, whose devices
// kept their queue length in a column, with items queued: the counts
// come from the queue itself, the column goes, and the queue limit holds.
func TestMigrateCountsFromVersion2(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "magpie.db")
	stmts := []string{sqlite.Migrations[0], sqlite.Migrations[1], `PRAGMA user_version = 2`,
		`INSERT INTO users (name, created) VALUES ('alice', 1), ('bob', 1)`,
		`INSERT INTO devices (user, id, key, created, queued) VALUES ('alice', 1, x'01', 1, 0), ('bob', 1, x'02', 1, 3)`,
	}
	for i := range 3 {
		stmts = append(stmts, fmt.Sprintf(`INSERT INTO queue (to_user, to_device, kind, from_user, from_device, client_id, payload, sent, expires)
			VALUES ('bob', 1, 1, 'alice', 1, x'%032x', x'00', 1, 9000000000000000000)`, i))
	}
	execAll(t, path, stmts...)

	s := open(t, path)
	if err := sqlite.CheckCounters(s); err != nil {
		t.Fatal(err)
	}
	if n, err := s.QueueDepth(ctx); err != nil || n != 3 {
		t.Fatalf("QueueDepth = %d, %v; want 3", n, err)
	}
	if n, err := sqlite.Pragma(s, "user_version", true); err != nil || n != strconv.Itoa(sqlite.SchemaVersion) {
		t.Fatalf("user_version = %q, %v; want %d", n, err, sqlite.SchemaVersion)
	}
	if cols, err := sqlite.Columns(s, "devices"); err != nil || slices.Contains(cols, "queued") || !slices.Contains(cols, "registration_id") {
		t.Fatalf("devices columns after migration = %q, %v; want no queued", cols, err)
	}
	now := time.Unix(1_700_000_000, 0)
	over := &store.Enqueue{From: store.DeviceAddr{User: "alice", Device: 1}, To: "bob", Payload: []byte("x"), Expires: now.Add(time.Hour), QueueLimit: 3}
	over.ClientID[0] = 0xff
	if err := s.Commit(ctx, &store.Batch{Now: now, Enqueues: []*store.Enqueue{over}}); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(over.Err, store.ErrQueueFull) {
		t.Fatalf("enqueue past a limit of 3 onto 3 migrated items: Err = %v, want ErrQueueFull", over.Err)
	}
}

// execAll runs stmts on the database at path, outside any store: an old
// schema for a migration test, or what no API does yet.
func execAll(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			db.Close()
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestOpenLocksTheDatabase: a second Open of the same database, while the
// first is open, fails with ErrInUse (the queue counts are right only if
// one process writes), and succeeds once the first is closed.
func TestOpenLocksTheDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "magpie.db")
	s := open(t, path)
	if s2, err := sqlite.Open(path, sqlite.Options{}); !errors.Is(err, sqlite.ErrInUse) {
		if err == nil {
			s2.Close()
		}
		t.Fatalf("second Open = %v, want ErrInUse", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	open(t, path)
}

func TestFileMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "magpie.db")
	s := open(t, path)
	ctx := context.Background()
	if _, err := s.CreateUser(ctx, "alice", [store.KeySize]byte{1}, time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"magpie.db", "magpie.db-wal"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s mode = %v, want 0600", name, perm)
		}
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "magpie.db")
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 42)
	s := open(t, path)
	if _, err := s.CreateUser(ctx, "alice", [store.KeySize]byte{1}, now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddDevice(ctx, "alice", [store.KeySize]byte{2}, now); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	u, err := s.User(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Devices) != 2 || !u.Created.Equal(now) {
		t.Fatalf("after reopen User = %+v", u)
	}
	// Device ids keep counting from where they were.
	d, err := s.AddDevice(ctx, "alice", [store.KeySize]byte{3}, now)
	if err != nil || d.Device != 3 {
		t.Fatalf("AddDevice after reopen = %+v, %v; want device 3", d, err)
	}
}

func TestOpenRejectsNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "magpie.db")
	s := open(t, path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(fmt.Sprintf("PRAGMA user_version = %d", sqlite.SchemaVersion+1))
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if s, err := sqlite.Open(path, sqlite.Options{}); err == nil {
		s.Close()
		t.Fatal("Open accepted a database with a newer schema")
	}
}

func TestOpenBadPath(t *testing.T) {
	for _, p := range []string{"", ":memory:", filepath.Join(t.TempDir(), "missing-dir", "x.db")} {
		if s, err := sqlite.Open(p, sqlite.Options{}); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", p)
		}
	}
}

// TestKillDurability kills a process with SIGKILL right after its Commits
// returned and checks that every one of them is in the database.
func TestKillDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	path := filepath.Join(t.TempDir(), "magpie.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked []uint64
	sc := bufio.NewScanner(out)
	for len(acked) < childCommits && sc.Scan() {
		seq, err := strconv.ParseUint(sc.Text(), 10, 64)
		if err != nil {
			t.Fatalf("child said %q", sc.Text())
		}
		acked = append(acked, seq)
	}
	// The child keeps committing; kill it mid-stream.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if len(acked) < childCommits {
		t.Fatalf("child reported only %d commits", len(acked))
	}

	s := open(t, path)
	ms, err := s.Pending(context.Background(), store.DeviceAddr{User: "bob", Device: 1}, 0, 1<<20, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	have := make(map[uint64]bool, len(ms))
	for _, m := range ms {
		have[m.Seq] = true
	}
	for _, seq := range acked {
		if !have[seq] {
			t.Fatalf("seq %d was committed before kill -9 but is missing", seq)
		}
	}
}

const (
	childEnv     = "MAGPIE_SQLITE_KILL_CHILD"
	childCommits = 20
)

// killChild commits forever, printing each committed seq, until killed.
func killChild(path string) {
	ctx := context.Background()
	s, err := sqlite.Open(path, sqlite.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	now := time.Unix(1_700_000_000, 0)
	for _, u := range []string{"alice", "bob"} {
		if _, err := s.CreateUser(ctx, u, [store.KeySize]byte{u[0]}, now); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	for i := 0; ; i++ {
		e := &store.Enqueue{
			From:    store.DeviceAddr{User: "alice", Device: 1},
			To:      "bob",
			Payload: make([]byte, 1024),
			Expires: now.Add(time.Hour),
		}
		e.ClientID[0], e.ClientID[1], e.ClientID[2] = byte(i), byte(i>>8), byte(i>>16)
		if err := s.Commit(ctx, &store.Batch{Now: now, Enqueues: []*store.Enqueue{e}}); err != nil || e.Err != nil {
			fmt.Fprintln(os.Stderr, err, e.Err)
			os.Exit(2)
		}
		fmt.Println(e.Queued[0].Seq)
	}
}
