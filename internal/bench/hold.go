package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/invite"
)

// HoldOptions configure the hold scenario: many idle, authenticated
// connections, and what they cost the server.
type HoldOptions struct {
	Connections int
	// Admin is the server's admin listener (host:port), whose /metrics
	// gives its resident memory and CPU time.
	Admin string
	// Hold is how long the connections stay open and quiet (default 1 min).
	Hold time.Duration
	// Settle is the pause after connecting, before the memory reading (2 s).
	Settle time.Duration
	// SetupConcurrency is how many connect at once (default 32).
	SetupConcurrency int
	Progress         io.Writer
}

// HoldReport is the outcome of a hold run.
type HoldReport struct {
	Connections  int     `json:"connections"`
	SetupS       float64 `json:"setup_s"`
	HoldS        float64 `json:"hold_s"`
	Dropped      int64   `json:"dropped"` // connections that ended during the hold
	RSSBefore    float64 `json:"rss_before_bytes"`
	RSSAfter     float64 `json:"rss_after_bytes"`
	BytesPerConn float64 `json:"bytes_per_connection"`
	// GoBytesPerConn is the growth of the Go heap and stacks in use
	// (go_memstats_heap_inuse_bytes + go_memstats_stack_inuse_bytes) per
	// connection: unlike RSS, it is not hidden by memory the runtime kept
	// from earlier work. Zero if the server does not export them.
	GoBytesPerConn float64 `json:"go_bytes_per_connection"`
	CPUSeconds     float64 `json:"cpu_seconds_during_hold"`
	CPUPercent     float64 `json:"cpu_percent_during_hold"` // of one core
	ServerConns    float64 `json:"server_connections"`      // magpie_connections after connecting
	GoroutinesSrv  float64 `json:"server_goroutines"`       // go_goroutines after connecting
}

// Metrics is a scrape of a Prometheus text endpoint: sample name (with its
// labels, as written) → value.
type Metrics map[string]float64

// Scrape reads http://addr/metrics.
func Scrape(ctx context.Context, addr string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading the server's metrics (is --admin right?): %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading the server's metrics: %s", resp.Status)
	}
	return ParseMetrics(resp.Body)
}

// ParseMetrics parses the Prometheus text format, keeping samples only.
func ParseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name, val := line[:i], line[i+1:]
		if j := strings.LastIndexByte(name, ' '); j >= 0 && !strings.Contains(name[j:], "}") {
			// "name value timestamp": drop the timestamp.
			name, val = name[:j], name[j+1:]
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		m[name] = v
	}
	return m, sc.Err()
}

func (m Metrics) need(name string) (float64, error) {
	v, ok := m[name]
	if !ok {
		return 0, fmt.Errorf("the server's metrics have no %s", name)
	}
	return v, nil
}

// RunHold registers o.Connections users (one connection each, fresh keys),
// keeps them open and idle with the client's keepalives, and reads the
// server's memory and CPU time from its admin /metrics.
func RunHold(ctx context.Context, inv invite.Invite, o HoldOptions) (*HoldReport, error) {
	if o.Connections <= 0 {
		return nil, errors.New("bench hold: need at least 1 connection")
	}
	if o.Admin == "" {
		return nil, errors.New("bench hold: need --admin, the server's admin listener")
	}
	if o.Hold == 0 {
		o.Hold = time.Minute
	}
	if o.Settle == 0 {
		o.Settle = 2 * time.Second
	}
	if o.SetupConcurrency == 0 {
		o.SetupConcurrency = 32
	}
	before, err := Scrape(ctx, o.Admin)
	if err != nil {
		return nil, err
	}
	rssBefore, err := before.need("process_resident_memory_bytes")
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "registering and connecting %d users…\n", o.Connections)
	}
	conns, err := registerAll(ctx, inv, runID(), o.Connections, o.SetupConcurrency)
	if err != nil {
		return nil, fmt.Errorf("bench hold: %w", err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	setup := time.Since(start)
	var dropped atomic.Int64
	for _, c := range conns {
		go func(c *client.Conn) {
			for range c.Pushes() { // nothing but the drained marker is expected
			}
			if !errors.Is(c.Err(), client.ErrClosed) {
				dropped.Add(1)
			}
		}(c)
	}
	if err := sleep(ctx, o.Settle); err != nil {
		return nil, err
	}
	mid, err := Scrape(ctx, o.Admin)
	if err != nil {
		return nil, err
	}
	rssAfter, err := mid.need("process_resident_memory_bytes")
	if err != nil {
		return nil, err
	}
	cpu0, err := mid.need("process_cpu_seconds_total")
	if err != nil {
		return nil, err
	}
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "%d connections open; server RSS %.1f MiB → %.1f MiB; holding for %s\n",
			len(conns), rssBefore/(1<<20), rssAfter/(1<<20), o.Hold)
	}
	t0 := time.Now()
	if err := sleep(ctx, o.Hold); err != nil {
		return nil, err
	}
	end, err := Scrape(ctx, o.Admin)
	if err != nil {
		return nil, err
	}
	cpu1, err := end.need("process_cpu_seconds_total")
	if err != nil {
		return nil, err
	}
	held := time.Since(t0)
	return &HoldReport{
		Connections: len(conns), SetupS: setup.Seconds(), HoldS: held.Seconds(),
		Dropped:   dropped.Load(),
		RSSBefore: rssBefore, RSSAfter: rssAfter,
		BytesPerConn:   (rssAfter - rssBefore) / float64(len(conns)),
		CPUSeconds:     cpu1 - cpu0,
		CPUPercent:     100 * (cpu1 - cpu0) / held.Seconds(),
		GoBytesPerConn: (goInUse(mid) - goInUse(before)) / float64(len(conns)),
		ServerConns:    mid["magpie_connections"],
		GoroutinesSrv:  mid["go_goroutines"],
	}, nil
}

// goInUse is the Go heap and stacks in use, 0 if not exported.
func goInUse(m Metrics) float64 {
	return m["go_memstats_heap_inuse_bytes"] + m["go_memstats_stack_inuse_bytes"]
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Text renders the report.
func (r *HoldReport) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "hold: %d idle authenticated connections (set up in %.1fs), held %.1fs, %d dropped\n",
		r.Connections, r.SetupS, r.HoldS, r.Dropped)
	fmt.Fprintf(&b, "server reports %.0f connections, %.0f goroutines\n", r.ServerConns, r.GoroutinesSrv)
	fmt.Fprintf(&b, "server RSS: %.1f MiB before, %.1f MiB after: %.0f bytes (%.1f KiB) per connection\n",
		r.RSSBefore/(1<<20), r.RSSAfter/(1<<20), r.BytesPerConn, r.BytesPerConn/1024)
	if r.GoBytesPerConn != 0 {
		fmt.Fprintf(&b, "server Go heap + stacks in use: %.0f bytes (%.1f KiB) per connection\n", r.GoBytesPerConn, r.GoBytesPerConn/1024)
	}
	fmt.Fprintf(&b, "server CPU while idle: %.2f s over %.1f s (%.2f%% of one core)\n", r.CPUSeconds, r.HoldS, r.CPUPercent)
	b.WriteString("RSS may include memory left from earlier work (measure on a fresh server) and excludes kernel socket buffers\n")
	return b.String()
}
