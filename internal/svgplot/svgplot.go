// Package svgplot draws line charts as standalone SVG documents, with the
// standard library only, for magpie bench's reports (throughput and latency
// over time) and the docs' performance curves (throughput and latency
// against clients or message size).
//
// A Chart is a title over Panels stacked vertically; each panel has its own
// axes, series and legend, and all panels share the plot's left edge so that
// time axes line up. Output is deterministic — the same Chart always yields
// the same bytes, coordinates rounded to 0.1 px — so charts can be checked
// in and golden-tested.
//
// Data is taken as measured: a point with a NaN or infinite coordinate, or a
// non-positive one on a logarithmic axis, is skipped and breaks its line
// there. Magnitudes beyond 1e150 (and below 1e-150 on a logarithmic axis)
// are treated the same way: no measurement comes near them, and the bound
// keeps the pixel arithmetic finite. A point that has no neighbour to join
// is drawn as a dot, so a single measurement still shows.
//
// Ticks: a linear axis steps by 1, 2 or 5 × 10^k. A logarithmic axis puts
// its ticks on powers of Axis.LogBase; left at zero, the base is 10 when the
// range spans at least two decades and 2 when it spans less (where powers of
// ten would leave one tick or none). Byte sizes want LogBase 2 whatever the
// span: 256 B … 64 KiB then gets every power of two, and 100 … 10,000
// clients gets 100, 1000, 10000 by default.
package svgplot

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Series is one line: Y[i] against X[i].
type Series struct {
	Name   string    // legend entry; empty leaves the series out of the legend
	X, Y   []float64 // paired by index; values past the shorter one are ignored
	Dashed bool      // draw the line dashed, e.g. for a target or a baseline
}

// Axis describes one axis of a panel.
type Axis struct {
	Label string
	Log   bool // logarithmic scale
	// LogBase is the base whose powers carry the ticks of a log axis: 10 or
	// 2 (or any integer ≥ 2). Zero picks 10 for ranges of two decades or
	// more and 2 below that.
	LogBase int
	// Min and Max fix the range when Min < Max (data outside is clipped);
	// otherwise, as with the zero values, the range comes from the data,
	// widened to the nearest ticks.
	Min, Max float64
	// IncludeZero makes an automatic linear range reach down (or up) to 0,
	// so that throughput and latency aren't exaggerated by a cut-off axis.
	IncludeZero bool
	// Format renders tick labels; nil prints plain numbers. See
	// FormatMillis, FormatCount and FormatBytes.
	Format func(float64) string
}

// Panel is one plot area with its own axes and legend.
type Panel struct {
	Title   string
	X, Y    Axis
	Series  []Series
	Markers bool // mark every point with a dot, for sparse curves
}

// Chart is a titled stack of panels.
type Chart struct {
	Title, Subtitle string
	Width           int // in px; 0 means 900 (GitHub scales it down to a README's width)
	Panels          []Panel
}

// WriteSVG writes the chart as a complete SVG document. The only errors are
// w's.
func (c Chart) WriteSVG(w io.Writer) error {
	_, err := w.Write(c.render())
	return err
}

const (
	defaultWidth = 900
	minWidth     = 320

	margin      = 16.0 // outer margin
	rightMargin = 36.0 // room for half of the last x tick label
	panelGap    = 28.0

	fontTitle      = 18.0
	fontSubtitle   = 13.0
	fontPanelTitle = 15.0
	fontText       = 13.0 // ticks, axis labels, legend

	legendRow    = 20.0
	legendSwatch = 24.0

	// maxAbs bounds the data magnitudes drawn and minLog the smallest value
	// on a log axis; see the package comment.
	maxAbs = 1e150
	minLog = 1e-150

	fontFamily = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"

	colorText  = "#222"
	colorMuted = "#555"
	colorFrame = "#999"
	colorGrid  = "#e3e3e3"
	colorMinor = "#f1f1f1"
)

// palette is Okabe and Ito's colour-blind-safe set, reordered so that the
// first colours are the most distinct on white and yellow comes last.
var palette = []string{
	"#0072B2", // blue
	"#D55E00", // vermillion
	"#009E73", // bluish green
	"#E69F00", // orange
	"#CC79A7", // reddish purple
	"#56B4E9", // sky blue
	"#000000", // black
	"#F0E442", // yellow
}

