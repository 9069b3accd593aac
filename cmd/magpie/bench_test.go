package main

import (
	"encoding/json"
	"os"
	"testing"
	"time"
)

// TestBenchCommands runs each magpie bench scenario, small, against the real
// binary's server and reads its --json report: the CLI layer is what people
// run, and internal/bench's own tests do not go through it.
func TestBenchCommands(t *testing.T) {
	admin := freeAddr(t)
	srv := start(t, nil, "serve", "--data", t.TempDir(), "--listen", freeAddr(t), "--admin", admin)
	inv, ok := srv.waitLine("magpie://")
	if !ok {
		t.Fatalf("no invite:\n%s", srv)
	}
	defer func() {
		srv.signal(os.Interrupt)
		srv.waitExit(10 * time.Second)
	}()
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
		Dropped     int64   `json:"dropped"`
		ServerConns float64 `json:"server_connections"`
		RSSAfter    float64 `json:"rss_after_bytes"`
	}
	report(&hold, "bench", "hold", "--connections", "10", "--hold", "1s", "--settle", "0s", "--admin", admin)
	if hold.Dropped != 0 || hold.ServerConns < 10 || hold.RSSAfter <= 0 {
		t.Errorf("hold: %+v, want 0 dropped, ≥10 server connections, an RSS", hold)
	}

	type chat struct {
		Sent, Acked, Received, Errors int64
	}
	var out struct {
		Magpie *chat `json:"magpie"`
		Raw    *chat `json:"raw"`
		Ratio  *struct {
			Throughput float64 `json:"throughput"`
		} `json:"ratio"`
	}
	report(&out, "bench", "chat", "--clients", "4", "--rate", "100", "--duration", "1s", "--size", "256", "--compare")
	for name, c := range map[string]*chat{"magpie": out.Magpie, "raw": out.Raw} {
		if c == nil {
			t.Fatalf("chat --compare: no %s report", name)
		}
		if c.Sent == 0 || c.Acked != c.Sent || c.Received != c.Sent || c.Errors != 0 {
			t.Errorf("chat %s: %+v, want every send acknowledged and received, no errors", name, *c)
		}
	}
	if out.Ratio == nil || out.Ratio.Throughput <= 0 {
		t.Errorf("chat --compare: no throughput ratio: %+v", out.Ratio)
	}
}
