package svgplot

import (
	"bytes"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"flag"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// noise is a small deterministic generator (an LCG) for the golden charts'
// data: integers only, so the data is the same on every platform.
type noise uint64

// next returns a value in [0, n).
func (s *noise) next(n int) int {
	*s = *s*6364136223846793005 + 1442695040888963407
	return int(uint64(*s)>>33) % n
}

// timeSeriesChart is what magpie bench draws: ten minutes of one-per-second
// samples with a ramp-up, a stall, and a few lost samples.
func timeSeriesChart() Chart {
	const seconds = 600
	var ts, sent, delivered, p50, p99 []float64
	rng := noise(1)
	for s := range seconds {
		ts = append(ts, float64(s))
		target := 10000
		if s < 30 {
			target = 10000 * (s + 1) / 30
		}
		sent = append(sent, float64(target-50+rng.next(100)))
		d := target - 200 + rng.next(300)
		l50, l99 := 1800+rng.next(400), 7000+rng.next(3000)
		switch {
		case s >= 300 && s < 306: // the server stalls
			d, l50, l99 = 300*(306-s), 40000, 120000+20000*(s-300)
		case s >= 306 && s < 312: // and catches up
			d, l50, l99 = target+7000-1000*(s-306), 9000, 60000
		}
		delivered = append(delivered, float64(d))
		p50 = append(p50, float64(l50)/1000)
		p99 = append(p99, float64(l99)/1000)
	}
	for s := 420; s < 425; s++ { // samples lost: the lines break here
		delivered[s], p50[s], p99[s] = math.NaN(), math.NaN(), math.NaN()
	}
	secs := func(v float64) string { return FormatMillis(v * 1000) }
	return Chart{
		Title:    "magpie bench chat — 10,000 msg/s offered, 1 KiB messages",
		Subtitle: "1,000 clients, one sample per second",
		Panels: []Panel{{
			Title: "Throughput",
			X:     Axis{Label: "time since start", Format: secs},
			Y:     Axis{Label: "messages/s", IncludeZero: true, Format: FormatCount},
			Series: []Series{
				{Name: "sent", X: ts, Y: sent, Dashed: true},
				{Name: "delivered", X: ts, Y: delivered},
			},
		}, {
			Title: "Latency (from intended send time)",
			X:     Axis{Label: "time since start", Format: secs},
			Y:     Axis{Label: "latency", IncludeZero: true, Format: FormatMillis},
			Series: []Series{
				{Name: "p50", X: ts, Y: p50},
				{Name: "p99", X: ts, Y: p99},
			},
		}},
	}
}

// clientsChart is the docs' curve of throughput and p99 latency against
// connected clients, on a decimal log axis.
func clientsChart() Chart {
	clients := []float64{100, 300, 1000, 3000, 10000}
	return Chart{
		Title:    "Throughput and latency against connected clients",
		Subtitle: "1 KiB messages; raw relay is the bare loopback baseline",
		Panels: []Panel{{
			Title:   "Throughput",
			X:       Axis{Label: "connected clients", Log: true, Format: FormatCount},
			Y:       Axis{Label: "messages/s", IncludeZero: true, Format: FormatCount},
			Markers: true,
			Series: []Series{
				{Name: "magpie", X: clients, Y: []float64{9800, 28500, 61000, 84000, 91000}},
				{Name: "raw relay", X: clients, Y: []float64{10000, 29900, 98000, 240000, 610000}, Dashed: true},
			},
		}, {
			Title:   "p99 latency",
			X:       Axis{Label: "connected clients", Log: true, Format: FormatCount},
			Y:       Axis{Label: "p99 latency", Log: true, Format: FormatMillis},
			Markers: true,
			Series: []Series{
				{Name: "magpie", X: clients, Y: []float64{1.2, 1.6, 3.1, 9.5, 42}},
				{Name: "raw relay", X: clients, Y: []float64{0.35, 0.4, 0.6, 1.1, 2.4}, Dashed: true},
			},
		}},
	}
}

// messageSizeChart is the docs' curve against message size, on a binary
// log axis.
func messageSizeChart() Chart {
	sizes := []float64{256, 1024, 4096, 16384, 65536}
	return Chart{
		Title: "Throughput and latency against message size",
		Panels: []Panel{{
			Title:   "Throughput",
			X:       Axis{Label: "message size", Log: true, LogBase: 2, Format: FormatBytes},
			Y:       Axis{Label: "messages/s", IncludeZero: true, Format: FormatCount},
			Markers: true,
			Series: []Series{
				{Name: "1,000 clients", X: sizes, Y: []float64{62000, 61000, 52000, 21000, 6100}},
				{Name: "10,000 clients", X: sizes, Y: []float64{91000, 90000, 70000, 24000, 6300}},
			},
		}, {
			Title:   "p99 latency",
			X:       Axis{Label: "message size", Log: true, LogBase: 2, Format: FormatBytes},
			Y:       Axis{Label: "p99 latency", IncludeZero: true, Format: FormatMillis},
			Markers: true,
			Series: []Series{
				{Name: "1,000 clients", X: sizes, Y: []float64{3.0, 3.1, 4.4, 11, 38}},
				{Name: "10,000 clients", X: sizes, Y: []float64{41, 42, 47, 88, 260}},
			},
		}},
	}
}

func render(t testing.TB, c Chart) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := c.WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		file  string
		chart Chart
	}{
		{"timeseries.svg", timeSeriesChart()},
		{"clients.svg", clientsChart()},
		{"msgsize.svg", messageSizeChart()},
	} {
		t.Run(tc.file, func(t *testing.T) {
			got := render(t, tc.chart)
			checkSVG(t, got)
			path := filepath.Join("testdata", tc.file)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the chart drawn now (%d bytes, golden %d); if the change is meant, run go test -update and look at the result",
					path, len(got), len(want))
			}
		})
	}
}

