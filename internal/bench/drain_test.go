package bench

import (
	"context"
	"math"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// drainServer starts a server with metrics and an admin endpoint serving
// them, and returns it with the admin address.
func drainServer(t *testing.T, cfg server.Config) (*servertest.Server, string) {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Metrics = server.NewMetrics(reg)
	s := servertest.Start(t, cfg)
	admin := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(admin.Close)
	return s, strings.TrimPrefix(admin.URL, "http://")
}

func TestDrain(t *testing.T) {
	s, admin := drainServer(t, server.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var progress strings.Builder
	r, err := RunDrain(ctx, s.Invite, DrainOptions{Messages: 3000, Size: 100, Senders: 4, Admin: admin, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", r.Text())
	if !r.OK() {
		t.Errorf("report %+v: want every message queued and delivered once, and the drained marker", r)
	}
	if r.Enqueued != 3000 || r.Delivered != 3000 || r.Missing != 0 || r.Duplicates != 0 || r.Unexpected != 0 {
		t.Errorf("enqueued %d, delivered %d, missing %d, duplicates %d, unexpected %d: want 3000, 3000, 0, 0, 0",
			r.Enqueued, r.Delivered, r.Missing, r.Duplicates, r.Unexpected)
	}
	if r.Receipts != 3000 {
		t.Errorf("%d receipts, want 3000 (one per acknowledged message)", r.Receipts)
	}
	if r.DrainS <= 0 || r.DrainPerS <= 0 || math.Abs(r.DrainBytesPerS-r.DrainPerS*100) > 1 || r.FirstMessageS <= 0 || r.FirstMessageS > r.DrainS {
		t.Errorf("drain %.3fs at %.0f/s (%.0f B/s), first message after %.3fs: want positive figures, bytes = 100 × messages, first ≤ last",
			r.DrainS, r.DrainPerS, r.DrainBytesPerS, r.FirstMessageS)
	}
	srv := r.Server
	if srv == nil {
		t.Fatal("no server figures despite Admin")
	}
	if !srv.QueueConfirm || srv.QueueDepthEnqueued-srv.QueueDepthBefore != 3000 || srv.QueueDepthAfter != srv.QueueDepthBefore {
		t.Errorf("server queue depth %+v: want +3000 after queueing and back to the start after the drain and receipts", *srv)
	}
	if srv.CPUSeconds <= 0 {
		t.Errorf("server CPU during the drain %v, want > 0", srv.CPUSeconds)
	}
	if srv.AcksCommittedS < r.DrainS || srv.CommittedPerS <= 0 {
		t.Errorf("acks committed after %.3fs (%.0f/s), the last message after %.3fs: want a commit time, not before the last message",
			srv.AcksCommittedS, srv.CommittedPerS, r.DrainS)
	}
	for _, want := range []string{"queueing 3000 messages", "reconnecting", "collecting the senders' receipts"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress does not mention %q:\n%s", want, progress.String())
		}
	}
	for _, want := range []string{"enqueue", "drain", "missing 0  duplicates 0", "confirmed"} {
		if !strings.Contains(r.Text(), want) {
			t.Errorf("report does not mention %q:\n%s", want, r.Text())
		}
	}
}

// TestDrainWithoutAdmin: --admin is optional.
func TestDrainWithoutAdmin(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := RunDrain(ctx, s.Invite, DrainOptions{Messages: 500, Size: MinSize, Senders: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Server != nil || r.Receipts != 500 {
		t.Errorf("report %+v: want all 500 delivered, no server figures, 500 receipts", r)
	}
}

// TestDrainQueueFull: a server whose queue limit is below --messages
// refuses the rest, and the error says what to do.
func TestDrainQueueFull(t *testing.T) {
	s := servertest.Start(t, server.Config{QueueLimit: 100})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := RunDrain(ctx, s.Invite, DrainOptions{Messages: 300, Size: MinSize, Senders: 2})
	if err == nil || !strings.Contains(err.Error(), "--queue-limit") {
		t.Fatalf("err = %v, want one naming --queue-limit", err)
	}
	if r == nil || r.Enqueued > 100 || r.EnqueueErrors == 0 {
		t.Errorf("report %+v: want at most 100 queued and the refusal counted", r)
	}
}

func TestDrainOptions(t *testing.T) {
	o := DrainOptions{}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if o.Messages != 100_000 || o.Size != 1024 || o.Senders != 32 || o.Inflight != 64 || o.Stall != 30*time.Second {
		t.Errorf("defaults %+v", o)
	}
	for _, bad := range []DrainOptions{{Size: MinSize - 1}, {Messages: -1}, {Senders: -2}} {
		if err := bad.setDefaults(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}
