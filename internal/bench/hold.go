package bench

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/link"
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
	// Keys, if set, is a file of device keys: if it exists, its users
	// (registered by an earlier run) connect and nothing is registered; if
	// not, the run registers its users and saves their keys there. With
	// it, the baseline can be a freshly restarted server that has never
	// seen a sign-up (see docs/BENCHMARKS.md).
	Keys string
	// Workers spreads the connections over this many worker processes
	// (default: one per PerProcess connections); WorkerArgv is the command
	// that runs one (magpie bench hold-worker), needed when Workers > 1.
	Workers    int
	WorkerArgv []string
	// Keepalive replaces the client's default ping interval (2 minutes).
	Keepalive time.Duration
	// Transport, if set, is the only transport dialled (tcp, obfs or
	// tls); the default dials the invite's endpoints in order.
	Transport string
	Progress  io.Writer
}

// HoldReport is the outcome of a hold run.
type HoldReport struct {
	Connections  int     `json:"connections"`
	Workers      int     `json:"workers"` // processes holding them
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
	// The same, after the server has collected its garbage (zero if its
	// admin listener has no /debug/pprof).
	RSSAfterGC       float64 `json:"rss_after_gc_bytes,omitempty"`
	BytesPerConnGC   float64 `json:"bytes_per_connection_after_gc,omitempty"`
	GoBytesPerConnGC float64 `json:"go_bytes_per_connection_after_gc,omitempty"`
	CPUSeconds       float64 `json:"cpu_seconds_during_hold"`
	CPUPercent       float64 `json:"cpu_percent_during_hold"` // of one core
	ServerConns      float64 `json:"server_connections"`      // magpie_connections after connecting
	GoroutinesSrv    float64 `json:"server_goroutines"`       // go_goroutines after connecting
	ServerParked     float64 `json:"server_parked"`           // magpie_connections_parked at the end of the hold
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

// RunHold registers o.Connections users, then connects them again (one
// connection each) and keeps them open and idle with the client's
// keepalives, reading the server's memory and CPU time from its admin
// /metrics.
//
// The users are registered first, and the baseline is read after they have
// disconnected, so that what registering leaves behind (database pages,
// sign-up limiter entries) is not counted as the cost of a connection.
// Where the admin listener serves /debug/pprof, the baseline and a second
// reading during the hold are also taken after a forced collection.
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
	if _, err := Scrape(ctx, o.Admin); err != nil {
		return nil, err // before registering thousands of users
	}
	if holdWorkers(o.Connections, o.Workers) > 1 {
		if len(o.WorkerArgv) == 0 {
			return nil, errors.New("bench hold: more connections than one process can hold, and no worker command")
		}
		if o.Keys == "" {
			f, err := os.CreateTemp("", "magpie-bench-keys-")
			if err != nil {
				return nil, err
			}
			f.Close()
			os.Remove(f.Name()) // holdUsers writes it
			o.Keys = f.Name()
			defer os.Remove(o.Keys)
		}
	}
	keys, err := holdUsers(ctx, inv, o)
	if err != nil {
		return nil, fmt.Errorf("bench hold: %w", err)
	}
	if err := waitConnections(ctx, o.Admin, 0); err != nil {
		return nil, fmt.Errorf("bench hold: waiting for the registrations to disconnect: %w", err)
	}
	gcOK := forceGC(ctx, o.Admin)
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
		fmt.Fprintf(o.Progress, "connecting %d registered devices…\n", o.Connections)
	}
	var dropped atomic.Int64
	var workers []*holdWorker
	if nw := holdWorkers(o.Connections, o.Workers); nw > 1 {
		workers, err = startHoldWorkers(ctx, o.WorkerArgv, inv, o, nw)
		if err != nil {
			return nil, fmt.Errorf("bench hold: %w", err)
		}
		defer stopHoldWorkers(workers) // on early returns; a no-op after
	} else {
		conns, err := connectAll(ctx, inv, o.Transport, keys, o.SetupConcurrency, o.Keepalive)
		if err != nil {
			return nil, fmt.Errorf("bench hold: %w", err)
		}
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		watchDrops(conns, &dropped)
	}
	setup := time.Since(start)
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
			o.Connections, rssBefore/(1<<20), rssAfter/(1<<20), o.Hold)
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
	r := &HoldReport{
		Connections: o.Connections, Workers: max(1, len(workers)), SetupS: setup.Seconds(), HoldS: held.Seconds(),
		Dropped:   dropped.Load(),
		RSSBefore: rssBefore, RSSAfter: rssAfter,
		BytesPerConn:   (rssAfter - rssBefore) / float64(o.Connections),
		CPUSeconds:     cpu1 - cpu0,
		CPUPercent:     100 * (cpu1 - cpu0) / held.Seconds(),
		GoBytesPerConn: (goInUse(mid) - goInUse(before)) / float64(o.Connections),
		ServerConns:    mid["magpie_connections"],
		ServerParked:   end["magpie_connections_parked"],
		GoroutinesSrv:  mid["go_goroutines"],
	}
	// The same after a forced collection: what the connections keep, not
	// what setting them up left for the collector.
	if gcOK && forceGC(ctx, o.Admin) {
		if gc, err := Scrape(ctx, o.Admin); err == nil {
			r.RSSAfterGC = gc["process_resident_memory_bytes"]
			r.BytesPerConnGC = (r.RSSAfterGC - rssBefore) / float64(o.Connections)
			r.GoBytesPerConnGC = (goInUse(gc) - goInUse(before)) / float64(o.Connections)
		}
	}
	if workers != nil {
		d, err := stopHoldWorkers(workers)
		workers = nil
		r.Dropped += d
		if err != nil {
			return r, fmt.Errorf("bench hold: %w", err)
		}
	}
	return r, nil
}