func TestDeterministic(t *testing.T) {
	c := timeSeriesChart()
	if !bytes.Equal(render(t, c), render(t, c)) {
		t.Fatal("two renderings of the same chart differ")
	}
}

// node is any XML element, for looking into the produced SVG.
type node struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Children []node     `xml:",any"`
	Text     string     `xml:",chardata"`
}

func (n node) attr(name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// find returns every element below n (n included) for which match holds.
func (n node) find(match func(node) bool) []node {
	var found []node
	if match(n) {
		found = append(found, n)
	}
	for _, c := range n.Children {
		found = append(found, c.find(match)...)
	}
	return found
}

func withClass(class string) func(node) bool {
	return func(n node) bool { return n.attr("class") == class }
}

// checkSVG fails unless svg is one well-formed SVG element with nothing
// after it and no NaN or infinity anywhere, and returns it parsed.
func checkSVG(t testing.TB, svg []byte) node {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(svg))
	depth, roots := 0, 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, svg)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				roots++
				if tok.Name.Local != "svg" || tok.Name.Space != "http://www.w3.org/2000/svg" {
					t.Fatalf("root element is %v, want svg in the SVG namespace", tok.Name)
				}
			}
			depth++
		case xml.EndElement:
			depth--
		}
	}
	if roots != 1 {
		t.Fatalf("%d root elements, want 1", roots)
	}
	for _, bad := range []string{"NaN", "Inf"} {
		if bytes.Contains(svg, []byte(bad)) {
			t.Fatalf("output contains %q:\n%s", bad, svg)
		}
	}
	var root node
	if err := xml.Unmarshal(svg, &root); err != nil {
		t.Fatal(err)
	}
	if root.attr("viewBox") == "" {
		t.Fatal("no viewBox")
	}
	return root
}

func TestLinearTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi         float64
		fixed          bool
		target         int
		want           []float64
		wantLo, wantHi float64
		wantDecimals   int
	}{
		{0, 97, false, 6, []float64{0, 20, 40, 60, 80, 100}, 0, 100, 0},
		{0, 97, true, 6, []float64{0, 20, 40, 60, 80}, 0, 97, 0},
		{0, 1, false, 6, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}, 0, 1, 1},
		{0.1, 0.35, false, 6, []float64{0.1, 0.15, 0.2, 0.25, 0.3, 0.35}, 0.1, 0.35, 2},
		{-3, 7, false, 6, []float64{-4, -2, 0, 2, 4, 6, 8}, -4, 8, 0},
		{0, 3599, false, 9, []float64{0, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000}, 0, 4000, 0},
		{9500, 10200, false, 5, []float64{9400, 9600, 9800, 10000, 10200}, 9400, 10200, 0},
		{0, 97, false, 2, []float64{0, 100}, 0, 100, 0},
	} {
		lo, hi := tc.lo, tc.hi
		got, decimals := linearTicks(&lo, &hi, tc.fixed, tc.target)
		if !slices.Equal(got, tc.want) || lo != tc.wantLo || hi != tc.wantHi || decimals != tc.wantDecimals {
			t.Errorf("linearTicks(%g, %g, fixed %v, %d) = %v over [%g, %g], %d decimals; want %v over [%g, %g], %d decimals",
				tc.lo, tc.hi, tc.fixed, tc.target, got, lo, hi, decimals, tc.want, tc.wantLo, tc.wantHi, tc.wantDecimals)
		}
	}
}

func TestLogTicks(t *testing.T) {
	pow2 := func(from, to int) []float64 {
		var v []float64
		for e := from; e <= to; e++ {
			v = append(v, math.Ldexp(1, e))
		}
		return v
	}
	for _, tc := range []struct {
		name           string
		base           int
		lo, hi         float64
		fixed          bool
		target         int
		want           []float64
		wantLo, wantHi float64
	}{
		{"clients", 0, 100, 10000, false, 12, []float64{100, 1000, 10000}, 100, 10000},
		{"widens to decades", 0, 3, 700, false, 12, []float64{1, 10, 100, 1000}, 1, 1000},
		{"under two decades: powers of 2", 0, 1, 50, false, 12, pow2(0, 6), 1, 64},
		{"message sizes", 2, 256, 65536, false, 12, pow2(8, 16), 256, 65536},
		{"thinned", 0, 1e-3, 1e9, false, 6, []float64{1e-3, 1, 1e3, 1e6, 1e9}, 1e-3, 1e9},
		{"thinned, widened to a whole stride", 0, 1, 1e4, false, 3, []float64{1, 100, 1e4}, 1, 1e4},
		{"thinned, odd", 0, 1, 1e3, false, 3, []float64{1, 100, 1e4}, 1, 1e4},
		{"one value", 10, 1000, 1000, false, 12, []float64{100, 1000, 10000}, 100, 10000},
		{"fixed", 10, 50, 20000, true, 12, []float64{100, 1000, 10000}, 50, 20000},
		{"fixed within a decade", 10, 200, 800, true, 6, []float64{200, 300, 400, 500, 600, 700, 800}, 200, 800},
	} {
		s := makeLogScale(tc.base, tc.lo, tc.hi, tc.fixed, tc.target)
		if !slices.Equal(s.major, tc.want) || s.lo != tc.wantLo || s.hi != tc.wantHi {
			t.Errorf("%s: makeLogScale(%d, %g, %g, fixed %v, %d) = %v over [%g, %g]; want %v over [%g, %g]",
				tc.name, tc.base, tc.lo, tc.hi, tc.fixed, tc.target, s.major, s.lo, s.hi, tc.want, tc.wantLo, tc.wantHi)
		}
	}

	// Minor gridlines fill the decades of an axis that labels each one.
	s := makeLogScale(10, 100, 10000, false, 12)
	want := []float64{200, 300, 400, 500, 600, 700, 800, 900, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000}
	if !slices.Equal(s.minor, want) {
		t.Errorf("minor ticks over 100…10000 = %v, want %v", s.minor, want)
	}
}

