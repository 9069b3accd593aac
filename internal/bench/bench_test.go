package bench

import (
	"context"
	"maps"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func chatOpts() ChatOptions {
	return ChatOptions{Clients: 10, Rate: 200, Duration: time.Second, Size: 256}
}

// checkChat checks that every message sent was acknowledged and delivered,
// with nothing failing.
func checkChat(t *testing.T, r *ChatReport) {
	t.Helper()
	t.Logf("\n%s", r.Text())
	if r.Sent == 0 || r.Sent != r.Acked || r.Acked != r.Received {
		t.Errorf("sent %d, acked %d, received %d: want all equal and non-zero", r.Sent, r.Acked, r.Received)
	}
	if r.Errors != 0 {
		t.Errorf("%d errors: %v", r.Errors, r.ErrorKinds)
	}
	if r.Ack.Count != r.Acked || r.Deliver.Count != r.Received {
		t.Errorf("histograms hold %d and %d values, want %d and %d", r.Ack.Count, r.Deliver.Count, r.Acked, r.Received)
	}
	if r.Ack.Max <= 0 || r.Deliver.Max <= 0 {
		t.Errorf("empty latencies: ack %+v, deliver %+v", r.Ack, r.Deliver)
	}
}

func TestChat(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := RunChat(ctx, s.Invite, chatOpts())
	if err != nil {
		t.Fatal(err)
	}
	checkChat(t, r)
	if r.Target != "magpie" {
		t.Errorf("target %q", r.Target)
	}
}

func TestChatE2E(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o := chatOpts()
	o.E2E = true
	r, err := RunChat(ctx, s.Invite, o)
	if err != nil {
		t.Fatal(err)
	}
	checkChat(t, r)
	if !r.E2E || r.E2ESetupS <= 0 || r.E2ESetupS > r.SetupS {
		t.Errorf("e2e %v, e2e setup %.3fs of %.3fs", r.E2E, r.E2ESetupS, r.SetupS)
	}
}

func TestRawChat(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := RunRawChat(ctx, chatOpts())
	if err != nil {
		t.Fatal(err)
	}
	checkChat(t, r)
}

func TestPairs(t *testing.T) {
	for n := 2; n < 12; n++ {
		peer := pairs(n, newRand())
		for i, p := range peer {
			if p == i || p < 0 || p >= n {
				t.Fatalf("n=%d: client %d paired with %d", n, i, p)
			}
			if n%2 == 0 && peer[p] != i {
				t.Fatalf("n=%d: %d→%d but %d→%d", n, i, p, p, peer[p])
			}
		}
	}
}

func TestHandshake(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := RunHandshake(ctx, s.Invite, HandshakeOptions{Connections: 20, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", r.Text())
	if r.OK != 20 || r.Errors != 0 || r.Latency.Count != 20 {
		t.Errorf("ok %d, errors %d (%v), histogram count %d: want 20, 0, 20", r.OK, r.Errors, r.ErrorKinds, r.Latency.Count)
	}
}

func TestParseMetrics(t *testing.T) {
	m, err := ParseMetrics(strings.NewReader(`# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 5.0331648e+07
magpie_errors_total{code="rate limited"} 3
magpie_handshakes_total{result="ok"} 12 1700000000000
process_cpu_seconds_total 1.25
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Metrics{
		"process_resident_memory_bytes":            5.0331648e+07,
		`magpie_errors_total{code="rate limited"}`: 3,
		`magpie_handshakes_total{result="ok"}`:     12,
		"process_cpu_seconds_total":                1.25,
	}
	if !maps.Equal(m, want) {
		t.Errorf("got %v, want %v", m, want)
	}
}

func TestHold(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	s := servertest.Start(t, server.Config{Metrics: server.NewMetrics(reg)})
	admin := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := RunHold(ctx, s.Invite, HoldOptions{
		Connections: 10, Admin: strings.TrimPrefix(admin.URL, "http://"),
		Hold: 200 * time.Millisecond, Settle: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", r.Text())
	if r.Connections != 10 || r.Dropped != 0 || r.ServerConns != 10 || r.RSSBefore <= 0 || r.RSSAfter <= 0 {
		t.Errorf("report %+v: want 10 connections, none dropped, the server counting 10, and RSS readings", r)
	}
}

// With more attacker sockets than the server has places for handshakes,
// honest clients still connect (the server sheds the oldest) and chat.
func TestAbuse(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	s := servertest.Start(t, server.Config{Metrics: server.NewMetrics(reg), MaxHandshakes: 8})
	admin := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := RunAbuse(ctx, s.Invite, AbuseOptions{
		Admin:    strings.TrimPrefix(admin.URL, "http://"),
		HalfOpen: 12, Slowloris: 4, Idle: 5, Trickle: 50 * time.Millisecond,
		Measure: time.Second, HandshakeRate: 20, SendRate: 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", r.Text())
	a := r.Attacked
	if a.Handshakes == 0 || a.HandshakesOK != a.Handshakes || a.Sends == 0 || a.SendErrors != 0 || r.IdleDropped != 0 {
		t.Errorf("attacked: %+v, %d idle dropped: want every honest handshake and send to succeed", a, r.IdleDropped)
	}
	if r.Shed == 0 || r.Reopened == 0 || r.AttackersOpenMax == 0 {
		t.Errorf("report %+v: want the server to have shed attacker sockets, and them reopened", r)
	}
	if r.Baseline.Handshakes == 0 || r.Baseline.Sends == 0 || a.ServerRSSMax <= 0 {
		t.Errorf("report %+v: want a measured baseline and memory readings", r)
	}
}
