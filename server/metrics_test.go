package server_test

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := servertest.Start(t, server.Config{Metrics: server.NewMetrics(reg)})
	alice := s.Register(t, "alice")
	bob := s.Register(t, "bob")
	bob.Close()
	for range 3 {
		mustSend(t, alice, "bob", clientconn.NewMessageID(), "x")
	}
	if _, err := alice.Send(ctx(t), "nobody", clientconn.NewMessageID(), nil); !errors.Is(err, clientconn.ErrUnknownUser) {
		t.Fatal(err)
	}
	want := map[string]float64{
		"magpie_messages_in_total": 3,
		"magpie_connections":       1, // bob left
		"magpie_queue_depth":       3, // bob's three, waiting
	}
	for deadline := time.Now().Add(wait); ; time.Sleep(20 * time.Millisecond) {
		ok := true
		for name, v := range want {
			if got := gather(t, reg, name); got != v {
				ok = false
				if time.Now().After(deadline) {
					t.Fatalf("%s = %v, want %v", name, got, v)
				}
			}
		}
		if ok {
			break
		}
	}
	if n := gather(t, reg, "magpie_store_commit_seconds"); n < 1 {
		t.Fatalf("commit histogram counted %v commits", n)
	}
	if got := gather(t, reg, "magpie_errors_total"); got != 1 {
		t.Fatalf("errors_total = %v, want 1 (UNKNOWN_USER)", got)
	}
	if got := gather(t, reg, "magpie_handshakes_total"); got < 2 {
		t.Fatalf("handshakes_total = %v", got)
	}
}

// gather sums every series of a metric family.
func gather(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}
