package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/magpie-im/magpie/store"
)

// Metrics are the server's Prometheus metrics. They carry no user data: no
// usernames, addresses or payload sizes per user, only totals.
type Metrics struct {
	connections      prometheus.Gauge
	parkedConns      prometheus.Gauge
	handshakes       *prometheus.CounterVec
	refusedConns     *prometheus.CounterVec
	handshakeSeconds prometheus.Histogram
	messagesIn       prometheus.Counter
	messagesOut      prometheus.Counter
	ephemeral        prometheus.Counter
	commitSeconds    prometheus.Histogram
	commitOps        prometheus.Histogram
	errors           *prometheus.CounterVec
	puzzleBits       prometheus.Gauge // with --signup pow only
	reg              prometheus.Registerer
}

// NewMetrics registers the server's metrics with reg. Give the result to
// one server (Config.Metrics), which adds the queue depth of its store.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reg: reg,
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "magpie_connections", Help: "Client connections open (handshake completed)."}),
		parkedConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "magpie_connections_parked", Help: "Open connections parked while idle: no goroutine until bytes arrive."}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "magpie_handshakes_total", Help: "Link handshakes by result (ok, rejected: probes, replays, wrong keys, timeouts)."}, []string{"result"}),
		refusedConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "magpie_connections_refused_total", Help: "Connections refused at accept or shed, by why (connections: the server's cap; network: the source network's; handshakes: the oldest mid-handshake, closed to make room; unsent: the most unwritten output when all output is over its budget)."}, []string{"why"}),
		handshakeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "magpie_handshake_seconds", Help: "Time from accept to a completed handshake.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		messagesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "magpie_messages_in_total", Help: "Envelopes accepted and stored (one per send, whatever the device count)."}),
		messagesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "magpie_messages_out_total", Help: "Envelopes and receipts pushed to devices."}),
		ephemeral: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "magpie_ephemeral_total", Help: "Ephemeral envelopes handed to connected devices."}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "magpie_store_commit_seconds", Help: "Latency of one batched commit (one sync).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		commitOps: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "magpie_store_commit_ops", Help: "Operations (sends and acks) per batched commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12)}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "magpie_errors_total", Help: "Error responses by code."}, []string{"code"}),
	}
	reg.MustRegister(m.connections, m.parkedConns, m.handshakes, m.refusedConns, m.handshakeSeconds, m.messagesIn, m.messagesOut,
		m.ephemeral, m.commitSeconds, m.commitOps, m.errors)
	return m
}

// watchQueue adds the depth of st's device queues, read on each scrape.
func (m *Metrics) watchQueue(st store.Store) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "magpie_queue_depth", Help: "Items waiting in device queues (undelivered messages and receipts)."},
		func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n, err := st.QueueDepth(ctx)
			if err != nil {
				return -1
			}
			return float64(n)
		}))
}

// watchPuzzles adds the difficulty of sign-up puzzles (--signup pow).
func (m *Metrics) watchPuzzles() {
	if m == nil {
		return
	}
	m.puzzleBits = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "magpie_signup_puzzle_bits", Help: "Difficulty (leading zero bits) of the last sign-up puzzle issued: above its floor, sign-ups are coming fast."})
	m.reg.MustRegister(m.puzzleBits)
}

// The server calls these; a nil *Metrics records nothing.

func (m *Metrics) puzzle(bits int) {
	if m != nil && m.puzzleBits != nil {
		m.puzzleBits.Set(float64(bits))
	}
}

func (m *Metrics) handshake(ok bool, d time.Duration) {
	if m == nil {
		return
	}
	if ok {
		m.handshakes.WithLabelValues("ok").Inc()
		m.handshakeSeconds.Observe(d.Seconds())
	} else {
		m.handshakes.WithLabelValues("rejected").Inc()
	}
}

func (m *Metrics) refused(why string) {
	if m == nil {
		return
	}
	m.refusedConns.WithLabelValues(why).Inc()
}

func (m *Metrics) connected(delta float64) {
	if m != nil {
		m.connections.Add(delta)
	}
}

func (m *Metrics) parked(delta float64) {
	if m != nil {
		m.parkedConns.Add(delta)
	}
}

func (m *Metrics) in() {
	if m != nil {
		m.messagesIn.Inc()
	}
}

func (m *Metrics) out(ephemeral bool) {
	if m == nil {
		return
	}
	if ephemeral {
		m.ephemeral.Inc()
	} else {
		m.messagesOut.Inc()
	}
}

func (m *Metrics) commit(ops int, d time.Duration) {
	if m != nil {
		m.commitSeconds.Observe(d.Seconds())
		m.commitOps.Observe(float64(ops))
	}
}

func (m *Metrics) error(code string) {
	if m != nil {
		m.errors.WithLabelValues(code).Inc()
	}
}
