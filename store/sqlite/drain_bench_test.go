package sqlite_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/sqlite"
)

// drainStore is a store whose device bob/1 has a queue of 1 KiB messages
// from several senders, refilled on demand outside the timer: the
// store's side of a device draining a big offline queue.
type drainStore struct {
	b       *testing.B
	s       *sqlite.Store
	now     time.Time
	senders int
	next    uint64   // client ids must be unique or the enqueue is a duplicate
	queued  []uint64 // seqs queued for bob/1 and not yet handed out
	bob     store.DeviceAddr
	path    string
	// group fills the queue with group messages, each to bob/1 and its
	// sender's own device, so that acknowledging one leaves a reference.
	group bool
}

func newDrainStore(b *testing.B, senders int) *drainStore {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "bench.db")
	s, err := sqlite.Open(path, sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	d := &drainStore{b: b, s: s, now: time.Unix(1_700_000_000, 0), senders: senders, bob: store.DeviceAddr{User: "bob", Device: 1}, path: path}
	for i := range senders + 1 {
		name := "bob"
		if i > 0 {
			name = fmt.Sprintf("sender%d", i)
		}
		if _, err := s.CreateUser(ctx, name, [store.KeySize]byte{byte(i), byte(i >> 8), 1}, d.now); err != nil {
			b.Fatal(err)
		}
	}
	return d
}

// fill queues n more messages for bob/1 (with the timer stopped).
func (d *drainStore) fill(n int) {
	d.b.StopTimer()
	defer d.b.StartTimer()
	payload := make([]byte, 1024)
	for n > 0 {
		k := min(n, 1024)
		batch := &store.Batch{Now: d.now}
		for i := range k {
			d.next++
			from := store.DeviceAddr{User: fmt.Sprintf("sender%d", 1+i%d.senders), Device: 1}
			if d.group {
				g := &store.GroupSend{From: from, Payload: payload, To: []store.DeviceAddr{d.bob, from}, Expires: d.now.Add(time.Hour)}
				binary.BigEndian.PutUint64(g.ClientID[:], d.next)
				batch.GroupSends = append(batch.GroupSends, g)
				continue
			}
			e := &store.Enqueue{
				From:    from,
				To:      "bob",
				Payload: payload,
				Expires: d.now.Add(time.Hour),
			}
			binary.BigEndian.PutUint64(e.ClientID[:], d.next)
			batch.Enqueues = append(batch.Enqueues, e)
		}
		if err := d.s.Commit(context.Background(), batch); err != nil {
			d.b.Fatal(err)
		}
		for _, e := range batch.Enqueues {
			if e.Err != nil || len(e.Queued) != 1 {
				d.b.Fatalf("enqueue: Err=%v, %d copies", e.Err, len(e.Queued))
			}
			d.queued = append(d.queued, e.Queued[0].Seq)
		}
		for _, g := range batch.GroupSends {
			if g.Err != nil || len(g.Queued) != 2 {
				d.b.Fatalf("group send: Err=%v, %d queued", g.Err, len(g.Queued))
			}
			d.queued = append(d.queued, g.Queued[0].Seq)
		}
		n -= k
	}
}

// take hands out the n oldest queued seqs, refilling first if needed.
func (d *drainStore) take(n int) []uint64 {
	if len(d.queued) < n {
		d.fill(max(n, 20_000))
	}
	s := d.queued[:n:n]
	d.queued = d.queued[n:]
	return s
}

// BenchmarkAck measures the store's side of acknowledging a drained
// queue: each op is one batched commit of acks (256 seqs each, the router's
// push window) for bob/1, whose messages came from 32 senders, so each ack
// also queues 256 receipts. msgs/s is acknowledged messages per second of
// commits (one fsync each); cpu-µs/msg is the process's CPU time in Commit
// per message, steadier than msgs/s on a busy machine. Run it with
// -benchtime 24x: the queue holds a drain's worth (100,000), and a refill
// is not timed but does show in a CPU profile.
func BenchmarkAck(b *testing.B) {
	for _, acks := range []int{1, 16} {
		b.Run(fmt.Sprintf("acks=%d", acks), func(b *testing.B) {
			benchmarkDrainAcks(b, newDrainStore(b, 32), acks)
		})
	}
}

// benchmarkDrainAcks is BenchmarkAck's loop on d: commits of acks (256
// seqs each) for bob/1.
func benchmarkDrainAcks(b *testing.B, d *drainStore, acks int) {
	d.fill(100_000) // a drain's worth: -benchtime 24x takes 98,304 at acks=16
	ctx := context.Background()
	var msgs int
	var cpu time.Duration
	for b.Loop() {
		batch := &store.Batch{Now: d.now}
		for range acks {
			batch.Acks = append(batch.Acks, &store.Ack{Device: d.bob, Seqs: d.take(256), Expires: d.now.Add(time.Hour)})
		}
		t0 := cpuTime()
		if err := d.s.Commit(ctx, batch); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - t0
		for _, a := range batch.Acks {
			if len(a.Receipts) != len(a.Seqs) {
				b.Fatalf("%d receipts for %d acked seqs", len(a.Receipts), len(a.Seqs))
			}
			msgs += len(a.Receipts)
		}
	}
	b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu/time.Microsecond)/float64(msgs), "cpu-µs/msg")
}

// cpuTime is the process's CPU time so far (user and system). On a shared
// machine it is steadier than the wall clock, which also counts waiting
// for the disk and for other processes.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPending measures reading a drained queue in pages, as the
// router's delivery pump does: each op reads the next page of 1 KiB
// messages of bob/1. msgs/s is messages read per second; cpu-µs/msg is
// the process's CPU time per message read.
func BenchmarkPending(b *testing.B) {
	for _, page := range []int{128, 256} {
		b.Run(fmt.Sprintf("page=%d", page), func(b *testing.B) {
			benchmarkPending(b, newDrainStore(b, 32), page)
		})
	}
}

// benchmarkPending is BenchmarkPending's loop on d: pages of bob/1's queue.
func benchmarkPending(b *testing.B, d *drainStore, page int) {
	d.fill(100_000)
	ctx := context.Background()
	var after uint64
	var msgs int
	t0 := cpuTime()
	for b.Loop() {
		ms, err := d.s.Pending(ctx, d.bob, after, page, d.now)
		if err != nil {
			b.Fatal(err)
		}
		if len(ms) < page {
			after = 0 // wrap around: the queue is not consumed
			continue
		}
		after = ms[len(ms)-1].Seq
		msgs += len(ms)
	}
	b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64((cpuTime()-t0)/time.Microsecond)/float64(msgs), "cpu-µs/msg")
}

// BenchmarkOpenCountsQueues measures Open on a database with 100,000
// queued items: Open counts every device's queue (counts.go), so this is
// what a restart after a crash pays before it serves again.
func BenchmarkOpenCountsQueues(b *testing.B) {
	d := newDrainStore(b, 32)
	d.fill(100_000)
	path := d.path
	if err := d.s.Close(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		s, err := sqlite.Open(path, sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if n, err := s.QueueDepth(context.Background()); err != nil || n != 100_000 {
			b.Fatalf("QueueDepth = %d, %v; want 100000", n, err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
