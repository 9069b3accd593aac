package client

import (
	"context"
	"time"

	"github.com/magpie-im/magpie/internal/clientconn"
)

// Verdicts of Probe, in the vocabulary of network-measurement tools
// (OONI's failure strings).
const (
	VerdictOK                 = clientconn.VerdictOK
	VerdictConnectionRefused  = clientconn.VerdictConnectionRefused
	VerdictConnectionReset    = clientconn.VerdictConnectionReset
	VerdictTimeout            = clientconn.VerdictTimeout
	VerdictTLSHandshakeFailed = clientconn.VerdictTLSHandshakeFailed
	VerdictThrottled          = clientconn.VerdictThrottled
	VerdictOther              = clientconn.VerdictOther
)

// ProbeOptions tune Probe. Zero fields take the defaults shown.
type ProbeOptions = clientconn.ProbeOptions

// ProbeResult is what Probe found for one endpoint.
type ProbeResult = clientconn.ProbeResult

// Probe tests every known endpoint from where this client is: transport
// and Noise handshake (timing the TCP connect inside it), a round trip and
// throughput, over one connection per endpoint and no other. It dials with
// a throwaway key, so it never disturbs the engine's connection. The
// results come ranked (clientconn.Rank): working first, stealthy before
// plain tcp, then fastest. Probe only reports: ReorderByProbe makes the
// client dial in the order found.
func (c *Client) Probe(ctx context.Context, opts ProbeOptions) ([]ProbeResult, error) {
	eps, _, err := c.knownEndpoints(ctx)
	if err != nil {
		return nil, err
	}
	results, err := clientconn.Probe(ctx, c.inv.ServerKey, eps, c.opts.Dial, opts)
	if err != nil {
		return nil, err
	}
	clientconn.Rank(results)
	return results, nil
}

// ReorderByProbe makes the client dial in the order of ranked probe
// results (Probe): working endpoints in their rank order, ahead of those
// the probe found failing or throttled, which count as blocked until they
// work again. Stealth still comes first (knownEndpoints).
func (c *Client) ReorderByProbe(ctx context.Context, rs []ProbeResult) {
	now := c.opts.Now()
	good, blocked := map[string]time.Time{}, map[string]time.Time{}
	for i, r := range rs {
		if r.Verdict == VerdictOK {
			good[r.Endpoint.Key()] = now.Add(-time.Duration(i) * time.Millisecond) // the best is the latest
		} else {
			blocked[r.Endpoint.Key()] = now
		}
	}
	c.stamp(ctx, settingLastGood, good)
	c.stamp(ctx, settingBlocked, blocked)
}
