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
	c := &cobra.Command{
		Use:   "probe",
		Short: "Test every way to reach the server from here",
		Long: `Test every endpoint and transport this client knows, from where you are:
TCP connect, transport and Noise handshake, a round trip and throughput.
Verdicts use the words network-measurement tools use: ok,
connection_refused, connection_reset, generic_timeout_error,
tls_handshake_failed, throttled. Afterwards the client tries working
endpoints first, fastest first.`,
		Example: `  magpie probe
  magpie probe --json | jq 'select(.verdict == "ok")'`,
		Args: exactArgs(0),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, _ []string) error {
			rs, err := s.Probe(cmd.Context(), timeout)
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
			return w.Flush()
		}),
	}
	c.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "time allowed for each step")
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
