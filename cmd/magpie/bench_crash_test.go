package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchCrash runs magpie bench crash through the real binary: it starts
// `magpie serve` itself (this binary), kills it with SIGKILL three times
// under chat traffic and restarts it. Nothing the server acknowledged may be
// lost.
func TestBenchCrash(t *testing.T) {
	dir := t.TempDir()
	serverLog := filepath.Join(dir, "serve.log")
	args := []string{"bench", "crash", "--clients", "20", "--rate", "300", "--duration", "6s", "--kills", "3",
		"--size", "256", "--drain", "20s", "--data", filepath.Join(dir, "data"), "--server-log", serverLog, "--json", "--quiet"}
	r := run(t, args...)
	log, _ := os.ReadFile(serverLog)
	if r.code != 0 {
		t.Fatalf("expected exit 0:\n%s\n--- server log:\n%s", r, log)
	}
	if strings.Contains(string(log), "DATA RACE") {
		t.Errorf("the server reported a data race:\n%s", log)
	}
	var rep struct {
		KillsPlanned  int   `json:"kills_planned"`
		KillsDone     int   `json:"kills_done"`
		Sent          int64 `json:"sent"`
		Acked         int64 `json:"acked"`
		Received      int64 `json:"received"`
		AckedReceived int64 `json:"acked_received"`
		Lost          int64 `json:"acked_lost"`
		Redelivered   int64 `json:"redelivered"`
		Reordered     int64 `json:"reordered"`
		Unexpected    int64 `json:"unexpected"`
		Reconnects    int64 `json:"reconnects"`
		Kills         []struct {
			DownS     float64 `json:"down_s"`
			RecoveryS float64 `json:"recovery_s"`
		} `json:"kills"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("not one JSON report: %v\n%s", err, r)
	}
	t.Logf("%+v", rep)
	if rep.KillsPlanned != 3 || rep.KillsDone != 3 || len(rep.Kills) != 3 {
		t.Errorf("kills: %d planned, %d done, %d reported; want 3", rep.KillsPlanned, rep.KillsDone, len(rep.Kills))
	}
	if rep.Acked == 0 || rep.Lost != 0 || rep.AckedReceived != rep.Acked {
		t.Errorf("acked %d, acked and received %d, lost %d: want every acknowledged message received", rep.Acked, rep.AckedReceived, rep.Lost)
	}
	if rep.Unexpected != 0 {
		t.Errorf("%d unexpected deliveries", rep.Unexpected)
	}
	// Every client came back after every kill: the server knew its key.
	if rep.Reconnects < 20*int64(rep.KillsDone) {
		t.Errorf("%d reconnects, want at least %d", rep.Reconnects, 20*rep.KillsDone)
	}
	for j, k := range rep.Kills {
		if k.DownS <= 0 {
			t.Errorf("kill %d: the server was back after %vs", j+1, k.DownS)
		}
	}

	// The run fails loudly on bad input, before starting anything.
	mustFail(t, []string{"at least 2 clients"}, "bench", "crash", "--clients", "1", "--quiet")
}