// holdUsers returns the device keys of o.Connections registered users:
// read from o.Keys, or registered now (and saved to o.Keys if set).
func holdUsers(ctx context.Context, inv invite.Invite, o HoldOptions) ([]link.KeyPair, error) {
	if o.Keys != "" {
		keys, err := readKeys(o.Keys)
		switch {
		case err == nil && len(keys) < o.Connections:
			return nil, fmt.Errorf("%s has %d keys, fewer than --connections %d", o.Keys, len(keys), o.Connections)
		case err == nil:
			if o.Progress != nil {
				fmt.Fprintf(o.Progress, "using %d users registered earlier (%s)\n", o.Connections, o.Keys)
			}
			return keys[:o.Connections], nil
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		}
	}
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "registering %d users…\n", o.Connections)
	}
	// In batches, each closed before the next, so that sign-ups never
	// hold more files open than one process may.
	run := runID()
	var keys []link.KeyPair
	for from := 0; from < o.Connections; from += PerProcess {
		n := min(PerProcess, o.Connections-from)
		conns, batch, err := registerUsers(ctx, inv, o.Transport, run, from, n, o.SetupConcurrency)
		if err != nil {
			return nil, err
		}
		for _, c := range conns {
			c.Close()
		}
		keys = append(keys, batch...)
	}
	if o.Keys != "" {
		if err := writeKeys(o.Keys, keys); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// writeKeys saves throw-away bench device keys, one private key (hex) a
// line, readable by the owner only.
func writeKeys(path string, keys []link.KeyPair) error {
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(hex.EncodeToString(k.Private[:]))
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("saving the bench users' keys: %w", err)
	}
	return nil
}

func readKeys(path string) ([]link.KeyPair, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []link.KeyPair
	for i, line := range strings.Fields(string(data)) {
		var priv [32]byte
		if n, err := hex.Decode(priv[:], []byte(line)); err != nil || n != 32 {
			return nil, fmt.Errorf("%s line %d: not a 32-byte hex key", path, i+1)
		}
		k, err := link.KeyPairFromPrivate(priv)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, i+1, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// waitConnections waits until the server reports n open connections.
func waitConnections(ctx context.Context, admin string, n float64) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, err := Scrape(ctx, admin)
		if err != nil {
			return err
		}
		got, ok := m["magpie_connections"]
		if !ok || got == n {
			return nil // a server without the metric: nothing to wait for
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server still reports %.0f connections, want %.0f", got, n)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// forceGC asks the server for two garbage collections (its pprof heap
// endpoint collects before answering when gc=1; two, because freed spans
// reach the page heap a cycle late) and reports whether it could.
func forceGC(ctx context.Context, admin string) bool {
	for range 2 {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/debug/pprof/heap?gc=1", nil)
		if err != nil {
			return false
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false
		}
	}
	return true
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
	fmt.Fprintf(&b, "server reports %.0f connections (%.0f parked at the end), %.0f goroutines\n", r.ServerConns, r.ServerParked, r.GoroutinesSrv)
	fmt.Fprintf(&b, "server RSS: %.1f MiB before, %.1f MiB after: %.0f bytes (%.1f KiB) per connection\n",
		r.RSSBefore/(1<<20), r.RSSAfter/(1<<20), r.BytesPerConn, r.BytesPerConn/1024)
	if r.GoBytesPerConn != 0 {
		fmt.Fprintf(&b, "server Go heap + stacks in use: %.0f bytes (%.1f KiB) per connection\n", r.GoBytesPerConn, r.GoBytesPerConn/1024)
	}
	if r.RSSAfterGC != 0 {
		fmt.Fprintf(&b, "after a forced GC: RSS %.1f MiB, %.0f bytes (%.1f KiB) per connection; Go heap + stacks %.0f bytes (%.1f KiB)\n",
			r.RSSAfterGC/(1<<20), r.BytesPerConnGC, r.BytesPerConnGC/1024, r.GoBytesPerConnGC, r.GoBytesPerConnGC/1024)
	}
	fmt.Fprintf(&b, "server CPU while idle: %.2f s over %.1f s (%.2f%% of one core)\n", r.CPUSeconds, r.HoldS, r.CPUPercent)
	b.WriteString("baseline: after registering the users and disconnecting them; RSS excludes kernel socket buffers\n")
	return b.String()
}
