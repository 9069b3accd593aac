package main

import (
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBenchCommands runs each magpie bench scenario, small, against the real
// binary's server and reads its --json report: the CLI layer is what people
// run, and internal/bench's own tests do not go through it.
func TestBenchCommands(t *testing.T) {
	inv, admin := benchServer(t)
	report := func(v any, args ...string) {
		t.Helper()
		r := mustRun(t, append(args, "--invite", inv, "--json", "--quiet")...)
		if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
			t.Fatalf("%v: not one JSON report: %v\n%s", args, err, r)
		}
	}

	var hs struct {
		OK     int64   `json:"ok"`
		Errors int64   `json:"errors"`
		PerS   float64 `json:"handshakes_per_s"`
	}
	report(&hs, "bench", "handshake", "--connections", "20", "--concurrency", "4")
	if hs.OK != 20 || hs.Errors != 0 || hs.PerS <= 0 {
		t.Errorf("handshake: %+v, want 20 ok, 0 errors, a rate", hs)
	}

	var hold struct {
		Workers     int     `json:"workers"`
		Dropped     int64   `json:"dropped"`
		ServerConns float64 `json:"server_connections"`
		RSSAfter    float64 `json:"rss_after_bytes"`
	}
	report(&hold, "bench", "hold", "--connections", "10", "--hold", "1s", "--settle", "0s", "--admin", admin)
	if hold.Workers != 1 || hold.Dropped != 0 || hold.ServerConns < 10 || hold.RSSAfter <= 0 {
		t.Errorf("hold: %+v, want 1 process, 0 dropped, ≥10 server connections, an RSS", hold)
	}
	// The same spread over worker processes (each a copy of the binary),
	// as a run past one process's open-files limit is.
	hold.Workers, hold.ServerConns = 0, 0
	report(&hold, "bench", "hold", "--connections", "12", "--workers", "3", "--hold", "1s", "--settle", "0s", "--admin", admin)
	if hold.Workers != 3 || hold.Dropped != 0 || hold.ServerConns < 12 {
		t.Errorf("hold --workers 3: %+v, want 3 workers, 0 dropped, ≥12 server connections", hold)
	}

	type chat struct {
		Sent, Acked, Received, Errors int64
		Timeline                      []struct {
			T float64 `json:"t_s"`
		} `json:"timeline"`
	}
	var out struct {
		Magpie *chat `json:"magpie"`
		Raw    *chat `json:"raw"`
		Ratio  *struct {
			Throughput float64 `json:"throughput"`
		} `json:"ratio"`
	}
	plot := filepath.Join(t.TempDir(), "chat.svg")
	report(&out, "bench", "chat", "--clients", "4", "--rate", "100", "--duration", "2s", "--size", "256", "--compare", "--plot", plot)
	for name, c := range map[string]*chat{"magpie": out.Magpie, "raw": out.Raw} {
		if c == nil {
			t.Fatalf("chat --compare: no %s report", name)
		}
		if c.Sent == 0 || c.Acked != c.Sent || c.Received != c.Sent || c.Errors != 0 {
			t.Errorf("chat %s: sent %d, acked %d, received %d, errors %d; want every send acknowledged and received, no errors", name, c.Sent, c.Acked, c.Received, c.Errors)
		}
	}
	if out.Ratio == nil || out.Ratio.Throughput <= 0 {
		t.Errorf("chat --compare: no throughput ratio: %+v", out.Ratio)
	}
	if len(out.Magpie.Timeline) < 2 {
		t.Errorf("chat: %d timeline samples for a 2 s run, want at least 2", len(out.Magpie.Timeline))
	}
	// --plot wrote the magpie run as an SVG document.
	svg, err := os.ReadFile(plot)
	if err != nil {
		t.Fatal(err)
	}
	var root struct {
		XMLName xml.Name
	}
	if err := xml.Unmarshal(svg, &root); err != nil || root.XMLName.Local != "svg" || !strings.Contains(string(svg), "Throughput") {
		t.Errorf("--plot: not an SVG chart (%v, root %q)", err, root.XMLName.Local)
	}
}

// benchServer starts magpie serve with an admin listener for a bench test,
// stopped (gracefully) when the test ends, and returns its invite and
// admin address.
func benchServer(t *testing.T, flags ...string) (inv, admin string) {
	t.Helper()
	admin = freeAddr(t)
	srv := start(t, nil, append([]string{"serve", "--data", t.TempDir(), "--listen", freeAddr(t), "--admin", admin}, flags...)...)
	inv, ok := srv.waitLine("magpie://")
	if !ok {
		t.Fatalf("no invite:\n%s", srv)
	}
	t.Cleanup(func() {
		srv.signal(os.Interrupt)
		srv.waitExit(10 * time.Second)
	})
	return inv, admin
}
