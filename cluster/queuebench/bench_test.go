package queuebench

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/magpie-im/magpie/store/storetest"
)

// The engines on the same workloads (docs/BENCHMARKS.md, "Where messages
// wait"). pg is PostgreSQL 15 with fsync on, which acknowledges a commit
// once its WAL is on disk. js is 3 JetStream servers in this process,
// which acknowledge a write once 2 of the 3 have it in memory and fsync
// every 2 minutes (their default); js-sync the same with sync_always, so
// that an acknowledgement is on 2 disks. cpu-µs/msg is all the CPU the
// workload took: this process's (client, and for js the servers) and, for
// pg, PostgreSQL's processes' (pg-cpu-µs/msg, included).

type engine struct {
	name string
	open func(b *testing.B, devs []device) queues
}

var engines = []engine{
	{"pg", func(b *testing.B, _ []device) queues { return newPG(b, true) }},
	{"js", func(b *testing.B, devs []device) queues { return newJS(b, false, devs) }},
	{"js-sync", func(b *testing.B, devs []device) queues { return newJS(b, true, devs) }},
}

// cpuMeter measures the CPU a stretch of work takes, in this process and
// in the engine's other processes.
type cpuMeter struct {
	q          queues
	self, othr time.Duration
}

func startCPU(q queues) *cpuMeter {
	return &cpuMeter{q: q, self: storetest.CPUTime(), othr: q.otherCPU()}
}

// report reports the CPU since startCPU per message.
func (m *cpuMeter) report(b *testing.B, msgs int) {
	othr := m.q.otherCPU() - m.othr
	all := storetest.CPUTime() - m.self + othr
	b.ReportMetric(float64(all.Microseconds())/float64(msgs), "cpu-µs/msg")
	if othr > 0 {
		b.ReportMetric(float64(othr.Microseconds())/float64(msgs), "pg-cpu-µs/msg")
	}
}

// Enqueue: concurrent senders, each sending batches of 1 KiB messages to
// recipients picked at random among 1,000 devices and waiting for each
// batch's acknowledgement before the next: 32 senders of one message (as
// many clients sending, each on its own), 4 of 64 (as a few nodes'
// committers, which batch), 32 of 64. A batch is one commit in pg,
// asynchronous publishes all in flight at once in js (batch=1: a
// synchronous publish). p50-ms and p99-ms are of the batch's wait. An op
// is 16 batches from every sender (2 of 64); run it with -benchtime in
// seconds. In js every recipient and sender has its consumer, created
// first (interest retention needs them).
func BenchmarkEnqueue(b *testing.B) {
	devs := devices(maxRecipients, maxSenders)
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			q := e.open(b, devs) // once for every case: a JetStream set-up takes half a minute
			for _, c := range []struct{ senders, batch int }{{32, 1}, {4, 64}, {32, 64}} {
				b.Run(fmt.Sprintf("senders=%d/batch=%d", c.senders, c.batch), func(b *testing.B) {
					benchEnqueue(b, q, c.senders, maxRecipients, c.batch)
				})
			}
		})
	}
}

func benchEnqueue(b *testing.B, q queues, senders, recipients, batch int) {
	rounds := max(2, 16/batch)
	ctx := context.Background()
	var ids atomic.Uint64                  // unique across the run, or a send is a duplicate
	ids.Store(uint64(senders*batch) << 40) // and across the cases' runs
	lat := make([][]time.Duration, senders)
	msgs := 0
	cpu := startCPU(q)
	for b.Loop() {
		var wg sync.WaitGroup
		for s := range senders {
			wg.Go(func() {
				rng := uint64(s+1) * ids.Load()
				to := make([]int, batch)
				for range rounds {
					for i := range to {
						rng = rng*6364136223846793005 + 1442695040888963407
						to[i] = int(rng>>33) % recipients
					}
					first := ids.Add(uint64(batch)) - uint64(batch) + 1
					t0 := time.Now()
					if err := q.enqueue(ctx, s, first, to); err != nil {
						b.Error(err)
						return
					}
					lat[s] = append(lat[s], time.Since(t0))
				}
			})
		}
		wg.Wait()
		if b.Failed() {
			b.FailNow()
		}
		msgs += senders * rounds * batch
	}
	cpu.report(b, msgs)
	b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
	reportLatency(b, slices.Concat(lat...))
}

