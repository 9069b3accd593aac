package clientconn

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"slices"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/transport/tlsws"
	"github.com/magpie-im/magpie/wire"
)

// Verdicts, in the vocabulary of network-measurement tools (OONI's
// failure strings).
const (
	VerdictOK                 = "ok"
	VerdictConnectionRefused  = "connection_refused"
	VerdictConnectionReset    = "connection_reset"
	VerdictTimeout            = "generic_timeout_error"
	VerdictTLSHandshakeFailed = "tls_handshake_failed"
	VerdictThrottled          = "throttled"
	VerdictOther              = "unknown_failure"
)

// ProbeOptions tune Probe. Zero fields take the defaults shown.
type ProbeOptions struct {
	Timeout       time.Duration // per step (5 s)
	EchoBytes     int           // bytes echoed to measure throughput (256 KiB)
	ThrottleBelow float64       // bytes/s under which a working path is "throttled" (64 KiB/s)
}

// ProbeResult is what Probe found for one endpoint.
type ProbeResult struct {
	Endpoint   endpoints.Endpoint
	Connect    time.Duration // TCP connect
	Handshake  time.Duration // transport + Noise handshake, after connect
	RoundTrip  time.Duration // one ping
	Throughput float64       // bytes/s, both directions, echoing EchoBytes
	Verdict    string
	Err        error
}

// Probe tests each of eps concurrently from where this machine is: TCP
// connect, transport and Noise handshake, a round trip and throughput. It
// dials with a throwaway key: probes run concurrently (the server would let
// one connection of a device supersede another), and a probe of a path that
// may be watched need not say which account is behind it.
func Probe(ctx context.Context, serverKey [32]byte, eps []endpoints.Endpoint, dial DialOptions, opts ProbeOptions) ([]ProbeResult, error) {
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.EchoBytes == 0 {
		opts.EchoBytes = 256 << 10
	}
	if opts.ThrottleBelow == 0 {
		opts.ThrottleBelow = 64 << 10
	}
	dial.setDefaults()
	dial.AddrTimeout = opts.Timeout
	key, err := link.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	results := make([]ProbeResult, len(eps))
	done := make(chan struct{})
	for i, e := range eps {
		go func() {
			results[i] = probeOne(ctx, e, serverKey, key, dial, opts)
			done <- struct{}{}
		}()
	}
	for range eps {
		<-done
	}
	return results, nil
}

func probeOne(ctx context.Context, e endpoints.Endpoint, serverKey [32]byte, key link.KeyPair, dial DialOptions, opts ProbeOptions) ProbeResult {
	r := ProbeResult{Endpoint: e}
	fail := func(err error) ProbeResult {
		r.Err, r.Verdict = err, verdict(err)
		return r
	}
	// The connection is the probe's only one, and a real one: TCP connect
	// (timed by the dialer), the transport and the Noise handshake. A
	// connection opened and closed empty first would be a pattern of its
	// own on a watched path.
	hello, _ := proto.Marshal(&wire.ClientHello{MinVersion: wire.Version, MaxVersion: wire.Version, UserAgent: dial.UserAgent + " probe"})
	timed := &timingDialer{d: dial.Dialer}
	dial.Dialer = timed
	start := time.Now()
	conn, err := dialOne(ctx, e, serverKey, key, hello, dial)
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	// tls dials its own TCP connection (transport/tlsws): its connect time
	// is part of the handshake's.
	r.Connect = timed.took
	r.Handshake = time.Since(start) - r.Connect

	// Step 3: a round trip, then throughput within one Timeout: echo
	// 16 KiB chunks until EchoBytes went through or time is up.
	pctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	start = time.Now()
	if _, err := conn.Ping(pctx); err != nil {
		return fail(err)
	}
	r.RoundTrip = time.Since(start)
	tctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	chunk := make([]byte, min(opts.EchoBytes, 16<<10))
	rand.Read(chunk)
	sent := 0
	start = time.Now()
	for sent < opts.EchoBytes {
		if err := conn.Echo(tctx, chunk); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				break // a path this slow is throttled: measure what got through
			}
			return fail(err)
		}
		sent += len(chunk)
	}
	r.Throughput = float64(2*sent) / time.Since(start).Seconds()
	r.Verdict = VerdictOK
	if r.Throughput < opts.ThrottleBelow {
		r.Verdict = VerdictThrottled
	}
	return r
}

// Rank sorts probe results best first: working endpoints (ok), then
// throttled ones, then those that failed; within each, stealthy transports
// (obfs, tls, relays) before plain tcp, whose first packet a censor can
// fingerprint; then the fastest connect and handshake first.
func Rank(rs []ProbeResult) {
	class := func(r ProbeResult) int {
		switch r.Verdict {
		case VerdictOK:
			return 0
		case VerdictThrottled:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(rs, func(a, b ProbeResult) int {
		if c := cmp.Compare(class(a), class(b)); c != 0 {
			return c
		}
		if a.Endpoint.Stealthy() != b.Endpoint.Stealthy() {
			if a.Endpoint.Stealthy() {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Connect+a.Handshake, b.Connect+b.Handshake)
	})
}

// timingDialer times the TCP connect of the one connection it opens.
type timingDialer struct {
	d    tcpDialer
	took time.Duration
}

func (t *timingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	start := time.Now()
	c, err := t.d.DialContext(ctx, network, addr)
	t.took = time.Since(start)
	return c, err
}

// verdict names a failure the way measurement tools do.
func verdict(err error) string {
	var ne net.Error
	var he *tlsws.HandshakeError
	var te tls.AlertError
	var re *tls.RecordHeaderError
	var ce *tls.CertificateVerificationError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return VerdictConnectionRefused
	case errors.As(err, &he):
		// A reset mid-handshake (how censors block by SNI) is reported as
		// connection_reset, as OONI does; a timeout as a timeout; any
		// other failure (bad certificate or pin, an alert) is
		// tls_handshake_failed.
		if errors.Is(err, syscall.ECONNRESET) {
			return VerdictConnectionReset
		}
		if errors.As(err, &ne) && ne.Timeout() {
			return VerdictTimeout
		}
		return VerdictTLSHandshakeFailed
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return VerdictConnectionReset
	case errors.As(err, &te), errors.As(err, &re), errors.As(err, &ce):
		return VerdictTLSHandshakeFailed
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, link.ErrHandshakeTimeout), errors.Is(err, ErrStalled), errors.Is(err, ErrTooSlow),
		errors.As(err, &ne) && ne.Timeout():
		return VerdictTimeout
	default:
		return VerdictOther
	}
}
