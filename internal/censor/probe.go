package censor

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
)

// End is how a probe connection ended.
type End string

// The ways a probe ends.
const (
	EndEOF     End = "eof"     // the server closed (FIN)
	EndReset   End = "reset"   // the server reset (RST)
	EndTimeout End = "timeout" // still open when the probe gave up
	EndError   End = "error"   // another error (see Err)
	EndRefused End = "refused" // could not connect
)

// Probe kinds.
const (
	ProbeNothing        = "nothing"         // connect and send nothing (the baseline)
	ProbeReplay         = "replay"          // a recorded first packet, as is
	ProbeReplayModified = "replay-modified" // the same with one byte changed
	ProbeRandom         = "random"          // random bytes
)

// ProbeResult is the server's reaction to one probe.
type ProbeResult struct {
	Name     string // e.g. "random-50", "replay-2", "nothing-1"
	Kind     string // ProbeNothing, ProbeReplay, …
	Sent     int
	Received int
	Head     []byte        // the first bytes received (at most 64)
	Elapsed  time.Duration // from the end of sending to the end
	End      End
	Err      string
	Differs  bool   // reaction unlike the baseline's
	Why      string // how it differs
	Attempts int    // times sent (more than 1 when retried)
}

// ProbeReport gathers the reactions of one server.
type ProbeReport struct {
	Target   string
	Baseline []ProbeResult // reactions to silence (BaselineRuns, and one more per retry round)
	Results  []ProbeResult // everything else, in the order sent
	// BaselineMin and BaselineMax bound the baseline's close times (when
	// they closed before the timeout).
	BaselineMin, BaselineMax time.Duration
	// Distinguishable is true when any result differs from the baseline:
	// a censor could tell this server from one that ignores everything.
	Distinguishable bool
	Reasons         []string // "name: why" for every differing result
}

// Prober is an active prober in the style of the Great Firewall's (Alice
// et al., "How China Detects and Blocks Shadowsocks", IMC 2020; Wu et al.
// 2023 §6). The zero value uses the defaults noted per field.
type Prober struct {
	// Timeout is how long each probe waits for the server to close after
	// sending (default 5 s). A server that holds every connection open
	// longer than this looks the same whatever it is sent.
	Timeout time.Duration
	// Tolerance widens the baseline's range of close times when comparing
	// (default 250 ms).
	Tolerance time.Duration
	// BaselineRuns is how many silent connections make the baseline
	// (default 3).
	BaselineRuns int
	// RandomLengths are the sizes of the random probes (default 0, 1, 50,
	// 500, 5000; 0 connects and sends nothing, like the baseline).
	RandomLengths []int
	// Concurrency bounds the probes in flight (default 8).
	Concurrency int
	// DialTimeout bounds each connection attempt (default 5 s).
	DialTimeout time.Duration
	// Retries is how many times a probe whose reaction differs is sent
	// again, each time with one more baseline connection (default 2;
	// negative for none). A result is reported as differing only if every
	// attempt differed, so that a scheduling hiccup on a loaded machine is
	// not taken for a leak; a server that leaks consistently is still
	// flagged.
	Retries int
}

// Probe runs a Prober with the defaults against target.
func Probe(ctx context.Context, target string, firstPackets [][]byte) ProbeReport {
	var p Prober
	return p.Probe(ctx, target, firstPackets)
}

type probeSpec struct {
	name, kind string
	data       []byte
}

// Probe connects to target (directly, not through any forward) once per
// probe: BaselineRuns times sending nothing, then for each of firstPackets
// a replay as is and a replay with its middle byte inverted, then random
// bytes of each of RandomLengths. It keeps each connection open (never
// half-closes) and records what comes back and when the server closes, then
// compares every reaction with the baseline: it differs if it received a
// different number of bytes, ended differently (FIN, RST, timeout), or
// closed outside the baseline's close times widened by Tolerance. Probes
// that differ are retried (Retries).
func (p Prober) Probe(ctx context.Context, target string, firstPackets [][]byte) ProbeReport {
	if p.Timeout <= 0 {
		p.Timeout = 5 * time.Second
	}
	if p.Tolerance <= 0 {
		p.Tolerance = 250 * time.Millisecond
	}
	if p.BaselineRuns <= 0 {
		p.BaselineRuns = 3
	}
	if p.RandomLengths == nil {
		p.RandomLengths = []int{0, 1, 50, 500, 5000}
	}
	if p.Concurrency <= 0 {
		p.Concurrency = 8
	}
	if p.DialTimeout <= 0 {
		p.DialTimeout = 5 * time.Second
	}
	if p.Retries == 0 {
		p.Retries = 2
	}

	var specs []probeSpec
	for i := range p.BaselineRuns {
		specs = append(specs, probeSpec{name: fmt.Sprintf("nothing-%d", i+1), kind: ProbeNothing})
	}
	nBase := len(specs)
	for i, fp := range firstPackets {
		if len(fp) == 0 {
			continue
		}
		specs = append(specs, probeSpec{name: fmt.Sprintf("replay-%d", i), kind: ProbeReplay, data: slices.Clone(fp)})
		mod := slices.Clone(fp)
		mod[len(mod)/2] ^= 0xff
		specs = append(specs, probeSpec{name: fmt.Sprintf("replay-modified-%d", i), kind: ProbeReplayModified, data: mod})
	}
	for _, n := range p.RandomLengths {
		b := make([]byte, max(n, 0))
		crand.Read(b)
		specs = append(specs, probeSpec{name: fmt.Sprintf("random-%d", n), kind: ProbeRandom, data: b})
	}

	results := p.run(ctx, target, specs)
	baseline := slices.Clip(results[:nBase]) // appending must not overwrite Results
	specs, results = specs[nBase:], results[nBase:]
	for i := range results {
		results[i].Attempts = 1
	}
	rep := ProbeReport{Target: target, Baseline: baseline, Results: results}
	compare(&rep, p.Tolerance)
	for attempt := 0; attempt < p.Retries && rep.Distinguishable && ctx.Err() == nil; attempt++ {
		var again []probeSpec
		var idx []int
		for i, r := range rep.Results {
			if r.Differs {
				again = append(again, specs[i])
				idx = append(idx, i)
			}
		}
		again = append(again, probeSpec{name: fmt.Sprintf("nothing-%d", len(rep.Baseline)+1), kind: ProbeNothing})
		out := p.run(ctx, target, again)
		rep.Baseline = append(rep.Baseline, out[len(out)-1])
		for j, i := range idx {
			out[j].Attempts = rep.Results[i].Attempts + 1
			rep.Results[i] = out[j]
		}
		// Results that matched before keep their verdict: only the
		// retried ones can still differ.
		keep := make([]bool, len(rep.Results))
		for _, i := range idx {
			keep[i] = true
		}
		compareOnly(&rep, p.Tolerance, keep)
	}
	return rep
}