// reportLatency reports the median and 99th percentile of the times a
// send waited for its acknowledgement.
func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	if len(lat) == 0 {
		return
	}
	ms := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
}

// drainQueue is how many messages wait for the draining device: an op
// takes a page (256, the router's push window), so -benchtime 80x or
// less.
const drainQueue = 20_480

// Drain: a device comes online and takes its queue of 1 KiB messages
// from 32 senders, a page at a time, each page acknowledged durably
// (which queues the senders' receipts) before the next is read. The
// queue is filled before the timer starts.
func BenchmarkDrain(b *testing.B) {
	const page = 256
	dev, devs := recipient(0), devices(1, maxSenders)
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			q := e.open(b, devs)
			ctx := context.Background()
			to := make([]int, 1024)
			for i := range drainQueue / len(to) {
				if err := q.enqueue(ctx, i%maxSenders, uint64(i*len(to)+1), to); err != nil {
					b.Fatal(err)
				}
			}
			msgs := 0
			cpu := startCPU(q)
			for b.Loop() {
				n, err := q.take(ctx, dev, page)
				if err != nil {
					b.Fatal(err)
				}
				if n < page {
					b.Fatalf("took %d of a page of %d: the queue is drained; use -benchtime %dx or less", n, page, drainQueue/page)
				}
				msgs += n
			}
			cpu.report(b, msgs)
			b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// Cursors: what a device's cursor costs in JetStream, a durable consumer
// with 3 replicas (each its own Raft group): creating n of them for new
// devices, 8 at a time (addConsumers); run it with -benchtime 1x (an op
// is all n). Reported per consumer: wall time, CPU, heap (the 3 servers'
// together, after a GC) and disk; then idle-cpu-% is what the n
// consumers cost doing nothing for 5 s, in percent of one core. In pg a
// cursor is no state at all: a device's queue is its rows.
func BenchmarkCursors(b *testing.B) {
	for _, e := range engines[1:] {
		for _, n := range []int{1000, 3000, 10_000} {
			b.Run(fmt.Sprintf("%s/n=%d", e.name, n), func(b *testing.B) {
				benchCursors(b, e.open(b, nil).(*jsQueues), n)
			})
		}
	}
}

func benchCursors(b *testing.B, q *jsQueues, n int) {
	ctx := context.Background()
	heap0, disk0 := heapInUse(), q.diskUsage()
	cpu := storetest.CPUTime()
	created := 0
	for b.Loop() {
		devs := make([]device, n)
		for i := range devs {
			devs[i] = recipient(created + i)
		}
		if err := q.addConsumers(ctx, devs); err != nil {
			b.Fatal(err)
		}
		created += n
	}
	per := func(v float64) float64 { return v / float64(created) }
	b.ReportMetric(per(float64(b.Elapsed().Microseconds())), "µs/consumer")
	b.ReportMetric(per(float64((storetest.CPUTime() - cpu).Microseconds())), "cpu-µs/consumer")
	b.ReportMetric(per(float64(heapInUse()-heap0)/1024), "heap-KiB/consumer")
	b.ReportMetric(per(float64(q.diskUsage()-disk0)/1024), "disk-KiB/consumer")
	const idle = 5 * time.Second
	cpu = storetest.CPUTime()
	time.Sleep(idle)
	b.ReportMetric(100*float64(storetest.CPUTime()-cpu)/float64(idle), "idle-cpu-%")
}

// heapInUse is the heap in use after a collection: the NATS servers'
// (and the client's) live memory.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// diskUsage is the size of the files in the servers' store directories.
func (q *jsQueues) diskUsage() int64 {
	var n int64
	for _, s := range q.srvs {
		filepath.WalkDir(s.JetStreamConfig().StoreDir, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if fi, err := d.Info(); err == nil {
					n += fi.Size()
				}
			}
			return nil
		})
	}
	return n
}