// seriesStyle gives the i-th series of a panel its colour; past the palette
// the colours repeat dashed, so two series never look the same.
func seriesStyle(i int, s Series) (color string, dashed bool) {
	return palette[i%len(palette)], s.Dashed || i >= len(palette)
}

// point is one (x, y) pair; ok is false for points that are not drawn.
type point struct {
	x, y float64
	ok   bool
}

// line is a series ready to draw.
type line struct {
	index    int // position in Panel.Series, which picks the colour
	series   Series
	points   []point
	drawable int // number of ok points
}

// panelPlan is what the first layout pass learns about a panel.
type panelPlan struct {
	lines []line
	xs    []float64 // every drawable x, for the axis range
	y     scale
}

// usable reports whether v can be drawn on a linear (or log) axis.
func usable(v float64, log bool) bool {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return false
	}
	if log {
		return v >= minLog && v <= maxAbs
	}
	return math.Abs(v) <= maxAbs
}

// planPanel sorts a panel's points into drawable and not, and returns
// with the plan the drawable y values, which only the first pass needs.
func planPanel(p Panel) (panelPlan, []float64) {
	var plan panelPlan
	var ys []float64
	for i, s := range p.Series {
		n := min(len(s.X), len(s.Y))
		l := line{index: i, series: s, points: make([]point, n)}
		for j := range n {
			x, y := s.X[j], s.Y[j]
			ok := usable(x, p.X.Log) && usable(y, p.Y.Log)
			l.points[j] = point{x, y, ok}
			if ok {
				l.drawable++
				plan.xs = append(plan.xs, x)
				ys = append(ys, y)
			}
		}
		if l.drawable > 0 {
			plan.lines = append(plan.lines, l)
		}
	}
	return plan, ys
}

func (c Chart) render() []byte {
	width := float64(defaultWidth)
	if c.Width > 0 {
		width = float64(max(c.Width, minWidth))
	}
	plotHeight := math.Max(140, math.Round(width*0.3))

	// First pass: the y axes' tick labels decide the left margin, which all
	// panels share so that their x axes line up.
	plans := make([]panelPlan, len(c.Panels))
	left := margin
	for i, p := range c.Panels {
		var ys []float64
		plans[i], ys = planPanel(p)
		plans[i].y = fitScale(p.Y, ys, plotHeight, false)
		labelWidth := 0.0
		for _, l := range plans[i].y.labels {
			labelWidth = math.Max(labelWidth, textWidth(l, fontText))
		}
		need := margin + labelWidth + 8
		if p.Y.Label != "" {
			need += fontText + 10
		}
		left = math.Max(left, need)
	}
	plotWidth := math.Max(100, width-left-rightMargin)

	var body bytes.Buffer
	y := margin
	if c.Title != "" {
		y += fontTitle
		fmt.Fprintf(&body, "<text x=\"%s\" y=\"%s\" font-size=\"%s\" font-weight=\"bold\" fill=\"%s\">%s</text>\n",
			coord(margin), coord(y), coord(fontTitle), colorText, esc(c.Title))
		y += 4
	}
	if c.Subtitle != "" {
		y += fontSubtitle + 4
		fmt.Fprintf(&body, "<text x=\"%s\" y=\"%s\" font-size=\"%s\" fill=\"%s\">%s</text>\n",
			coord(margin), coord(y), coord(fontSubtitle), colorMuted, esc(c.Subtitle))
	}
	if c.Title != "" || c.Subtitle != "" {
		y += 14
	}
	for i, p := range c.Panels {
		frame := rect{left: left, width: plotWidth, height: plotHeight}
		y = drawPanel(&body, p, plans[i], frame, y) + panelGap
	}
	if len(c.Panels) > 0 {
		y -= panelGap
	}
	height := math.Ceil(y + margin)

	var out bytes.Buffer
	fmt.Fprintf(&out, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%s\" height=\"%s\" viewBox=\"0 0 %s %s\" font-family=\"%s\" font-size=\"%s\" role=\"img\">\n",
		coord(width), coord(height), coord(width), coord(height), fontFamily, coord(fontText))
	if c.Title != "" {
		fmt.Fprintf(&out, "<title>%s</title>\n", esc(c.Title))
	}
	// An opaque background keeps the chart readable on dark pages.
	fmt.Fprintf(&out, "<rect width=\"%s\" height=\"%s\" fill=\"#fff\"/>\n", coord(width), coord(height))
	out.Write(body.Bytes())
	out.WriteString("</svg>\n")
	return out.Bytes()
}

