package main

import (
	"encoding/json"
	"testing"
)

// TestBenchDrain runs magpie bench drain through the real binary against a
// real server and reads its --json report: every message queued for the
// offline device comes back exactly once, and the server's queue depth
// confirms the backlog and returns to where it was.
func TestBenchDrain(t *testing.T) {
	inv, admin := benchServer(t)
	r := mustRun(t, "bench", "drain", "--invite", inv, "--messages", "3000", "--size", "256", "--senders", "4",
		"--admin", admin, "--json", "--quiet")
	var rep struct {
		Messages      int     `json:"messages"`
		Enqueued      int64   `json:"enqueued"`
		Delivered     int64   `json:"delivered"`
		Missing       int64   `json:"missing"`
		Duplicates    int64   `json:"duplicates"`
		DrainedMarker bool    `json:"drained_marker"`
		DrainPerS     float64 `json:"drain_per_s"`
		Receipts      int64   `json:"receipts"`
		DrainError    string  `json:"drain_error"`
		Server        *struct {
			Before   float64 `json:"queue_depth_before"`
			Enqueued float64 `json:"queue_depth_enqueued"`
			After    float64 `json:"queue_depth_after"`
			Confirm  bool    `json:"queue_confirmed"`
		} `json:"server"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("not one JSON report: %v\n%s", err, r)
	}
	if rep.Messages != 3000 || rep.Enqueued != 3000 || rep.Delivered != 3000 || rep.Missing != 0 || rep.Duplicates != 0 {
		t.Errorf("report %+v: want 3000 queued and delivered, 0 missing, 0 duplicates", rep)
	}
	if !rep.DrainedMarker || rep.DrainError != "" || rep.DrainPerS <= 0 || rep.Receipts != 3000 {
		t.Errorf("report %+v: want the drained marker, no error, a rate and 3000 receipts", rep)
	}
	if s := rep.Server; s == nil || !s.Confirm || s.Enqueued-s.Before != 3000 || s.After != s.Before {
		t.Errorf("server figures %+v: want the depth +3000 after queueing, then back", rep.Server)
	}
}
