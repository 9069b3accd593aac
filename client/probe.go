package client

import (
	"context"
	"sort"

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

// Probe tests every known endpoint from where this client is: TCP connect,
// transport and Noise handshake, a round trip and throughput. It dials
// with a throwaway key, so it never disturbs the engine's connection. The
// results also reorder the endpoints this client tries: working ones,
// fastest handshake first.
func (c *Client) Probe(ctx context.Context, opts ProbeOptions) ([]ProbeResult, error) {
	eps, _, err := c.knownEndpoints(ctx)
	if err != nil {
		return nil, err
	}
	results, err := clientconn.Probe(ctx, c.inv.ServerKey, eps, c.opts.Dial, opts)
	if err != nil {
		return nil, err
	}
	ok := make([]ProbeResult, 0, len(results))
	for _, r := range results {
		if r.Verdict == VerdictOK {
			ok = append(ok, r)
		}
	}
	sort.Slice(ok, func(i, j int) bool { return ok[i].Handshake > ok[j].Handshake })
	for _, r := range ok { // slowest first: the last remembered is tried first
		c.remember(ctx, r.Endpoint)
	}
	return results, nil
}