// rect is a plot area in pixels; top is set per panel.
type rect struct {
	left, top, width, height float64
}

func (r rect) right() float64  { return r.left + r.width }
func (r rect) bottom() float64 { return r.top + r.height }

// px maps a point given as fractions of the axes' ranges to pixels. The
// explicit float64 conversions stop the compiler fusing multiply and add
// (it may on arm64), which would change the rounding and so the bytes.
func (r rect) px(fx, fy float64) (x, y float64) {
	return r.left + float64(fx*r.width), r.bottom() - float64(fy*r.height)
}

// drawPanel writes panel p with its top at y and returns its bottom.
func drawPanel(b *bytes.Buffer, p Panel, plan panelPlan, frame rect, y float64) float64 {
	xs := fitScale(p.X, plan.xs, frame.width, true)
	ys := plan.y
	b.WriteString("<g class=\"panel\">\n")

	if p.Title != "" {
		y += fontPanelTitle
		fmt.Fprintf(b, "<text x=\"%s\" y=\"%s\" font-size=\"%s\" font-weight=\"bold\" fill=\"%s\">%s</text>\n",
			coord(margin), coord(y), coord(fontPanelTitle), colorText, esc(p.Title))
		y += 4
	}
	y = drawLegend(b, plan.lines, frame, y)
	frame.top = y + 10

	drawGrid(b, xs, ys, frame)
	fmt.Fprintf(b, "<rect class=\"plot-area\" x=\"%s\" y=\"%s\" width=\"%s\" height=\"%s\" fill=\"none\" stroke=\"%s\"/>\n",
		coord(frame.left), coord(frame.top), coord(frame.width), coord(frame.height), colorFrame)

	// Tick labels.
	fmt.Fprintf(b, "<g fill=\"%s\" text-anchor=\"end\">\n", colorMuted)
	for i, v := range ys.major {
		_, py := frame.px(0, ys.frac(v))
		fmt.Fprintf(b, "<text x=\"%s\" y=\"%s\">%s</text>\n", coord(frame.left-8), coord(py+fontText*0.35), esc(ys.labels[i]))
	}
	b.WriteString("</g>\n")
	labelY := frame.bottom() + fontText + 6
	fmt.Fprintf(b, "<g fill=\"%s\" text-anchor=\"middle\">\n", colorMuted)
	for i, v := range xs.major {
		px, _ := frame.px(xs.frac(v), 0)
		fmt.Fprintf(b, "<text x=\"%s\" y=\"%s\">%s</text>\n", coord(px), coord(labelY), esc(xs.labels[i]))
	}
	b.WriteString("</g>\n")
	bottom := labelY

	// Axis labels.
	if p.X.Label != "" {
		bottom += fontText + 8
		fmt.Fprintf(b, "<text x=\"%s\" y=\"%s\" text-anchor=\"middle\" fill=\"%s\">%s</text>\n",
			coord(frame.left+frame.width/2), coord(bottom), colorText, esc(p.X.Label))
	}
	if p.Y.Label != "" {
		lx, ly := margin+fontText, frame.top+frame.height/2
		fmt.Fprintf(b, "<text x=\"%s\" y=\"%s\" transform=\"rotate(-90 %s %s)\" text-anchor=\"middle\" fill=\"%s\">%s</text>\n",
			coord(lx), coord(ly), coord(lx), coord(ly), colorText, esc(p.Y.Label))
	}

	if len(plan.lines) == 0 {
		fmt.Fprintf(b, "<text x=\"%s\" y=\"%s\" text-anchor=\"middle\" fill=\"%s\">no data</text>\n",
			coord(frame.left+frame.width/2), coord(frame.top+frame.height/2), colorMuted)
	}
	for _, l := range plan.lines {
		drawLine(b, l, xs, ys, frame, p.Markers)
	}
	b.WriteString("</g>\n")
	return bottom
}

