package storetest

import (
	"context"
	"encoding/binary"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/magpie-im/magpie/store"
)

// The store benchmarks every implementation runs on the same workloads, so
// that their numbers compare (docs/BENCHMARKS.md, docs/ARCHITECTURE.md).
// cpu-µs/msg is the process's CPU time in Commit (or Pending) per message,
// which is what limits a busy 2-core server; msgs/s counts the wall clock,
// fsyncs included.

// BenchChatCommit measures the store's side of bench chat in its steady
// state. Each op is one batched commit of:
//   - msgs new 1 KiB enqueues between 2,000 one-device users,
//   - the recipients' acks of the messages the previous commit queued,
//   - the senders' acks of the receipts the previous commit queued.
//
// So every message costs, across three commits, what it costs in a chat:
// an enqueue, a delete and a receipt, and the receipt's delete. s must be
// new and empty.
func BenchChatCommit(b *testing.B, s Store, msgs int) {
	const users = 2000
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	name := func(i int) string { return fmt.Sprintf("user%04d", i) }
	for i := range users {
		if _, err := s.CreateUser(ctx, name(i), [store.KeySize]byte{byte(i), byte(i >> 8), 1}, now); err != nil {
			b.Fatal(err)
		}
	}
	payload := make([]byte, 1024)
	var (
		next     uint64 // client ids must be unique or the enqueue is a duplicate
		pushed   []store.Message
		receipts []store.Message
		done     int
		cpu      time.Duration
		rng      uint64 = 1
	)
	for b.Loop() {
		batch := &store.Batch{Now: now}
		for range msgs {
			rng = rng*6364136223846793005 + 1442695040888963407 // a fixed sequence: every run does the same work
			from := int(rng>>33) % users
			next++
			e := &store.Enqueue{
				From:    store.DeviceAddr{User: name(from), Device: 1},
				To:      name(from ^ 1),
				Payload: payload,
				Expires: now.Add(time.Hour),
			}
			binary.BigEndian.PutUint64(e.ClientID[:], next)
			batch.Enqueues = append(batch.Enqueues, e)
		}
		for _, m := range pushed {
			batch.Acks = append(batch.Acks, &store.Ack{Device: m.To, Seqs: []uint64{m.Seq}, Expires: now.Add(time.Hour)})
		}
		for _, r := range receipts {
			batch.Acks = append(batch.Acks, &store.Ack{Device: r.To, Seqs: []uint64{r.Seq}, Expires: now.Add(time.Hour)})
		}
		t0 := CPUTime()
		if err := s.Commit(ctx, batch); err != nil {
			b.Fatal(err)
		}
		cpu += CPUTime() - t0
		pushed, receipts = pushed[:0], receipts[:0]
		for _, e := range batch.Enqueues {
			if e.Err != nil || e.Duplicate || len(e.Queued) != 1 {
				b.Fatalf("enqueue: Err=%v Duplicate=%v, %d copies", e.Err, e.Duplicate, len(e.Queued))
			}
			pushed = append(pushed, e.Queued[0])
		}
		for _, a := range batch.Acks {
			receipts = append(receipts, a.Receipts...)
		}
		done += msgs
	}
	b.ReportMetric(float64(done)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu/time.Microsecond)/float64(done), "cpu-µs/msg")
}

// Drain is a store whose device bob/1 has a queue of 1 KiB messages from
// several senders, refilled on demand outside the timer: the store's side
// of a device draining a big offline queue.
type Drain struct {
	b       *testing.B
	S       Store
	Now     time.Time
	senders int
	next    uint64   // client ids must be unique or the enqueue is a duplicate
	queued  []uint64 // seqs queued for bob/1 and not yet handed out
	Bob     store.DeviceAddr
	// Group fills the queue with group messages, each to bob/1 and its
	// sender's own device, so that acknowledging one leaves a reference.
	Group bool
}

// NewDrain creates bob and senders other users in s, which must be empty.
func NewDrain(b *testing.B, s Store, senders int) *Drain {
	ctx := context.Background()
	d := &Drain{b: b, S: s, Now: time.Unix(1_700_000_000, 0), senders: senders, Bob: store.DeviceAddr{User: "bob", Device: 1}}
	for i := range senders + 1 {
		name := "bob"
		if i > 0 {
			name = fmt.Sprintf("sender%d", i)
		}
		if _, err := s.CreateUser(ctx, name, [store.KeySize]byte{byte(i), byte(i >> 8), 1}, d.Now); err != nil {
			b.Fatal(err)
		}
	}
	return d
}

// Fill queues n more messages for bob/1 (with the timer stopped).
func (d *Drain) Fill(n int) {
	d.b.StopTimer()
	defer d.b.StartTimer()
	payload := make([]byte, 1024)
	for n > 0 {
		k := min(n, 1024)
		batch := &store.Batch{Now: d.Now}
		for i := range k {
			d.next++
			from := store.DeviceAddr{User: fmt.Sprintf("sender%d", 1+i%d.senders), Device: 1}
			if d.Group {
				g := &store.GroupSend{From: from, Payload: payload, To: []store.DeviceAddr{d.Bob, from}, Expires: d.Now.Add(time.Hour)}
				binary.BigEndian.PutUint64(g.ClientID[:], d.next)
				batch.GroupSends = append(batch.GroupSends, g)
				continue
			}
			e := &store.Enqueue{From: from, To: "bob", Payload: payload, Expires: d.Now.Add(time.Hour)}
			binary.BigEndian.PutUint64(e.ClientID[:], d.next)
			batch.Enqueues = append(batch.Enqueues, e)
		}
		if err := d.S.Commit(context.Background(), batch); err != nil {
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

// Take hands out the n oldest queued seqs, refilling first if needed.
func (d *Drain) Take(n int) []uint64 {
	if len(d.queued) < n {
		d.Fill(max(n, 20_000))
	}
	s := d.queued[:n:n]
	d.queued = d.queued[n:]
	return s
}

// BenchAcks measures acknowledging a drained queue: each op is one batched
// commit of acks (256 seqs each, the router's push window) for bob/1, each
// of which also queues 256 receipts. Run it with -benchtime 24x: the queue
// holds a drain's worth (100,000), and a refill is not timed.
func (d *Drain) BenchAcks(acks int) {
	b := d.b
	d.Fill(100_000) // a drain's worth: -benchtime 24x takes 98,304 at acks=16
	ctx := context.Background()
	var msgs int
	var cpu time.Duration
	for b.Loop() {
		batch := &store.Batch{Now: d.Now}
		for range acks {
			batch.Acks = append(batch.Acks, &store.Ack{Device: d.Bob, Seqs: d.Take(256), Expires: d.Now.Add(time.Hour)})
		}
		t0 := CPUTime()
		if err := d.S.Commit(ctx, batch); err != nil {
			b.Fatal(err)
		}
		cpu += CPUTime() - t0
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

// BenchPending measures reading a drained queue in pages, as the router's
// delivery pump does: each op reads the next page of bob/1's queue.
func (d *Drain) BenchPending(page int) {
	b := d.b
	d.Fill(100_000)
	ctx := context.Background()
	var after uint64
	var msgs int
	t0 := CPUTime()
	for b.Loop() {
		ms, err := d.S.Pending(ctx, d.Bob, after, page, d.Now)
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
	b.ReportMetric(float64((CPUTime()-t0)/time.Microsecond)/float64(msgs), "cpu-µs/msg")
}

// CPUTime is the process's CPU time so far (user and system). On a shared
// machine it is steadier than the wall clock, which also counts waiting
// for the disk and for other processes.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