// run sends every probe (at most Concurrency at once) and returns the
// results in order.
func (p Prober) run(ctx context.Context, target string, specs []probeSpec) []ProbeResult {
	results := make([]ProbeResult, len(specs))
	sem := make(chan struct{}, p.Concurrency)
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = p.probeOne(ctx, target, s)
		}()
	}
	wg.Wait()
	return results
}

func (p Prober) probeOne(ctx context.Context, target string, s probeSpec) ProbeResult {
	r := ProbeResult{Name: s.name, Kind: s.kind}
	d := net.Dialer{Timeout: p.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		r.End, r.Err = EndRefused, err.Error()
		return r
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if len(s.data) > 0 {
		conn.SetWriteDeadline(time.Now().Add(p.Timeout))
		n, err := conn.Write(s.data)
		r.Sent = n
		if err != nil {
			r.End, r.Err = classify(err), err.Error()
			return r
		}
	}
	start := time.Now()
	conn.SetReadDeadline(start.Add(p.Timeout))
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if n > 0 && len(r.Head) < 64 {
			r.Head = append(r.Head, buf[:min(n, 64-len(r.Head))]...)
		}
		r.Received += n
		if err != nil {
			r.Elapsed = time.Since(start)
			r.End = classify(err)
			if r.End == EndError {
				r.Err = err.Error()
			}
			return r
		}
	}
}

func classify(err error) End {
	switch {
	case errors.Is(err, io.EOF):
		return EndEOF
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return EndReset
	case errors.Is(err, os.ErrDeadlineExceeded):
		return EndTimeout
	}
	return EndError
}

// compare marks the results that differ from the baseline.
func compare(rep *ProbeReport, tol time.Duration) { compareOnly(rep, tol, nil) }

// compareOnly recomputes the baseline's ranges and re-judges the results
// where only[i] (all of them if only is nil); the others keep their verdict.
func compareOnly(rep *ProbeReport, tol time.Duration, only []bool) {
	ends := map[End]bool{}
	minRecv, maxRecv := -1, -1
	var closed []time.Duration
	for _, b := range rep.Baseline {
		ends[b.End] = true
		if minRecv < 0 || b.Received < minRecv {
			minRecv = b.Received
		}
		maxRecv = max(maxRecv, b.Received)
		if b.End == EndEOF || b.End == EndReset {
			closed = append(closed, b.Elapsed)
		}
	}
	if len(closed) > 0 {
		rep.BaselineMin, rep.BaselineMax = slices.Min(closed), slices.Max(closed)
	}
	rep.Distinguishable, rep.Reasons = false, nil
	for i := range rep.Results {
		r := &rep.Results[i]
		if only != nil && !only[i] {
			if r.Differs {
				rep.Distinguishable = true
				rep.Reasons = append(rep.Reasons, r.Name+": "+r.Why)
			}
			continue
		}
		r.Differs, r.Why = false, ""
		var why []string
		if r.Received < minRecv || r.Received > maxRecv {
			why = append(why, fmt.Sprintf("received %d bytes (silence got %d–%d)", r.Received, minRecv, maxRecv))
		}
		if !ends[r.End] {
			why = append(why, fmt.Sprintf("ended with %s (silence: %s)", r.End, endList(ends)))
		}
		if (r.End == EndEOF || r.End == EndReset) && len(closed) > 0 &&
			(r.Elapsed < rep.BaselineMin-tol || r.Elapsed > rep.BaselineMax+tol) {
			why = append(why, fmt.Sprintf("closed after %v (silence: %v–%v)",
				r.Elapsed.Round(time.Millisecond), rep.BaselineMin.Round(time.Millisecond), rep.BaselineMax.Round(time.Millisecond)))
		}
		if len(why) > 0 {
			r.Differs = true
			r.Why = fmt.Sprint(why)
			rep.Distinguishable = true
			rep.Reasons = append(rep.Reasons, r.Name+": "+r.Why)
		}
	}
}

func endList(m map[End]bool) string {
	var s []string
	for e := range m {
		s = append(s, string(e))
	}
	slices.Sort(s)
	return fmt.Sprint(s)
}
