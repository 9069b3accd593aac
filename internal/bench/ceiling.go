package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/magpie-im/magpie/invite"
)

// CeilingOptions configure a ceiling search: the highest chat rate a target
// sustains. A throughput ratio between Magpie and the raw relay means
// something only there; at a rate both keep up with it is 1.0 by
// construction.
type CeilingOptions struct {
	// Chat is each trial's scenario; its Rate is set by the search.
	Chat ChatOptions
	// Start is the first rate tried (default 1,000 msg/s).
	Start float64
	// Limit is the highest rate tried (default 1,000,000 msg/s).
	Limit float64
	// MaxP99 is the p99 send → ack latency a sustained rate stays within
	// (default 100 ms). Open-loop latency grows without bound once the
	// offered rate is past what the target does, so this is what tells.
	MaxP99 time.Duration
	// Steps is how many times the search halves the interval between the
	// highest rate sustained and the lowest not (default 4: within 1/16 of
	// a doubling, about 7%).
	Steps int
	// Tries is how many runs a rate gets before it counts as not
	// sustained (default 2). One hiccup near the latency limit (a
	// collection, a checkpoint) should not end the search; a rate past the
	// ceiling fails every run, since its latency keeps growing.
	Tries int
	// Baseline searches the raw relay's ceiling too, with the same
	// scenario (at most MaxRawClients clients).
	Baseline bool
}

// CeilingTrial is one chat run of a search.
type CeilingTrial struct {
	Rate      float64 `json:"rate"`
	Sustained bool    `json:"sustained"`
	Why       string  `json:"why,omitempty"` // what failed, when not sustained
	AckedPerS float64 `json:"acked_per_s"`
	P99AckMs  float64 `json:"p99_ack_ms"`
	// ServerCPUPerMsgUs is the server's CPU per message (with --admin).
	ServerCPUPerMsgUs float64 `json:"server_cpu_per_message_us,omitempty"`
}

// CeilingSearch is one target's search.
type CeilingSearch struct {
	Target string `json:"target"` // "magpie" or "raw"
	// Max is the highest rate sustained, 0 if none was; Best is its trial.
	Max    float64        `json:"max_sustained_rate"`
	Best   *CeilingTrial  `json:"best,omitempty"`
	Trials []CeilingTrial `json:"trials"`
}

// CeilingReport is the outcome of a ceiling search.
type CeilingReport struct {
	Clients   int            `json:"clients"`
	Size      int            `json:"size"`
	DurationS float64        `json:"trial_duration_s"`
	MaxP99Ms  float64        `json:"max_p99_ack_ms"`
	Tries     int            `json:"tries"`
	Magpie    *CeilingSearch `json:"magpie"`
	Raw       *CeilingSearch `json:"raw,omitempty"`
	// Ratio is Magpie's ceiling over the raw relay's.
	Ratio float64 `json:"magpie_over_raw,omitempty"`
}

func (o *CeilingOptions) setDefaults() error {
	if o.Start == 0 {
		o.Start = 1000
	}
	if o.Limit == 0 {
		o.Limit = 1_000_000
	}
	if o.MaxP99 == 0 {
		o.MaxP99 = 100 * time.Millisecond
	}
	if o.Steps == 0 {
		o.Steps = 4
	}
	if o.Tries == 0 {
		o.Tries = 2
	}
	switch {
	case o.Start <= 0 || o.Limit < o.Start:
		return fmt.Errorf("bench ceiling: need 0 < start (%g) <= limit (%g)", o.Start, o.Limit)
	case o.Steps < 0 || o.Steps > 20:
		return fmt.Errorf("bench ceiling: steps must be 0 to 20, not %d", o.Steps)
	case o.Tries < 1 || o.Tries > 5:
		return fmt.Errorf("bench ceiling: tries must be 1 to 5, not %d", o.Tries)
	case o.MaxP99 < 0:
		return errors.New("bench ceiling: the p99 limit must be positive")
	case o.Baseline && o.Chat.Clients > MaxRawClients:
		return fmt.Errorf("bench ceiling: the raw relay runs at most %d clients", MaxRawClients)
	}
	return nil
}

// RunCeiling searches the highest chat rate the server of inv sustains,
// and with o.Baseline the raw relay's, and reports their ratio.
func RunCeiling(ctx context.Context, inv invite.Invite, o CeilingOptions) (*CeilingReport, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	rep := &CeilingReport{Clients: o.Chat.Clients, Size: o.Chat.Size, DurationS: o.Chat.Duration.Seconds(),
		MaxP99Ms: float64(o.MaxP99) / float64(time.Millisecond), Tries: o.Tries}
	trial := func(run func(context.Context, ChatOptions) (*ChatReport, error)) func(context.Context, float64) (CeilingTrial, error) {
		return func(ctx context.Context, rate float64) (CeilingTrial, error) {
			co := o.Chat
			co.Rate = rate
			if co.Progress != nil {
				fmt.Fprintf(co.Progress, "rate %.0f msg/s:\n", rate)
			}
			r, err := run(ctx, co)
			if err != nil {
				return CeilingTrial{}, err
			}
			return judge(r, o.MaxP99), nil
		}
	}
	if o.Baseline {
		s, err := searchCeiling(ctx, o.Start, o.Limit, o.Steps, o.Tries, trial(RunRawChat))
		if err != nil {
			return rep, fmt.Errorf("bench ceiling: raw: %w", err)
		}
		s.Target = "raw"
		rep.Raw = &s
	}
	s, err := searchCeiling(ctx, o.Start, o.Limit, o.Steps, o.Tries, trial(func(ctx context.Context, co ChatOptions) (*ChatReport, error) {
		return RunChat(ctx, inv, co)
	}))
	if err != nil {
		return rep, fmt.Errorf("bench ceiling: %w", err)
	}
	s.Target = "magpie"
	rep.Magpie = &s
	if rep.Raw != nil && rep.Raw.Max > 0 {
		rep.Ratio = rep.Magpie.Max / rep.Raw.Max
	}
	return rep, nil
}

