package router_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/magpie-im/magpie/router"
	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/sqlite"
)

// drainClient is a connected device that acknowledges what it is pushed
// the way clients do: whatever has arrived, at most 256 seqs an ack.
type drainClient struct {
	mu      sync.Mutex
	pending []uint64
	drained bool
	signal  chan struct{} // capacity 1
}

func (c *drainClient) Push(p router.Push) bool {
	c.mu.Lock()
	switch {
	case p.Message != nil:
		c.pending = append(c.pending, p.Message.Seq)
	case p.Drained:
		c.drained = true
	}
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
	return true
}

func (c *drainClient) Superseded() {}

// run acknowledges pushes until the drained marker and want messages have
// come, and returns how many messages came.
func (c *drainClient) run(sub *router.Subscription, want int) (int, error) {
	got := 0
	for {
		<-c.signal
		c.mu.Lock()
		seqs, drained := c.pending, c.drained
		c.pending = nil
		c.mu.Unlock()
		for len(seqs) > 0 {
			n := min(len(seqs), 256)
			if err := sub.Ack(seqs[:n]); err != nil {
				return got, err
			}
			got += n
			seqs = seqs[n:]
		}
		if drained && got >= want {
			return got, nil
		}
	}
}

// BenchmarkDrain measures the router and the SQLite store delivering a
// big offline queue to a device that reconnects: 20,000 1 KiB messages
// from 32 senders, pushed through the router's window and acknowledged,
// until the queue is empty in the store (every ack committed). The client
// is in-process and acknowledges at once, so this is the server side's
// ceiling without the network, the link's encryption or the wire encoding.
// One op is one drain; msgs/s and cpu-µs/msg (the process's CPU time
// while draining) are per message.
func BenchmarkDrain(b *testing.B) {
	const queue, senders = 20_000, 32
	ctx := context.Background()
	st, err := sqlite.Open(filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	bob := store.DeviceAddr{User: "bob", Device: 1}
	for i := range senders + 1 {
		name := "bob"
		if i > 0 {
			name = fmt.Sprintf("sender%d", i)
		}
		if _, err := st.CreateUser(ctx, name, [store.KeySize]byte{byte(i), byte(i >> 8), 2}, now); err != nil {
			b.Fatal(err)
		}
	}
	r := router.New(router.Config{Store: st, QueueLimit: 10 * queue})
	defer r.Close()
	payload := make([]byte, 1024)
	var next uint64
	fill := func() {
		for done := 0; done < queue; {
			batch := &store.Batch{Now: time.Now()}
			for i := range min(1024, queue-done) {
				next++
				e := &store.Enqueue{
					From:    store.DeviceAddr{User: fmt.Sprintf("sender%d", 1+i%senders), Device: 1},
					To:      "bob",
					Payload: payload,
					Expires: time.Now().Add(time.Hour),
				}
				binary.BigEndian.PutUint64(e.ClientID[:], next)
				batch.Enqueues = append(batch.Enqueues, e)
			}
			if err := st.Commit(ctx, batch); err != nil {
				b.Fatal(err)
			}
			done += len(batch.Enqueues)
		}
	}
	var msgs int
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		fill()
		b.StartTimer()
		t0 := cpuTime()
		c := &drainClient{signal: make(chan struct{}, 1)}
		sub := r.Attach(bob, c)
		got, err := c.run(sub, queue)
		if err != nil {
			b.Fatal(err)
		}
		if got != queue {
			b.Fatalf("%d messages pushed, want %d", got, queue)
		}
		// Empty means every ack is committed.
		for {
			left, err := st.Pending(ctx, bob, 0, 1, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			if len(left) == 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		sub.Detach()
		cpu += cpuTime() - t0
		msgs += got
	}
	b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu/time.Microsecond)/float64(msgs), "cpu-µs/msg")
}

// cpuTime is the process's CPU time so far (user and system). On a shared
// machine it is steadier than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