// drawLegend lays the named series out in rows across the plot's width,
// starting below y, and returns the bottom of the last row.
func drawLegend(b *bytes.Buffer, lines []line, frame rect, y float64) float64 {
	x := frame.left
	rowStarted := false
	for _, l := range lines {
		if l.series.Name == "" {
			continue
		}
		itemWidth := legendSwatch + 6 + textWidth(l.series.Name, fontText)
		if !rowStarted || x+itemWidth > frame.right() && x > frame.left {
			if rowStarted {
				x = frame.left
			} else {
				b.WriteString("<g class=\"legend\">\n")
			}
			y += legendRow
			rowStarted = true
		}
		color, dashed := seriesStyle(l.index, l.series)
		mid := y - fontText*0.35
		fmt.Fprintf(b, "<path d=\"M%s %sH%s\" stroke=\"%s\" stroke-width=\"2.5\"%s/>\n",
			coord(x), coord(mid), coord(x+legendSwatch), color, dashAttr(dashed))
		fmt.Fprintf(b, "<text x=\"%s\" y=\"%s\" fill=\"%s\">%s</text>\n",
			coord(x+legendSwatch+6), coord(y), colorText, esc(l.series.Name))
		x += itemWidth + 20
	}
	if rowStarted {
		b.WriteString("</g>\n")
	}
	return y
}

func dashAttr(dashed bool) string {
	if dashed {
		return ` stroke-dasharray="7 4"`
	}
	return ""
}

func drawGrid(b *bytes.Buffer, xs, ys scale, frame rect) {
	gridPath := func(xv, yv []float64) string {
		var d strings.Builder
		for _, v := range xv {
			px, _ := frame.px(xs.frac(v), 0)
			fmt.Fprintf(&d, "M%s %sV%s", coord(px), coord(frame.top), coord(frame.bottom()))
		}
		for _, v := range yv {
			_, py := frame.px(0, ys.frac(v))
			fmt.Fprintf(&d, "M%s %sH%s", coord(frame.left), coord(py), coord(frame.right()))
		}
		return d.String()
	}
	if d := gridPath(xs.minor, ys.minor); d != "" {
		fmt.Fprintf(b, "<path class=\"grid-minor\" d=\"%s\" stroke=\"%s\"/>\n", d, colorMinor)
	}
	if d := gridPath(xs.major, ys.major); d != "" {
		fmt.Fprintf(b, "<path class=\"grid\" d=\"%s\" stroke=\"%s\"/>\n", d, colorGrid)
	}
}

// drawLine writes one series as a single path, clipped to the plot area,
// with a dot for each point that has no drawable neighbour and, if markers
// is set, for every point.
func drawLine(b *bytes.Buffer, l line, xs, ys scale, frame rect, markers bool) {
	color, dashed := seriesStyle(l.index, l.series)
	frac := make([]point, len(l.points))
	for i, p := range l.points {
		if p.ok {
			frac[i] = point{xs.frac(p.x), ys.frac(p.y), true}
		}
	}

	var path pathBuilder
	var dots []point // isolated or marked points, as fractions
	pen := -1        // index of the point the pen rests on, or -1
	for i, p := range frac {
		if !p.ok {
			pen = -1
			continue
		}
		prevOK := i > 0 && frac[i-1].ok
		nextOK := i+1 < len(frac) && frac[i+1].ok
		if (markers || !prevOK && !nextOK) && inUnit(p) {
			dots = append(dots, p)
		}
		if !nextOK {
			continue
		}
		q := frac[i+1]
		t0, t1, visible := clipUnit(p.x, p.y, q.x, q.y)
		if !visible {
			pen = -1
			continue
		}
		dx, dy := q.x-p.x, q.y-p.y
		if t0 > 0 || pen != i {
			path.moveTo(frame.px(p.x+float64(t0*dx), p.y+float64(t0*dy)))
		}
		path.lineTo(frame.px(p.x+float64(t1*dx), p.y+float64(t1*dy)))
		pen = -1
		if t1 == 1 {
			pen = i + 1
		}
	}

	name := ""
	if l.series.Name != "" {
		name = fmt.Sprintf(" data-name=\"%s\"", esc(l.series.Name))
	}
	if d := path.String(); d != "" {
		fmt.Fprintf(b, "<path class=\"series\"%s d=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" stroke-linejoin=\"round\" stroke-linecap=\"round\"%s/>\n",
			name, d, color, dashAttr(dashed))
	}
	if len(dots) > 0 {
		r := "3"
		if markers {
			r = "3.5"
		}
		fmt.Fprintf(b, "<g class=\"points\"%s fill=\"%s\" stroke=\"#fff\" stroke-width=\"1\">\n", name, color)
		for _, p := range dots {
			x, y := frame.px(p.x, p.y)
			fmt.Fprintf(b, "<circle cx=\"%s\" cy=\"%s\" r=\"%s\"/>\n", coord(x), coord(y), r)
		}
		b.WriteString("</g>\n")
	}
}