func TestAxisSpan(t *testing.T) {
	for _, tc := range []struct {
		name           string
		axis           Axis
		values         []float64
		wantLo, wantHi float64
		wantFixed      bool
	}{
		{"data", Axis{}, []float64{3, 1, 2}, 1, 3, false},
		{"include zero", Axis{IncludeZero: true}, []float64{3, 1, 2}, 0, 3, false},
		{"include zero, negative", Axis{IncludeZero: true}, []float64{-3, -1}, -3, 0, false},
		{"no data", Axis{}, nil, 0, 1, false},
		{"no data, log", Axis{Log: true}, nil, 1, 10, false},
		{"all equal", Axis{}, []float64{5, 5}, 4.5, 5.5, false},
		{"all zero", Axis{}, []float64{0, 0}, -1, 1, false},
		{"all zero, include zero", Axis{IncludeZero: true}, []float64{0}, 0, 1, false},
		{"all equal, log", Axis{Log: true}, []float64{100}, 50, 200, false},
		{"fixed", Axis{Min: -1, Max: 2}, []float64{5}, -1, 2, true},
		{"fixed backwards is ignored", Axis{Min: 2, Max: -1}, []float64{5, 6}, 5, 6, false},
		{"fixed NaN is ignored", Axis{Min: math.NaN(), Max: 2}, []float64{5, 6}, 5, 6, false},
		{"fixed log from 0 is ignored", Axis{Log: true, Min: 0, Max: 100}, []float64{5, 6}, 5, 6, false},
	} {
		lo, hi, fixed := axisSpan(tc.axis, tc.values)
		if lo != tc.wantLo || hi != tc.wantHi || fixed != tc.wantFixed {
			t.Errorf("%s: axisSpan = [%g, %g] fixed %v, want [%g, %g] fixed %v",
				tc.name, lo, hi, fixed, tc.wantLo, tc.wantHi, tc.wantFixed)
		}
	}
}

func TestFormatters(t *testing.T) {
	for _, tc := range []struct {
		format func(float64) string
		name   string
		v      float64
		want   string
	}{
		{FormatMillis, "ms", 0, "0"},
		{FormatMillis, "ms", 0.0005, "500 ns"},
		{FormatMillis, "ms", 0.25, "250 µs"},
		{FormatMillis, "ms", 0.9996, "1 ms"},
		{FormatMillis, "ms", 1, "1 ms"},
		{FormatMillis, "ms", 2.5, "2.5 ms"},
		{FormatMillis, "ms", 25, "25 ms"},
		{FormatMillis, "ms", 999, "999 ms"},
		{FormatMillis, "ms", 1000, "1 s"},
		{FormatMillis, "ms", 1500, "1.5 s"},
		{FormatMillis, "ms", 1234, "1.23 s"},
		{FormatMillis, "ms", 600000, "600 s"},
		{FormatMillis, "ms", -5, "-5 ms"},
		{FormatCount, "count", 0, "0"},
		{FormatCount, "count", 950, "950"},
		{FormatCount, "count", 0.5, "0.5"},
		{FormatCount, "count", 1000, "1k"},
		{FormatCount, "count", 1500, "1.5k"},
		{FormatCount, "count", 10000, "10k"},
		{FormatCount, "count", 999999, "1M"},
		{FormatCount, "count", 1e6, "1M"},
		{FormatCount, "count", 2.5e9, "2.5G"},
		{FormatCount, "count", -20000, "-20k"},
		{FormatBytes, "bytes", 0, "0 B"},
		{FormatBytes, "bytes", 256, "256 B"},
		{FormatBytes, "bytes", 1000, "1000 B"},
		{FormatBytes, "bytes", 1024, "1 KiB"},
		{FormatBytes, "bytes", 1536, "1.5 KiB"},
		{FormatBytes, "bytes", 16384, "16 KiB"},
		{FormatBytes, "bytes", 65536, "64 KiB"},
		{FormatBytes, "bytes", 1 << 20, "1 MiB"},
		{FormatBytes, "bytes", 3 << 30, "3 GiB"},
		{plainLabelOf(0), "plain", 100, "100"},
		{plainLabelOf(1), "plain", 0.30000000000000004, "0.3"},
		{plainLabelOf(0), "plain", math.Copysign(0, -1), "0"},
		{plainLabelOf(-1), "plain", 0.001, "0.001"},
		{plainLabelOf(-1), "plain", 1e20, "1e+20"},
	} {
		if got := tc.format(tc.v); got != tc.want {
			t.Errorf("%s(%v) = %q, want %q", tc.name, tc.v, got, tc.want)
		}
	}
}

