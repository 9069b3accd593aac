package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/magpie-im/magpie/internal/engine"
)

func probeCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	var reorder bool
	c := &cobra.Command{
		Use:   "probe",
		Short: "Test every way to reach the server from here",
		Long: `Test every endpoint and transport this client may dial, from where you
are: TCP connect, transport and Noise handshake, a round trip and throughput.
Verdicts use the words network-measurement tools use: ok,
connection_refused, connection_reset, generic_timeout_error,
tls_handshake_failed, throttled. Each endpoint gets one connection, the
probe itself: a real handshake and a real round trip, never an empty
connection first.

The results are ranked: working first, stealthy transports (obfs, tls,
relays) before plain tcp, then fastest. Plain tcp that the operator did not
mark safe is left out, as the client never dials it (its first packet is
what a censor fingerprints; magpie settings plain-tcp on allows it). The
probe only reports: the client keeps its dial order unless you add
--reorder, which makes it dial in the ranked order and try what failed
last.`,
		Example: `  magpie probe
  magpie probe --reorder
  magpie probe --json | jq 'select(.verdict == "ok")'`,
		Args: exactArgs(0),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, _ []string) error {
			rs, err := s.Probe(cmd.Context(), timeout, reorder)
			if err != nil {
				return err
			}
			if g.json {
				for _, r := range rs {
					if err := g.printJSON(r); err != nil {
						return err
					}
				}
				return nil
			}
			w := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ENDPOINT\tCONNECT\tHANDSHAKE\tROUND TRIP\tTHROUGHPUT\tVERDICT")
			for _, r := range rs {
				fmt.Fprintf(w, "%s://%s\t%s\t%s\t%s\t%s\t%s\n", r.Transport, r.Address, dur(r.ConnectMs), dur(r.HandshakeMs), dur(r.RoundTripMs), rate(float64(r.ThroughputBytesPerS)), r.Verdict)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if reorder {
				fmt.Fprintln(g.stdout, "The client now dials in this order (what failed last).")
			} else {
				fmt.Fprintf(g.stdout, "The dial order is unchanged; to dial in this order: %s\n", g.magpie("probe --reorder"))
			}
			return nil
		}),
	}
	c.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "time allowed for each step")
	c.Flags().BoolVar(&reorder, "reorder", false, "dial in the ranked order from now on (what failed, last)")
	g.addJSON(c)
	return c
}

func dur(ms float64) string {
	if ms == 0 {
		return "-"
	}
	return (time.Duration(ms * float64(time.Millisecond))).Round(100 * time.Microsecond).String()
}

func rate(bps float64) string {
	switch {
	case bps == 0:
		return "-"
	case bps >= 1<<20:
		return fmt.Sprintf("%.1f MB/s", bps/(1<<20))
	default:
		return fmt.Sprintf("%.1f KB/s", bps/(1<<10))
	}
}
