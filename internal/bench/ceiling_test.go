package bench

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// fakeTarget sustains every rate below its ceiling, except that the first
// run at hiccup fails, and records the rates it was asked for.
type fakeTarget struct {
	ceiling, hiccup float64
	asked           []float64
}

func (f *fakeTarget) try(_ context.Context, rate float64) (CeilingTrial, error) {
	first := !slices.Contains(f.asked, rate)
	f.asked = append(f.asked, rate)
	t := CeilingTrial{Rate: rate, Sustained: rate < f.ceiling && !(rate == f.hiccup && first)}
	if !t.Sustained {
		t.Why = "over the fake ceiling"
	}
	return t, nil
}

func TestSearchCeiling(t *testing.T) {
	for _, c := range []struct {
		name                        string
		ceiling, hiccup, start, lim float64
		steps, tries                int
		wantAsked                   []float64
		wantMax                     float64
	}{
		{"doubles then bisects", 4321, 0, 1000, 1e6, 4, 1, []float64{1000, 2000, 4000, 8000, 6000, 5000, 4500, 4250}, 4250},
		{"a second try at each failure", 4321, 0, 1000, 1e6, 2, 2, []float64{1000, 2000, 4000, 8000, 8000, 6000, 6000, 5000, 5000}, 4000},
		{"one hiccup does not end the search", 4321, 2000, 1000, 1e6, 0, 2, []float64{1000, 2000, 2000, 4000, 8000, 8000}, 4000},
		{"one hiccup with one try does", 4321, 2000, 1000, 1e6, 0, 1, []float64{1000, 2000}, 1000},
		{"start too high: bisects below it", 300, 0, 1000, 1e6, 3, 1, []float64{1000, 500, 250, 375}, 250},
		{"nothing sustained", 1, 0, 1000, 1e6, 2, 1, []float64{1000, 500, 250}, 0},
		{"stops at the limit", 1e9, 0, 1000, 3000, 4, 1, []float64{1000, 2000, 3000}, 3000},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeTarget{ceiling: c.ceiling, hiccup: c.hiccup}
			s, err := searchCeiling(context.Background(), c.start, c.lim, c.steps, c.tries, f.try)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(f.asked, c.wantAsked) {
				t.Errorf("rates tried %v, want %v", f.asked, c.wantAsked)
			}
			if s.Max != c.wantMax || len(s.Trials) != len(c.wantAsked) {
				t.Errorf("Max %g from %d trials, want %g from %d", s.Max, len(s.Trials), c.wantMax, len(c.wantAsked))
			}
			switch {
			case c.wantMax == 0 && s.Best != nil:
				t.Errorf("Best = %+v with nothing sustained", s.Best)
			case c.wantMax > 0 && (s.Best == nil || s.Best.Rate != c.wantMax || !s.Best.Sustained):
				t.Errorf("Best = %+v, want the sustained trial at %g", s.Best, c.wantMax)
			}
		})
	}
	boom := errors.New("boom")
	_, err := searchCeiling(context.Background(), 10, 100, 2, 2, func(context.Context, float64) (CeilingTrial, error) { return CeilingTrial{}, boom })
	if !errors.Is(err, boom) {
		t.Errorf("a failing trial gave %v, want it wrapped", err)
	}
}

func TestJudge(t *testing.T) {
	ok := ChatReport{Rate: 100, Sent: 10, Acked: 10, Received: 10, Ack: Summary{P99: 5 * time.Millisecond}}
	for _, c := range []struct {
		name string
		edit func(*ChatReport)
		why  string // "" means sustained
	}{
		{"all in time", func(*ChatReport) {}, ""},
		{"nothing sent", func(r *ChatReport) { r.Sent, r.Acked, r.Received = 0, 0, 0 }, "nothing sent"},
		{"errors", func(r *ChatReport) { r.Errors = 2 }, "2 errors"},
		{"unacknowledged", func(r *ChatReport) { r.Acked, r.Received = 7, 7 }, "3 of 10 sends not acknowledged"},
		{"undelivered", func(r *ChatReport) { r.Received = 9 }, "1 acknowledged messages not delivered"},
		{"slow", func(r *ChatReport) { r.Ack.P99 = 150 * time.Millisecond }, "p99 ack 150.0ms over 100.0ms"},
	} {
		r := ok
		c.edit(&r)
		got := judge(&r, 100*time.Millisecond)
		if got.Sustained != (c.why == "") || got.Why != c.why {
			t.Errorf("%s: sustained %v, why %q; want why %q", c.name, got.Sustained, got.Why, c.why)
		}
	}
}

// TestCeiling searches a real server's ceiling and the raw relay's over a
// range both sustain at this small size, so both must reach the limit.
func TestCeiling(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := CeilingOptions{
		Chat:  ChatOptions{Clients: 4, Duration: 300 * time.Millisecond, Size: 256, Drain: 5 * time.Second},
		Start: 20, Limit: 80, MaxP99: time.Second, Tries: 1, Baseline: true,
	}
	r, err := RunCeiling(ctx, s.Invite, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", r.Text())
	for _, sr := range []*CeilingSearch{r.Raw, r.Magpie} {
		if sr == nil {
			t.Fatal("a search is missing")
		}
		var rates []float64
		for _, tr := range sr.Trials {
			rates = append(rates, tr.Rate)
			if !tr.Sustained {
				t.Errorf("%s at %.0f msg/s: not sustained (%s)", sr.Target, tr.Rate, tr.Why)
			}
		}
		if !slices.Equal(rates, []float64{20, 40, 80}) || sr.Max != 80 {
			t.Errorf("%s: rates %v, max %g; want 20, 40, 80 and 80", sr.Target, rates, sr.Max)
		}
	}
	if r.Ratio != 1 || !strings.Contains(r.Text(), "1.00× the raw relay's ceiling") {
		t.Errorf("ratio %g, want 1 (both reach the limit)", r.Ratio)
	}
}