func plainLabelOf(decimals int) func(float64) string {
	return func(v float64) string { return plainLabel(v, decimals) }
}

func TestCoord(t *testing.T) {
	for v, want := range map[float64]string{0: "0", -0.04: "0", 12.0: "12", 12.34: "12.3", -3.25: "-3.2", 899.96: "900"} {
		if got := coord(v); got != want {
			t.Errorf("coord(%v) = %q, want %q", v, got, want)
		}
	}
}

// pathPoints parses path data made of M, L, H and V commands.
func pathPoints(t *testing.T, d string) (points [][2]float64, moves int) {
	t.Helper()
	var x, y float64
	for d != "" {
		cmd := d[0]
		d = d[1:]
		end := strings.IndexAny(d, "MLHV")
		if end < 0 {
			end = len(d)
		}
		args := strings.Fields(d[:end])
		d = d[end:]
		num := func(s string) float64 {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Fatalf("bad number %q in path", s)
			}
			return v
		}
		switch cmd {
		case 'M', 'L':
			x, y = num(args[0]), num(args[1])
			if cmd == 'M' {
				moves++
			}
		case 'H':
			x = num(args[0])
		case 'V':
			y = num(args[0])
		default:
			t.Fatalf("unexpected path command %q", cmd)
		}
		points = append(points, [2]float64{x, y})
	}
	return points, moves
}

