package queuebench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/internal/pgtest"
	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/pgstore"
)

// pgQueues are the store's queues on PostgreSQL: one row per waiting
// message, keyed by device and seq; a device's cursor is the rows left.
type pgQueues struct {
	s   *pgstore.Store
	now time.Time
	pid int // the postmaster's, 0 if pgtest did not start it
}

// Users of the template database: every queue a workload may use.
const (
	maxRecipients = 1000
	maxSenders    = 32
)

// newPG opens a store on a new database with maxRecipients recipients
// and maxSenders senders, one device each, and a connection per sender
// (each of them commits on its own, as nodes do). fsync says whether
// PostgreSQL flushes its WAL: on for benchmarks.
func newPG(t testing.TB, fsync bool) *pgQueues {
	t.Helper()
	url := pgtest.NewDatabaseOpts(t, "queuebench", withUsers, pgtest.Options{Fsync: fsync})
	s, err := pgstore.Open(context.Background(), url, pgstore.Options{MaxConns: maxSenders})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Error(err)
		}
	})
	return &pgQueues{s: s, now: time.Unix(1_700_000_000, 0), pid: pgtest.ServerPID()}
}

// withUsers prepares the template: the schema and the users.
func withUsers(url string) error {
	ctx := context.Background()
	s, err := pgstore.Open(ctx, url, pgstore.Options{})
	if err != nil {
		return err
	}
	now := time.Unix(1_700_000_000, 0)
	for i, d := range devices(maxRecipients, maxSenders) {
		if _, err := s.CreateUser(ctx, d.String(), [store.KeySize]byte{byte(i), byte(i >> 8), 1}, now); err != nil {
			s.Close()
			return err
		}
	}
	return s.Close()
}

func (q *pgQueues) enqueue(ctx context.Context, from int, first uint64, to []int) error {
	b := &store.Batch{Now: q.now}
	for i, d := range to {
		e := &store.Enqueue{
			From:    store.DeviceAddr{User: sender(from).String(), Device: 1},
			To:      recipient(d).String(),
			Payload: payload,
			Expires: q.now.Add(expiry),
		}
		binary.BigEndian.PutUint64(e.ClientID[:], first+uint64(i))
		b.Enqueues = append(b.Enqueues, e)
	}
	if err := q.s.Commit(ctx, b); err != nil {
		return err
	}
	for _, e := range b.Enqueues {
		if e.Err != nil || e.Duplicate || len(e.Queued) != 1 {
			return fmt.Errorf("enqueue: Err=%v Duplicate=%v, %d copies", e.Err, e.Duplicate, len(e.Queued))
		}
	}
	return nil
}

func (q *pgQueues) take(ctx context.Context, dev device, page int) (int, error) {
	addr := store.DeviceAddr{User: dev.String(), Device: 1}
	ms, err := q.s.Pending(ctx, addr, 0, page, q.now)
	if err != nil || len(ms) == 0 {
		return 0, err
	}
	a := &store.Ack{Device: addr, Expires: q.now.Add(expiry)}
	for _, m := range ms {
		a.Seqs = append(a.Seqs, m.Seq)
	}
	if err := q.s.Commit(ctx, &store.Batch{Now: q.now, Acks: []*store.Ack{a}}); err != nil {
		return 0, err
	}
	return len(ms), nil
}

func (q *pgQueues) otherCPU() time.Duration {
	if q.pid == 0 {
		return 0
	}
	return treeCPU(q.pid)
}

// treeCPU is the CPU time of process pid, of its children that are gone
// (the kernel adds theirs to pid's when pid reaps them), and of its
// children that are running: for a postmaster, PostgreSQL's whole CPU.
// PostgreSQL's backends are the postmaster's children, never deeper.
func treeCPU(pid int) time.Duration {
	ticks := procTicks(pid, true)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		if procParent(child) == pid {
			ticks += procTicks(child, false)
		}
	}
	// /proc counts in USER_HZ, which is 100 on Linux (sysconf(_SC_CLK_TCK)).
	return time.Duration(ticks) * (time.Second / 100)
}

// procStat returns the fields of /proc/pid/stat after the command (field
// 3 on), or nil. The command is in parentheses and may hold spaces.
func procStat(pid int) []string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

func procParent(pid int) int {
	f := procStat(pid)
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1]) // field 4
	return ppid
}

// procTicks is utime+stime (fields 14 and 15), with reaped children's
// cutime+cstime (16 and 17) if children.
func procTicks(pid int, children bool) int64 {
	f := procStat(pid)
	if len(f) < 15 {
		return 0
	}
	n := 2
	if children {
		n = 4
	}
	var sum int64
	for _, s := range f[11 : 11+n] { // field 14 is f[11]
		v, _ := strconv.ParseInt(s, 10, 64)
		sum += v
	}
	return sum
}