// judge decides whether a chat run sustained its rate: every message
// acknowledged and delivered, no errors, and p99 send → ack within maxP99.
func judge(r *ChatReport, maxP99 time.Duration) CeilingTrial {
	t := CeilingTrial{Rate: r.Rate, AckedPerS: r.AckedPerS, P99AckMs: float64(r.Ack.P99) / float64(time.Millisecond),
		ServerCPUPerMsgUs: r.ServerCPUPerMsgUs}
	switch {
	case r.Sent == 0:
		t.Why = "nothing sent"
	case r.Errors > 0:
		t.Why = fmt.Sprintf("%d errors", r.Errors)
	case r.Acked < r.Sent:
		t.Why = fmt.Sprintf("%d of %d sends not acknowledged", r.Sent-r.Acked, r.Sent)
	case r.Received < r.Acked:
		t.Why = fmt.Sprintf("%d acknowledged messages not delivered", r.Acked-r.Received)
	case r.Ack.P99 > maxP99:
		t.Why = fmt.Sprintf("p99 ack %s over %s", fmtDur(r.Ack.P99), fmtDur(maxP99))
	default:
		t.Sustained = true
	}
	return t
}

// searchCeiling doubles the rate from start until a rate fails or limit
// is reached, then bisects steps times between the highest rate sustained
// and the lowest that was not. If even start fails, it bisects below it. A
// rate fails when tries trials in a row do not sustain it.
func searchCeiling(ctx context.Context, start, limit float64, steps, tries int, try func(context.Context, float64) (CeilingTrial, error)) (CeilingSearch, error) {
	var s CeilingSearch
	run := func(rate float64) (bool, error) {
		for range max(tries, 1) {
			t, err := try(ctx, rate)
			if err != nil {
				return false, fmt.Errorf("at %.0f msg/s: %w", rate, err)
			}
			s.Trials = append(s.Trials, t)
			if t.Sustained {
				s.Max = max(s.Max, rate)
				return true, nil
			}
		}
		return false, nil
	}
	lo, hi := 0.0, 0.0 // highest sustained, lowest not (0: none yet)
	for rate := start; ; rate = min(2*rate, limit) {
		ok, err := run(rate)
		if err != nil {
			return s, err
		}
		if !ok {
			hi = rate
			break
		}
		lo = rate
		if rate >= limit {
			return s.fix(), nil
		}
	}
	for range steps {
		mid := (lo + hi) / 2
		ok, err := run(mid)
		if err != nil {
			return s, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return s.fix(), nil
}

// fix sets Best, the trial that sustained Max.
func (s CeilingSearch) fix() CeilingSearch {
	s.Best = nil
	for i := range s.Trials {
		if t := &s.Trials[i]; t.Sustained && t.Rate == s.Max {
			s.Best = t
		}
	}
	return s
}

// Text renders the report as a table.
func (r *CeilingReport) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ceiling: %d clients, %d-byte payloads, %s a trial; sustained means every message acknowledged and delivered, no errors, p99 ack within %s, in one of %d runs\n",
		r.Clients, r.Size, fmtDur(time.Duration(r.DurationS*float64(time.Second))), fmtDur(time.Duration(r.MaxP99Ms*float64(time.Millisecond))), r.Tries)
	for _, s := range []*CeilingSearch{r.Raw, r.Magpie} {
		if s == nil {
			continue
		}
		fmt.Fprintf(&b, "\n%s\n%10s %10s %12s %10s %14s  %s\n", s.Target, "rate", "sustained", "acked/s", "p99 ack", "server µs/msg", "why not")
		for _, t := range s.Trials {
			cpu := "-"
			if t.ServerCPUPerMsgUs > 0 {
				cpu = fmt.Sprintf("%.0f", t.ServerCPUPerMsgUs)
			}
			yes := map[bool]string{true: "yes", false: "no"}[t.Sustained]
			fmt.Fprintf(&b, "%10.0f %10s %12.0f %10s %14s  %s\n", t.Rate, yes, t.AckedPerS,
				fmtDur(time.Duration(t.P99AckMs*float64(time.Millisecond))), cpu, t.Why)
		}
		if s.Max > 0 {
			fmt.Fprintf(&b, "%s sustains %.0f msg/s\n", s.Target, s.Max)
		} else {
			fmt.Fprintf(&b, "%s sustained none of the rates tried\n", s.Target)
		}
	}
	if r.Ratio > 0 {
		fmt.Fprintf(&b, "\nmagpie / raw on this box: %.2f× the raw relay's ceiling\n", r.Ratio)
	}
	return b.String()
}