// plotArea returns the plot rectangle of the i-th panel.
func plotArea(t *testing.T, root node, i int) (left, top, right, bottom float64) {
	t.Helper()
	areas := root.find(withClass("plot-area"))
	if len(areas) <= i {
		t.Fatalf("%d plot areas, want more than %d", len(areas), i)
	}
	num := func(name string) float64 {
		v, err := strconv.ParseFloat(areas[i].attr(name), 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	left, top = num("x"), num("y")
	return left, top, left + num("width"), top + num("height")
}

func seriesPaths(root node) []node { return root.find(withClass("series")) }

// near allows for the 0.1 px rounding of both the point and the plot area.
func near(a, b float64) bool { return math.Abs(a-b) <= 0.11 }

func TestPointPositions(t *testing.T) {
	root := checkSVG(t, render(t, Chart{Panels: []Panel{{
		X: Axis{Log: true},
		Y: Axis{IncludeZero: true},
		Series: []Series{{
			Name: "s",
			X:    []float64{100, 1000, 10000},
			Y:    []float64{20, 50, 100},
		}},
	}}}))
	left, top, right, bottom := plotArea(t, root, 0)
	paths := seriesPaths(root)
	if len(paths) != 1 {
		t.Fatalf("%d series paths, want 1", len(paths))
	}
	pts, moves := pathPoints(t, paths[0].attr("d"))
	if moves != 1 || len(pts) != 3 {
		t.Fatalf("path %q: want one line through 3 points", paths[0].attr("d"))
	}
	// x: 100…10000 is the whole log axis, 1000 its middle; y: 0…100.
	for i, want := range [][2]float64{
		{left, bottom - (bottom-top)*0.2},
		{(left + right) / 2, (top + bottom) / 2},
		{right, top},
	} {
		if !near(pts[i][0], want[0]) || !near(pts[i][1], want[1]) {
			t.Errorf("point %d drawn at %v, want %v", i, pts[i], want)
		}
	}
}

func TestClipsToFixedRange(t *testing.T) {
	root := checkSVG(t, render(t, Chart{Panels: []Panel{{
		X:       Axis{Min: 0, Max: 10},
		Y:       Axis{Min: 0, Max: 10},
		Markers: true,
		Series:  []Series{{X: []float64{5, 20}, Y: []float64{5, 5}}},
	}}}))
	left, top, right, bottom := plotArea(t, root, 0)
	pts, _ := pathPoints(t, seriesPaths(root)[0].attr("d"))
	want := [][2]float64{{(left + right) / 2, (top + bottom) / 2}, {right, (top + bottom) / 2}}
	if len(pts) != 2 || !near(pts[0][0], want[0][0]) || !near(pts[1][0], want[1][0]) || !near(pts[1][1], want[1][1]) {
		t.Errorf("line drawn through %v, want %v (clipped at the right edge)", pts, want)
	}
	if n := len(root.find(func(n node) bool { return n.XMLName.Local == "circle" })); n != 1 {
		t.Errorf("%d markers, want 1: the point outside the range has none", n)
	}
}

func TestClipUnit(t *testing.T) {
	for _, tc := range []struct {
		ax, ay, bx, by float64
		t0, t1         float64
		visible        bool
	}{
		{0.2, 0.2, 0.8, 0.8, 0, 1, true},
		{-1, 0.5, 1, 0.5, 0.5, 1, true},
		{0.5, -1, 0.5, 3, 0.25, 0.5, true},
		{-1, -1, -0.5, 2, 0, 0, false},
		{1.5, 0.5, 2, 0.5, 0, 0, false},
		{0, 0, 0, 0, 0, 1, true},
	} {
		t0, t1, visible := clipUnit(tc.ax, tc.ay, tc.bx, tc.by)
		if t0 != tc.t0 || t1 != tc.t1 || visible != tc.visible {
			t.Errorf("clipUnit(%v, %v, %v, %v) = %v, %v, %v; want %v, %v, %v",
				tc.ax, tc.ay, tc.bx, tc.by, t0, t1, visible, tc.t0, tc.t1, tc.visible)
		}
	}
}

func TestEdgeCases(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	many := make([]float64, 3600)
	manyY := make([]float64, 3600)
	for i := range many {
		many[i] = float64(i)
		manyY[i] = float64(10000 + i%97)
	}
	panel := func(x, y Axis, series ...Series) Chart {
		return Chart{Title: "edge", Panels: []Panel{{Title: "p", X: x, Y: y, Series: series}}}
	}
	for _, tc := range []struct {
		name      string
		chart     Chart
		paths     int // series paths expected
		moves     int // subpaths in the first path
		dots      int // circles expected
		noData    bool
		legendFor []string
	}{
		{name: "no panels", chart: Chart{Title: "t"}},
		{name: "zero value", chart: Chart{}},
		{name: "tiny width", chart: Chart{Width: 10, Panels: []Panel{{Series: []Series{{X: []float64{1, 2}, Y: []float64{1, 2}}}}}}, paths: 1, moves: 1},
		{name: "no series", chart: panel(Axis{}, Axis{}), noData: true},
		{name: "empty series", chart: panel(Axis{}, Axis{}, Series{Name: "empty"}), noData: true},
		{
			name:  "empty series beside a full one",
			chart: panel(Axis{}, Axis{}, Series{Name: "empty"}, Series{Name: "full", X: []float64{1, 2}, Y: []float64{3, 4}}),
			paths: 1, moves: 1, legendFor: []string{"full"},
		},
		{name: "single point", chart: panel(Axis{}, Axis{}, Series{X: []float64{3}, Y: []float64{7}}), dots: 1},
		{name: "single point, log", chart: panel(Axis{Log: true}, Axis{Log: true}, Series{X: []float64{3}, Y: []float64{7}}), dots: 1},
		{name: "all equal", chart: panel(Axis{}, Axis{}, Series{X: []float64{1, 2, 3}, Y: []float64{5, 5, 5}}), paths: 1, moves: 1},
		{name: "all equal X", chart: panel(Axis{}, Axis{}, Series{X: []float64{2, 2, 2}, Y: []float64{1, 2, 3}}), paths: 1, moves: 1},
		{name: "NaN breaks the line", chart: panel(Axis{}, Axis{}, Series{X: []float64{1, 2, 3, 4, 5}, Y: []float64{1, 2, nan, 4, 5}}), paths: 1, moves: 2},
		{name: "Inf breaks the line", chart: panel(Axis{}, Axis{}, Series{X: []float64{1, 2, inf, 4, 5}, Y: []float64{1, 2, 3, -inf, 5}}), paths: 1, moves: 1, dots: 1},
		{name: "all NaN", chart: panel(Axis{}, Axis{}, Series{Name: "gone", X: []float64{nan, nan}, Y: []float64{1, 2}}), noData: true},
		{name: "non-positive on log", chart: panel(Axis{Log: true}, Axis{Log: true}, Series{X: []float64{1, 10, 0, 100, 1000}, Y: []float64{5, 6, 7, -8, 9}}), paths: 1, moves: 1, dots: 1},
		{name: "mismatched lengths", chart: panel(Axis{}, Axis{}, Series{X: []float64{1, 2, 3}, Y: []float64{1, 2}}), paths: 1, moves: 1},
		{name: "3600 samples", chart: panel(Axis{}, Axis{}, Series{Name: "hour", X: many, Y: manyY}), paths: 1, moves: 1, legendFor: []string{"hour"}},
		{name: "huge values", chart: panel(Axis{}, Axis{}, Series{X: []float64{1, 2, 3}, Y: []float64{1e300, 2, -1e300}}), dots: 1},
		{name: "extreme but drawable", chart: panel(Axis{}, Axis{}, Series{X: []float64{-1e150, 1e150}, Y: []float64{1e-300, 5e-324}}), paths: 1, moves: 1},
		{name: "tiny span", chart: panel(Axis{}, Axis{}, Series{X: []float64{1, 1 + 1e-15}, Y: []float64{1e-200, 2e-200}}), paths: 1, moves: 1},
		{name: "fixed range far from data", chart: panel(Axis{Min: 1000, Max: 2000}, Axis{Min: 1e-9, Max: 2e-9}, Series{X: []float64{1, 2}, Y: []float64{1, 2}})},
		{name: "fixed log range inside a decade", chart: panel(Axis{Log: true, Min: 200, Max: 800}, Axis{}, Series{X: []float64{300, 600}, Y: []float64{1, 2}}), paths: 1, moves: 1},
		{name: "odd log base", chart: panel(Axis{Log: true, LogBase: 3}, Axis{Log: true, LogBase: -4}, Series{X: []float64{1, 100}, Y: []float64{1, 1e6}}), paths: 1, moves: 1},
		{
			name:  "markup in names",
			chart: Chart{Title: `<a href="x">&</a>`, Subtitle: "\x00\xff", Panels: []Panel{{Title: "]]>", X: Axis{Label: "'\""}, Y: Axis{Label: "<"}, Series: []Series{{Name: "<&>", X: []float64{1, 2}, Y: []float64{1, 2}}}}}},
			paths: 1, moves: 1, legendFor: []string{"<&>"},
		},
		{
			name: "more series than colours",
			chart: panel(Axis{}, Axis{}, func() []Series {
				var s []Series
				for i := range 10 {
					s = append(s, Series{Name: strconv.Itoa(i), X: []float64{0, 1}, Y: []float64{float64(i), float64(i + 1)}})
				}
				return s
			}()...),
			paths: 10, moves: 1, legendFor: []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := render(t, tc.chart)
			root := checkSVG(t, out)
			paths := seriesPaths(root)
			if len(paths) != tc.paths {
				t.Fatalf("%d series paths, want %d:\n%s", len(paths), tc.paths, out)
			}
			if tc.paths > 0 {
				if _, moves := pathPoints(t, paths[0].attr("d")); moves != tc.moves {
					t.Errorf("first path has %d subpaths, want %d: %s", moves, tc.moves, paths[0].attr("d"))
				}
			}
			if n := len(root.find(func(n node) bool { return n.XMLName.Local == "circle" })); n != tc.dots {
				t.Errorf("%d dots, want %d", n, tc.dots)
			}
			if got := bytes.Contains(out, []byte(">no data<")); got != tc.noData {
				t.Errorf("'no data' shown: %v, want %v", got, tc.noData)
			}
			var legend []string
			for _, g := range root.find(withClass("legend")) {
				for _, c := range g.Children {
					if c.XMLName.Local == "text" {
						legend = append(legend, c.Text)
					}
				}
			}
			if !slices.Equal(legend, tc.legendFor) {
				t.Errorf("legend %q, want %q", legend, tc.legendFor)
			}
		})
	}
}

func TestColoursDistinct(t *testing.T) {
	seen := map[string]bool{}
	for i := range 2 * len(palette) {
		color, dashed := seriesStyle(i, Series{})
		key := color + strconv.FormatBool(dashed)
		if seen[key] {
			t.Fatalf("series %d looks like an earlier one (%s)", i, key)
		}
		seen[key] = true
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteError(t *testing.T) {
	if err := clientsChart().WriteSVG(failingWriter{}); err == nil {
		t.Fatal("WriteSVG to a failing writer returned no error")
	}
}

// fuzzChart builds a chart from fuzz input. raw holds the values: each
// byte a small integer, or with flags bit 7 each 8 bytes a float64's bits,
// which reaches NaNs, infinities, subnormals and extremes. The other flag
// bits pick log axes, LogBase 2, IncludeZero, markers and a fixed y range.
func fuzzChart(flags byte, raw []byte) Chart {
	var values []float64
	if flags&0x80 != 0 {
		for len(raw) >= 8 && len(values) < 2048 {
			values = append(values, math.Float64frombits(binary.LittleEndian.Uint64(raw)))
			raw = raw[8:]
		}
	} else {
		for _, b := range raw[:min(len(raw), 4096)] {
			values = append(values, float64(int8(b)))
		}
	}
	half := len(values) / 2
	xs, ys := values[:half], values[half:2*half]
	reversed := slices.Clone(ys)
	slices.Reverse(reversed)
	x := Axis{Label: "x", Log: flags&1 != 0}
	if flags&0x20 != 0 {
		x.LogBase = 2
	}
	y := Axis{Label: "y", Log: flags&2 != 0, IncludeZero: flags&4 != 0}
	if flags&0x10 != 0 && len(values) >= 2 {
		y.Min, y.Max = values[0], values[1]
	}
	return Chart{Title: "fuzz", Panels: []Panel{
		{X: x, Y: y, Markers: flags&8 != 0, Series: []Series{{Name: "a", X: xs, Y: ys}, {Name: "b", X: xs, Y: reversed, Dashed: true}}},
		{X: y, Y: x, Series: []Series{{Name: "c", X: ys, Y: xs}}},
	}}
}

func FuzzWriteSVG(f *testing.F) {
	f.Add(byte(0), []byte{0, 10, 20, 30, 1, 2, 3, 4})
	f.Add(byte(0x03), []byte{0, 0xff, 1, 2, 2, 2})
	f.Add(byte(0x1c), []byte{5, 5, 5, 5, 5, 5})
	floats := func(v ...float64) []byte {
		var b []byte
		for _, f := range v {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
		}
		return b
	}
	f.Add(byte(0x80), floats(1, 2, math.NaN(), 4, 10, math.Inf(1), 30, 40))
	f.Add(byte(0xab), floats(1e-320, 1e308, 256, 65536, -1, 0, 1e-3, 1e9))
	f.Add(byte(0x96), floats(1, 1+1e-15, 3, 4, 5, 6))
	f.Fuzz(func(t *testing.T, flags byte, raw []byte) {
		checkSVG(t, render(t, fuzzChart(flags, raw)))
	})
}
