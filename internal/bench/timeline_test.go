package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// wellFormedSVG fails the test unless b is an XML document whose root is
// <svg> and that mentions every word of want.
func wellFormedSVG(t *testing.T, b []byte, want ...string) {
	t.Helper()
	var root struct{ XMLName xml.Name }
	if err := xml.Unmarshal(b, &root); err != nil || root.XMLName.Local != "svg" {
		t.Fatalf("not an SVG document: %v, root %q", err, root.XMLName.Local)
	}
	for _, w := range want {
		if !bytes.Contains(b, []byte(w)) {
			t.Errorf("the chart does not mention %q", w)
		}
	}
	if bytes.Contains(b, []byte("NaN")) {
		t.Error("NaN in the chart")
	}
}

// A second in which nothing completed has no latency: a gap in the plot,
// and 0 in JSON (which has no NaN).
func TestTimelineGaps(t *testing.T) {
	ss := []Sample{
		{T: 1, SentPerS: 100, AckedPerS: 100, RecvPerS: 100, AckP50Ms: 1, AckP99Ms: 2, RecvP50Ms: 1, RecvP99Ms: 3},
		{T: 2, SentPerS: 100, AckP50Ms: math.NaN(), AckP99Ms: math.NaN(), RecvP50Ms: math.NaN(), RecvP99Ms: math.NaN()},
		{T: 3, SentPerS: 100, AckedPerS: 200, RecvPerS: 200, AckP50Ms: 5, AckP99Ms: 900, RecvP50Ms: 5, RecvP99Ms: 950},
	}
	clean := sampleJSON(ss)
	if _, err := json.Marshal(clean); err != nil {
		t.Fatalf("timeline does not marshal: %v", err)
	}
	if clean[1].AckP99Ms != 0 || !math.IsNaN(ss[1].AckP99Ms) {
		t.Errorf("sampleJSON: %+v (and it must not change its input)", clean[1])
	}
	var b bytes.Buffer
	if err := PlotTimeline(&b, "title", "sub", clean); err != nil {
		t.Fatal(err)
	}
	wellFormedSVG(t, b.Bytes(), "Throughput", "Latency", "send → ack p99")
}

// The chat report carries one sample a second, whose counts add up to the
// run's, and plots it.
func TestChatTimeline(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o := chatOpts()
	o.Duration = 2500 * time.Millisecond
	var progress strings.Builder
	o.Progress = &progress
	r, err := RunChat(ctx, s.Invite, o)
	if err != nil {
		t.Fatal(err)
	}
	checkChat(t, r)
	if len(r.Timeline) < 2 {
		t.Fatalf("%d samples for a 2.5 s run", len(r.Timeline))
	}
	var acked float64
	for i, sm := range r.Timeline {
		if i > 0 && sm.T <= r.Timeline[i-1].T {
			t.Errorf("sample %d at %.2fs is not after the one before", i, sm.T)
		}
		dt := sm.T
		if i > 0 {
			dt = sm.T - r.Timeline[i-1].T
		}
		acked += sm.AckedPerS * dt
	}
	if last := r.Timeline[len(r.Timeline)-1]; last.AckedTotal != r.Acked {
		t.Errorf("the last sample counts %d acknowledged, the report %d", last.AckedTotal, r.Acked)
	}
	if math.Abs(acked-float64(r.Acked)) > 0.05*float64(r.Acked)+5 {
		t.Errorf("rates × seconds add up to %.0f acknowledged, the report says %d", acked, r.Acked)
	}
	if n := strings.Count(progress.String(), "\n"); n < 2 {
		t.Errorf("%d progress lines for a 2.5 s run:\n%s", n, progress.String())
	}
	var b bytes.Buffer
	if err := r.Plot(&b); err != nil {
		t.Fatal(err)
	}
	wellFormedSVG(t, b.Bytes(), "10 clients")
}

func TestCurve(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o := CurveOptions{Axis: "size", Values: []int{64, 4096}, Baseline: true, Chat: chatOpts()}
	r, err := RunCurve(ctx, s.Invite, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Points) != 2 || r.Points[0].X != 64 || r.Points[1].X != 4096 {
		t.Fatalf("points %+v", r.Points)
	}
	for _, p := range r.Points {
		if p.Magpie.Size != p.X || p.Raw == nil || p.Raw.Size != p.X {
			t.Errorf("point %d ran with size %d (raw %+v)", p.X, p.Magpie.Size, p.Raw)
		}
		checkChat(t, p.Magpie)
		if p.AckedPerS <= 0 || p.P99AckMs <= 0 {
			t.Errorf("point %d: %+v", p.X, p)
		}
	}
	var b bytes.Buffer
	if err := r.Plot(&b, "curve"); err != nil {
		t.Fatal(err)
	}
	wellFormedSVG(t, b.Bytes(), "message size", "4 KiB")
	if _, err := RunCurve(ctx, s.Invite, CurveOptions{Axis: "colour", Values: []int{1}, Chat: chatOpts()}); err == nil {
		t.Error("an unknown axis was accepted")
	}
}

// Open-loop schedules offer the target rate, whether each client sends
// hundreds of messages in a run or only two (the old uniform first
// arrival made the second case offer 22% too much).
func TestScheduleOffersTheRate(t *testing.T) {
	for _, uniform := range []bool{false, true} {
		for _, perClient := range []float64{0.15, 50} {
			const clients, d = 4000, 15 * time.Second
			rng := newRand()
			total := 0
			for range clients {
				total += len(schedule(perClient, d, uniform, rng))
			}
			want := perClient * d.Seconds() * clients
			if math.Abs(float64(total)-want) > 0.03*want {
				t.Errorf("uniform %v, %.2f msg/s each: %d sends, want %.0f ± 3%%", uniform, perClient, total, want)
			}
		}
	}
}