// inUnit reports whether a point given as fractions lies in the plot area,
// with a little slack for rounding at the edges.
func inUnit(p point) bool {
	const slack = 1e-9
	return p.x >= -slack && p.x <= 1+slack && p.y >= -slack && p.y <= 1+slack
}

// clipUnit clips the segment (ax, ay)→(bx, by) to the unit square
// (Liang–Barsky) and returns the parameters t0 ≤ t1 of its visible part.
func clipUnit(ax, ay, bx, by float64) (t0, t1 float64, visible bool) {
	t0, t1 = 0, 1
	dx, dy := bx-ax, by-ay
	for _, edge := range [4][2]float64{{-dx, ax}, {dx, 1 - ax}, {-dy, ay}, {dy, 1 - ay}} {
		p, q := edge[0], edge[1]
		if p == 0 {
			if q < 0 {
				return 0, 0, false
			}
			continue
		}
		r := q / p
		if p < 0 {
			if r > t1 {
				return 0, 0, false
			}
			t0 = math.Max(t0, r)
		} else {
			if r < t0 {
				return 0, 0, false
			}
			t1 = math.Min(t1, r)
		}
	}
	return t0, t1, true
}

// pathBuilder writes SVG path data, dropping steps that round to the point
// the pen is already on (thousands of samples share a few hundred pixels).
type pathBuilder struct {
	d    strings.Builder
	last string // the pen's position as written, "" before the first move
}

func (p *pathBuilder) moveTo(x, y float64) {
	p.last = coord(x) + " " + coord(y)
	p.d.WriteString("M" + p.last)
}

func (p *pathBuilder) lineTo(x, y float64) {
	at := coord(x) + " " + coord(y)
	if at == p.last {
		return
	}
	p.last = at
	p.d.WriteString("L" + at)
}

func (p *pathBuilder) String() string { return p.d.String() }

// scale is an axis fitted to its data: its range, ticks and labels.
type scale struct {
	lo, hi float64
	log    bool
	major  []float64 // labelled ticks, with gridlines
	minor  []float64 // fainter gridlines only (between decades on log axes)
	labels []string  // one per major tick
	// decimals is how many decimals plain labels need to tell the ticks
	// apart, or -1 for the shortest exact form.
	decimals int
}

// frac maps v to its position along the axis: 0 at lo, 1 at hi.
func (s scale) frac(v float64) float64 {
	if s.log {
		return (math.Log(v) - math.Log(s.lo)) / (math.Log(s.hi) - math.Log(s.lo))
	}
	return (v - s.lo) / (s.hi - s.lo)
}

// spanUsable reports whether [lo, hi] is a range an axis can show: both
// ends drawable and far enough apart for distinct ticks.
func spanUsable(lo, hi float64, log bool) bool {
	if !usable(lo, log) || !usable(hi, log) || !(lo < hi) {
		return false
	}
	if log {
		return hi/lo >= 1+1e-9
	}
	span := hi - lo
	return span >= 1e-150 && span >= 1e-9*math.Max(math.Abs(lo), math.Abs(hi))
}

