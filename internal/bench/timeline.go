package bench

import (
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/magpie-im/magpie/internal/svgplot"
)

// Sample is one second of a run: rates over the second and the latency
// percentiles of what completed in it.
type Sample struct {
	T          float64 `json:"t_s"` // end of the second, from the start of sending
	SentPerS   float64 `json:"sent_per_s"`
	AckedPerS  float64 `json:"acked_per_s"`
	RecvPerS   float64 `json:"received_per_s"`
	Errors     int64   `json:"errors"`
	AckP50Ms   float64 `json:"ack_p50_ms"`
	AckP99Ms   float64 `json:"ack_p99_ms"`
	RecvP50Ms  float64 `json:"deliver_p50_ms"`
	RecvP99Ms  float64 `json:"deliver_p99_ms"`
	AckedTotal int64   `json:"acked_total"`
}

// counters are what a sampler reads each second.
type counters struct {
	sent, acked, received, errors *atomic.Int64
	ack, deliver                  *Histogram
}

// sampler takes one Sample a second, prints it as the live progress line,
// and keeps them for the report's timeline and plot.
type sampler struct {
	c        counters
	begin    time.Time
	progress io.Writer
	label    func() string // extra text for the progress line, or nil

	stopOnce sync.Once
	stopc    chan struct{}
	done     chan struct{}
	samples  []Sample
}

func startSampler(c counters, begin time.Time, progress io.Writer) *sampler {
	c.ack.TakeInterval() // start the intervals
	c.deliver.TakeInterval()
	s := &sampler{c: c, begin: begin, progress: progress, stopc: make(chan struct{}), done: make(chan struct{})}
	go s.loop()
	return s
}

func (s *sampler) loop() {
	defer close(s.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := time.Now()
	var prev [4]int64
	take := func(now time.Time) {
		cur := [4]int64{s.c.sent.Load(), s.c.acked.Load(), s.c.received.Load(), s.c.errors.Load()}
		dt := now.Sub(last).Seconds()
		if dt <= 0 {
			return
		}
		a, d := s.c.ack.TakeInterval(), s.c.deliver.TakeInterval()
		ms := func(sum Summary, v time.Duration) float64 {
			if sum.Count == 0 {
				return math.NaN() // nothing completed: a gap, not a zero
			}
			return float64(v) / float64(time.Millisecond)
		}
		sm := Sample{
			T:        now.Sub(s.begin).Seconds(),
			SentPerS: float64(cur[0]-prev[0]) / dt, AckedPerS: float64(cur[1]-prev[1]) / dt,
			RecvPerS: float64(cur[2]-prev[2]) / dt, Errors: cur[3] - prev[3],
			AckP50Ms: ms(a, a.P50), AckP99Ms: ms(a, a.P99),
			RecvP50Ms: ms(d, d.P50), RecvP99Ms: ms(d, d.P99),
			AckedTotal: cur[1],
		}
		s.samples = append(s.samples, sm)
		if s.progress != nil {
			extra := ""
			if s.label != nil {
				extra = "  " + s.label()
			}
			fmt.Fprintf(s.progress, "%5.0fs  sent %d  acked %d (%.0f/s)  received %d (%.0f/s)  errors %d  p99 ack %s  p99 deliver %s%s\n",
				sm.T, cur[0], cur[1], sm.AckedPerS, cur[2], sm.RecvPerS, cur[3],
				fmtMs(sm.AckP99Ms), fmtMs(sm.RecvP99Ms), extra)
		}
		prev, last = cur, now
	}
	for {
		select {
		case now := <-tick.C:
			take(now)
		case <-s.stopc:
			if now := time.Now(); now.Sub(last) > 100*time.Millisecond {
				take(now) // the last partial second
			}
			return
		}
	}
}

// stop ends sampling and returns the samples.
func (s *sampler) stop() []Sample {
	s.stopOnce.Do(func() { close(s.stopc) })
	<-s.done
	return s.samples
}

func fmtMs(ms float64) string {
	if math.IsNaN(ms) {
		return "-"
	}
	return fmtDur(time.Duration(ms * float64(time.Millisecond)))
}

// sampleJSON keeps NaN (a second in which nothing completed) out of JSON,
// which has no NaN: such latencies are written as 0 with the count of
// acknowledgements that second telling them apart.
func sampleJSON(ss []Sample) []Sample {
	out := make([]Sample, len(ss))
	for i, s := range ss {
		for _, f := range []*float64{&s.AckP50Ms, &s.AckP99Ms, &s.RecvP50Ms, &s.RecvP99Ms} {
			if math.IsNaN(*f) {
				*f = 0
			}
		}
		out[i] = s
	}
	return out
}

// PlotTimeline draws throughput and latency over time as an SVG chart.
// Seconds in which nothing completed leave a gap in the latency lines.
func PlotTimeline(w io.Writer, title, subtitle string, ss []Sample) error {
	n := len(ss)
	t := make([]float64, n)
	sent, acked, recv := make([]float64, n), make([]float64, n), make([]float64, n)
	a50, a99, d99 := make([]float64, n), make([]float64, n), make([]float64, n)
	for i, s := range ss {
		t[i] = s.T
		sent[i], acked[i], recv[i] = s.SentPerS, s.AckedPerS, s.RecvPerS
		a50[i], a99[i], d99[i] = nanIfZero(s.AckP50Ms, s.AckedPerS), nanIfZero(s.AckP99Ms, s.AckedPerS), nanIfZero(s.RecvP99Ms, s.RecvPerS)
	}
	secs := func(v float64) string { return fmt.Sprintf("%gs", v) }
	c := svgplot.Chart{
		Title: title, Subtitle: subtitle,
		Panels: []svgplot.Panel{
			{
				Title: "Throughput",
				X:     svgplot.Axis{Label: "time since the first send", Format: secs},
				Y:     svgplot.Axis{Label: "messages per second", IncludeZero: true, Format: svgplot.FormatCount},
				Series: []svgplot.Series{
					{Name: "sent", X: t, Y: sent, Dashed: true},
					{Name: "acknowledged", X: t, Y: acked},
					{Name: "delivered", X: t, Y: recv},
				},
			},
			{
				Title: "Latency from the intended send time",
				X:     svgplot.Axis{Label: "time since the first send", Format: secs},
				Y:     svgplot.Axis{Label: "latency", Log: true, Format: svgplot.FormatMillis},
				Series: []svgplot.Series{
					{Name: "send → ack p50", X: t, Y: a50},
					{Name: "send → ack p99", X: t, Y: a99},
					{Name: "send → deliver p99", X: t, Y: d99, Dashed: true},
				},
			},
		},
	}
	return c.WriteSVG(w)
}

// nanIfZero turns a latency of a second with no completions (written as 0
// in JSON) back into a gap.
func nanIfZero(ms, rate float64) float64 {
	if rate == 0 || ms == 0 {
		return math.NaN()
	}
	return ms
}

// rateLines prints a progress line a second until done closes: line gets
// the counter's value and its rate since the previous line.
func rateLines(w io.Writer, done <-chan struct{}, begin time.Time, count func() int64, line func(elapsed time.Duration, n int64, perS float64) string) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last, lastT := int64(0), begin
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			n := count()
			if w != nil {
				fmt.Fprintln(w, line(now.Sub(begin), n, float64(n-last)/now.Sub(lastT).Seconds()))
			}
			last, lastT = n, now
		}
	}
}
