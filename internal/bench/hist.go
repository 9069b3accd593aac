// Package bench is magpie bench, the load tool: open-loop scenarios run
// against a live server through its invite (chat, handshake, hold) and a
// bare loopback relay to compare them with (the raw baseline).
//
// Latency is measured from each message's intended send time, computed in
// advance from the target rate, not from when the tool got round to
// sending it. A load generator that waits for one answer before it sends
// the next stops sending while the server stalls, and so never records the
// stall: "coordinated omission" (Gil Tene, "How NOT to Measure Latency",
// 2015; the fix is the one wrk2 uses).
package bench

import (
	"fmt"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram records latencies (microsecond resolution, 1 µs to 10 min, 3
// significant digits). It is safe for concurrent use.
type Histogram struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
	iv *hdrhistogram.Histogram // since the last TakeInterval, if enabled
}

const maxRecordable = int64(10 * time.Minute / time.Microsecond)

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{h: hdrhistogram.New(1, maxRecordable, 3)}
}

// Record adds one latency; values beyond the range are clamped to it.
func (h *Histogram) Record(d time.Duration) {
	us := int64(d / time.Microsecond)
	us = max(1, min(us, maxRecordable))
	h.mu.Lock()
	h.h.RecordValue(us) // cannot fail: us is within range
	if h.iv != nil {
		h.iv.RecordValue(us)
	}
	h.mu.Unlock()
}

// TakeInterval returns the percentiles of what was recorded since the last
// call (the first call starts the intervals and returns an empty Summary),
// for the timeline: one interval per second.
func (h *Histogram) TakeInterval() Summary {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.iv == nil {
		h.iv = hdrhistogram.New(1, maxRecordable, 2)
		return Summary{}
	}
	s := summarize(h.iv)
	h.iv.Reset()
	return s
}

// Summary returns the histogram's count and percentiles.
func (h *Histogram) Summary() Summary {
	h.mu.Lock()
	defer h.mu.Unlock()
	return summarize(h.h)
}

func summarize(h *hdrhistogram.Histogram) Summary {
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	return Summary{
		Count: h.TotalCount(),
		P50:   us(h.ValueAtQuantile(50)),
		P90:   us(h.ValueAtQuantile(90)),
		P99:   us(h.ValueAtQuantile(99)),
		P999:  us(h.ValueAtQuantile(99.9)),
		Max:   us(h.Max()),
		Mean:  time.Duration(h.Mean() * float64(time.Microsecond)),
	}
}

// P99 is the 99th percentile so far (for progress lines).
func (h *Histogram) P99() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return time.Duration(h.h.ValueAtQuantile(99)) * time.Microsecond
}

// Summary is a latency distribution. Durations marshal to JSON as
// nanoseconds; the *_ms fields of the reports carry the same in
// milliseconds.
type Summary struct {
	Count int64         `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	Max   time.Duration `json:"max_ns"`
	Mean  time.Duration `json:"mean_ns"`
}

// Row formats the summary as one table row under Header.
func (s Summary) Row(name string) string {
	return fmt.Sprintf("%-18s %9d %9s %9s %9s %9s %9s", name, s.Count,
		fmtDur(s.P50), fmtDur(s.P90), fmtDur(s.P99), fmtDur(s.P999), fmtDur(s.Max))
}

// SummaryHeader is the header line for Summary.Row.
const SummaryHeader = "latency               count       p50       p90       p99     p99.9       max"

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%dµs", d/time.Microsecond)
	}
}