// axisSpan returns the range the axis must show, and whether it is fixed
// by the caller (fixed ranges are not widened to ticks).
func axisSpan(a Axis, values []float64) (lo, hi float64, fixed bool) {
	if spanUsable(a.Min, a.Max, a.Log) {
		return a.Min, a.Max, true
	}
	if len(values) == 0 {
		if a.Log {
			return 1, 10, false
		}
		return 0, 1, false
	}
	lo, hi = values[0], values[0]
	for _, v := range values[1:] {
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	if a.IncludeZero && !a.Log {
		lo, hi = math.Min(lo, 0), math.Max(hi, 0)
	}
	if spanUsable(lo, hi, a.Log) {
		return lo, hi, false
	}
	// All values (about) equal: pad around them so the line sits mid-plot.
	mid := lo/2 + hi/2
	switch {
	case a.Log:
		return mid / 2, mid * 2, false
	case a.IncludeZero && mid == 0:
		return 0, 1, false
	}
	if pad := math.Abs(mid) / 10; pad >= 1e-100 {
		return mid - pad, mid + pad, false
	}
	return mid - 1, mid + 1, false // mid is 0 or as good as
}

// fitScale fits an axis of the given pixel length to values, with as many
// ticks as fit without their labels crowding.
func fitScale(a Axis, values []float64, length float64, horizontal bool) scale {
	lo, hi, fixed := axisSpan(a, values)
	target := int(length/40) + 1
	if horizontal {
		target = int(length/60) + 1
	}
	target = min(max(target, 2), 12)
	var s scale
	for ; target >= 2; target-- {
		s = makeScale(a, lo, hi, fixed, target)
		s.labels = make([]string, len(s.major))
		for i, v := range s.major {
			if a.Format != nil {
				s.labels[i] = a.Format(v)
			} else {
				s.labels[i] = plainLabel(v, s.decimals)
			}
		}
		if s.labelsFit(length, horizontal) {
			break
		}
	}
	return s
}

// labelsFit reports whether neighbouring tick labels keep clear of each
// other on an axis of the given pixel length.
func (s scale) labelsFit(length float64, horizontal bool) bool {
	for i := 1; i < len(s.major); i++ {
		gap := (s.frac(s.major[i]) - s.frac(s.major[i-1])) * length
		need := fontText + 6
		if horizontal {
			need = (textWidth(s.labels[i-1], fontText)+textWidth(s.labels[i], fontText))/2 + 12
		}
		if gap < need {
			return false
		}
	}
	return true
}

// makeScale places about target ticks over [lo, hi]; unless the range is
// fixed it widens to the outermost ticks.
func makeScale(a Axis, lo, hi float64, fixed bool, target int) scale {
	if a.Log {
		return makeLogScale(a.LogBase, lo, hi, fixed, target)
	}
	s := scale{lo: lo, hi: hi}
	s.major, s.decimals = linearTicks(&s.lo, &s.hi, fixed, target)
	return s
}

// step is a tick interval of mant × 10^exp, mant being 1, 2 or 5. Ticks are
// computed from integers, so 3 × 0.1 comes out as 0.3, not 0.30000000000000004.
type step struct {
	mant float64
	exp  int
}

// niceStep rounds raw to the nearest 1, 2 or 5 × 10^k (Heckbert, "Nice
// numbers for graph labels", Graphics Gems, 1990).
func niceStep(raw float64) step {
	exp := int(math.Floor(math.Log10(raw)))
	f := raw / math.Pow10(exp)
	switch {
	case f < 1.5:
		return step{1, exp}
	case f < 3:
		return step{2, exp}
	case f < 7:
		return step{5, exp}
	}
	return step{1, exp + 1}
}

// at returns the i-th multiple of the step.
func (s step) at(i float64) float64 {
	if s.exp >= 0 {
		return i * s.mant * math.Pow10(s.exp)
	}
	return i * s.mant / math.Pow10(-s.exp)
}

// linearTicks returns ticks every 1, 2 or 5 × 10^k across [*lo, *hi],
// about target of them, widening the range to them unless it is fixed, and
// the decimals their labels need.
func linearTicks(lo, hi *float64, fixed bool, target int) ([]float64, int) {
	st := niceStep((*hi - *lo) / float64(target-1))
	size := st.at(1)
	const slack = 1e-9 // so that 0.3/0.1 counts as 3
	first := math.Ceil(*lo/size - slack)
	last := math.Floor(*hi/size + slack)
	if !fixed {
		first = math.Floor(*lo/size + slack)
		last = math.Ceil(*hi/size - slack)
		*lo, *hi = st.at(first), st.at(last)
	}
	var ticks []float64
	for i := first; i <= last && len(ticks) <= 100; i++ {
		v := st.at(i)
		if v == 0 {
			v = 0 // no "-0"
		}
		ticks = append(ticks, v)
	}
	return ticks, max(0, -st.exp)
}

// makeLogScale places ticks on powers of the base (thinned to every k-th
// power when there are more than target), with fainter gridlines at
// 2…9 × 10^k on a decimal axis that labels every decade.
func makeLogScale(base int, lo, hi float64, fixed bool, target int) scale {
	if base < 2 {
		base = 2
		if hi/lo >= 100*(1-1e-9) {
			base = 10
		}
	}
	logBase := math.Log(float64(base))
	const slack = 1e-9 // so that log10(1000) = 2.9999999999999996 counts as 3
	eLo, eHi := math.Log(lo)/logBase, math.Log(hi)/logBase
	first, last := math.Ceil(eLo-slack), math.Floor(eHi+slack)
	if !fixed {
		first, last = math.Floor(eLo+slack), math.Ceil(eHi-slack)
		if first == last {
			first, last = first-1, last+1
		}
	}
	stride := math.Max(1, math.Ceil((last-first)/float64(target-1)))
	if !fixed {
		last = first + math.Ceil((last-first)/stride)*stride
		lo, hi = power(base, first), power(base, last)
	}
	s := scale{lo: lo, hi: hi, log: true, decimals: -1}
	for e := first; e <= last; e += stride {
		s.major = append(s.major, power(base, e))
	}
	if len(s.major) < 2 {
		// A fixed range inside one decade: plain steps read better than a
		// lone power.
		l, h := lo, hi
		ticks, decimals := linearTicks(&l, &h, true, target)
		s.major, s.decimals = nil, decimals
		for _, v := range ticks {
			if v > 0 {
				s.major = append(s.major, v)
			}
		}
		return s
	}
	if base == 10 && stride == 1 {
		for e := first - 1; e <= last; e++ {
			for m := 2.0; m <= 9; m++ {
				if v := m * power(10, e); v > lo && v < hi {
					s.minor = append(s.minor, v)
				}
			}
		}
	}
	return s
}

// power returns base^e exactly where the result is representable.
func power(base int, e float64) float64 {
	switch base {
	case 10:
		return math.Pow10(int(e))
	case 2:
		return math.Ldexp(1, int(e))
	}
	return math.Pow(float64(base), e)
}

// plainLabel formats a tick value for an axis without a Format: with the
// given decimals, or the shortest exact form when decimals is -1, and in
// exponent form when the number would be very long.
func plainLabel(v float64, decimals int) string {
	if v == 0 {
		return "0"
	}
	if a := math.Abs(v); a >= 1e15 || a < 1e-6 {
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
	return strconv.FormatFloat(v, 'f', decimals, 64)
}

// FormatMillis formats a duration given in milliseconds, to three
// significant digits, in the unit that reads best: "250 µs", "1 ms",
// "25 ms", "1.5 s".
func FormatMillis(ms float64) string {
	r := roundSig(ms)
	switch a := math.Abs(r); {
	case r == 0:
		return "0"
	case a < 1e-3:
		return shortest(roundSig(r*1e6)) + " ns"
	case a < 1:
		return shortest(roundSig(r*1e3)) + " µs"
	case a < 1e3:
		return shortest(r) + " ms"
	default:
		return shortest(roundSig(r/1e3)) + " s"
	}
}

// FormatCount formats a count to three significant digits with an SI
// suffix: "950", "10k", "1.5M", "2G".
func FormatCount(n float64) string {
	r := roundSig(n)
	for _, unit := range []struct {
		size   float64
		suffix string
	}{{1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if math.Abs(r) >= unit.size {
			return shortest(roundSig(r/unit.size)) + unit.suffix
		}
	}
	return shortest(r)
}

// FormatBytes formats a byte count to three significant digits in binary
// units: "256 B", "1 KiB", "64 KiB", "1.5 MiB".
func FormatBytes(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	u := 0
	for u+1 < len(units) && math.Abs(n) >= 1024 {
		n /= 1024
		u++
	}
	return shortest(roundSig(n)) + " " + units[u]
}

// roundSig rounds v to three significant digits.
func roundSig(v float64) float64 {
	r, err := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 3, 64), 64)
	if err != nil {
		return v // ±Inf, NaN
	}
	return r
}

// shortest formats v without an exponent, in as few digits as represent it.
func shortest(v float64) string {
	if v == 0 {
		v = 0 // no "-0"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// coord formats a pixel coordinate to 0.1 px, which is finer than any
// screen shows and keeps the output deterministic and small.
func coord(v float64) string {
	s := strings.TrimSuffix(strconv.FormatFloat(v, 'f', 1, 64), ".0")
	if s == "-0" {
		return "0"
	}
	return s
}

// textWidth estimates the width of s in a sans-serif font of the given
// size; SVG cannot measure text before it is shown.
func textWidth(s string, size float64) float64 {
	return float64(utf8.RuneCountInString(s)) * size * 0.58
}

// esc escapes s for XML text and attribute values; invalid UTF-8 and
// characters XML does not allow come out as U+FFFD.
func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // a strings.Builder does not fail
	return b.String()
}
