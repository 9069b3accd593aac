package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/link"
)

// HandshakeOptions configure the handshake scenario: a connect storm.
type HandshakeOptions struct {
	Connections int // handshakes in all
	Concurrency int // at once (default 64)
	// Transport, if set, is the only transport dialled (tcp, obfs or
	// tls); the default dials the invite's endpoints in order.
	Transport string
	// Progress, if set, gets one line a second.
	Progress io.Writer
}

// HandshakeReport is the outcome of a handshake run.
type HandshakeReport struct {
	Connections int              `json:"connections"`
	Concurrency int              `json:"concurrency"`
	OK          int64            `json:"ok"`
	Errors      int64            `json:"errors"`
	ErrorKinds  map[string]int64 `json:"error_kinds,omitempty"`
	ElapsedS    float64          `json:"elapsed_s"`
	PerS        float64          `json:"handshakes_per_s"`
	Latency     Summary          `json:"latency"`
}

// RunHandshake opens o.Connections connections to the server of inv, each
// with a fresh device key (made in advance, outside the timing), o.Concurrency
// at a time: TCP connect, Noise IK handshake and hello, then close.
func RunHandshake(ctx context.Context, inv invite.Invite, o HandshakeOptions) (*HandshakeReport, error) {
	if o.Connections <= 0 {
		return nil, errors.New("bench handshake: need at least 1 connection")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	keys := make([]link.KeyPair, o.Connections)
	for i := range keys {
		k, err := link.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	t, err := newTarget(inv, o.Transport)
	if err != nil {
		return nil, err
	}
	plan := newSourcePlan(inv)
	h := NewHistogram()
	var ok, nerr atomic.Int64
	var mu sync.Mutex
	kinds := map[string]int64{}
	var next atomic.Int64
	begin := time.Now()
	var wg sync.WaitGroup
	for range min(o.Concurrency, o.Connections) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= o.Connections || ctx.Err() != nil {
					return
				}
				opts := dialOptions(plan, i)
				t0 := time.Now()
				dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				c, err := t.dial(dctx, keys[i], opts)
				cancel()
				if err != nil {
					nerr.Add(1)
					mu.Lock()
					if _, seen := kinds[err.Error()]; seen || len(kinds) < 20 {
						kinds[err.Error()]++
					}
					mu.Unlock()
					continue
				}
				h.Record(time.Since(t0))
				ok.Add(1)
				c.Close()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	rateLines(o.Progress, done, begin, ok.Load, func(el time.Duration, n int64, perS float64) string {
		return fmt.Sprintf("%5.0fs  handshakes %d (%.0f/s)  errors %d  p99 %s",
			el.Seconds(), n, perS, nerr.Load(), fmtDur(h.P99()))
	})
	el := time.Since(begin)
	r := &HandshakeReport{
		Connections: o.Connections, Concurrency: o.Concurrency,
		OK: ok.Load(), Errors: nerr.Load(), ElapsedS: el.Seconds(),
		PerS: float64(ok.Load()) / el.Seconds(), Latency: h.Summary(),
	}
	if len(kinds) > 0 {
		r.ErrorKinds = kinds
	}
	return r, ctx.Err()
}

// Text renders the report as a table.
func (r *HandshakeReport) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "handshake: %d connections, %d at once: %d ok, %d errors in %.2fs\n",
		r.Connections, r.Concurrency, r.OK, r.Errors, r.ElapsedS)
	fmt.Fprintf(&b, "throughput: %.0f handshakes/s (connect + Noise IK + hello, each with a fresh key)\n", r.PerS)
	b.WriteString(SummaryHeader + "\n")
	b.WriteString(r.Latency.Row("handshake") + "\n")
	writeKinds(&b, r.ErrorKinds)
	return b.String()
}
