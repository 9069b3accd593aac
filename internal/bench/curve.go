package bench

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/magpie-im/magpie/internal/svgplot"
	"github.com/magpie-im/magpie/invite"
)

// CurveOptions configure a curve: the chat scenario run once per value of
// one parameter, everything else as in Chat.
type CurveOptions struct {
	Axis   string // "clients" or "size"
	Values []int
	Chat   ChatOptions
	// Baseline also runs each point against the raw relay (those with at
	// most MaxRawClients clients).
	Baseline bool
}

// CurvePoint is one run of a curve.
type CurvePoint struct {
	X         int         `json:"x"`
	Magpie    *ChatReport `json:"magpie"`
	Raw       *ChatReport `json:"raw,omitempty"`
	AckedPerS float64     `json:"acked_per_s"`
	P99AckMs  float64     `json:"p99_ack_ms"`
	P99RecvMs float64     `json:"p99_deliver_ms"`
}

// CurveReport is a whole curve.
type CurveReport struct {
	Axis   string       `json:"axis"`
	Rate   float64      `json:"target_rate"`
	Points []CurvePoint `json:"points"`
}

// RunCurve runs the chat scenario once per value.
func RunCurve(ctx context.Context, inv invite.Invite, o CurveOptions) (*CurveReport, error) {
	if o.Axis != "clients" && o.Axis != "size" {
		return nil, fmt.Errorf("bench curve: the axis is clients or size, not %q", o.Axis)
	}
	if len(o.Values) == 0 {
		return nil, fmt.Errorf("bench curve: no values")
	}
	rep := &CurveReport{Axis: o.Axis, Rate: o.Chat.Rate}
	for _, v := range o.Values {
		co := o.Chat
		if o.Axis == "clients" {
			co.Clients = v
		} else {
			co.Size = v
		}
		if co.Progress != nil {
			fmt.Fprintf(co.Progress, "%s = %d:\n", o.Axis, v)
		}
		pt := CurvePoint{X: v}
		if o.Baseline && co.Clients <= MaxRawClients {
			raw, err := RunRawChat(ctx, co)
			if err != nil {
				return rep, fmt.Errorf("bench curve: %s %d, raw: %w", o.Axis, v, err)
			}
			raw.Timeline = nil
			pt.Raw = raw
		}
		r, err := RunChat(ctx, inv, co)
		if err != nil {
			return rep, fmt.Errorf("bench curve: %s %d: %w", o.Axis, v, err)
		}
		r.Timeline = nil // the curve is the summary; keep the report small
		pt.Magpie = r
		pt.AckedPerS = r.AckedPerS
		pt.P99AckMs = float64(r.Ack.P99) / float64(time.Millisecond)
		pt.P99RecvMs = float64(r.Deliver.P99) / float64(time.Millisecond)
		rep.Points = append(rep.Points, pt)
	}
	return rep, nil
}

// Text renders the curve as a table.
func (r *CurveReport) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "curve over %s at a target of %.0f msg/s\n", r.Axis, r.Rate)
	fmt.Fprintf(&b, "%10s %12s %12s %14s %8s %12s %14s\n", r.Axis, "acked/s", "p99 ack", "p99 deliver", "errors", "raw p99 ack", "server µs/msg")
	for _, p := range r.Points {
		raw := "-"
		if p.Raw != nil {
			raw = fmtDur(p.Raw.Ack.P99)
		}
		cpu := "-"
		if p.Magpie.ServerCPUPerMsgUs > 0 {
			cpu = fmt.Sprintf("%.0f", p.Magpie.ServerCPUPerMsgUs)
		}
		fmt.Fprintf(&b, "%10d %12.0f %12s %14s %8d %12s %14s\n", p.X, p.AckedPerS,
			fmtDur(p.Magpie.Ack.P99), fmtDur(p.Magpie.Deliver.P99), p.Magpie.Errors, raw, cpu)
	}
	return b.String()
}

// Plot draws throughput and p99 latency against the curve's axis (SVG,
// logarithmic x).
func (r *CurveReport) Plot(w io.Writer, title string) error {
	n := len(r.Points)
	x, thr, a99, d99, rawA99 := make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, 0, n)
	var rawX []float64
	for i, p := range r.Points {
		x[i], thr[i], a99[i], d99[i] = float64(p.X), p.AckedPerS, p.P99AckMs, p.P99RecvMs
		if p.Raw != nil {
			rawX = append(rawX, float64(p.X))
			rawA99 = append(rawA99, float64(p.Raw.Ack.P99)/float64(time.Millisecond))
		}
	}
	xa := svgplot.Axis{Label: "connected clients", Log: true, Format: svgplot.FormatCount}
	if r.Axis == "size" {
		xa = svgplot.Axis{Label: "message size", Log: true, LogBase: 2, Format: svgplot.FormatBytes}
	}
	lat := []svgplot.Series{{Name: "send → ack p99", X: x, Y: a99}, {Name: "send → deliver p99", X: x, Y: d99}}
	if len(rawX) > 0 {
		lat = append(lat, svgplot.Series{Name: "raw relay send → ack p99", X: rawX, Y: rawA99, Dashed: true})
	}
	c := svgplot.Chart{
		Title:    title,
		Subtitle: fmt.Sprintf("magpie bench chat at a target of %.0f msg/s, one run per point; server and load tool on the same 2 cores", r.Rate),
		Panels: []svgplot.Panel{
			{Title: "Throughput (acknowledged messages per second)", X: xa, Markers: true,
				Y:      svgplot.Axis{Label: "messages per second", IncludeZero: true, Format: svgplot.FormatCount},
				Series: []svgplot.Series{{Name: "acknowledged", X: x, Y: thr}}},
			{Title: "p99 latency from the intended send time", X: xa, Markers: true,
				Y:      svgplot.Axis{Label: "latency", Log: true, Format: svgplot.FormatMillis},
				Series: lat},
		},
	}
	return c.WriteSVG(w)
}
