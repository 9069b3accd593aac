package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/magpie-im/magpie/client"
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
  magpie probe --json | jq '.[] | select(.verdict == "ok")'`,
		Args: exactArgs(0),
		RunE: g.withClient(func(cmd *cobra.Command, cl *client.Client, _ []string) error {
			rs, err := cl.Probe(cmd.Context(), client.ProbeOptions{Timeout: timeout})
			if err != nil {
				return userError(err)
			}
			if g.json {
				out := []map[string]any{}
				for _, r := range rs {
					o := map[string]any{
						"transport": r.Endpoint.Transport, "address": r.Endpoint.Address, "verdict": r.Verdict,
						"connect_ms": ms(r.Connect), "handshake_ms": ms(r.Handshake), "round_trip_ms": ms(r.RoundTrip),
						"throughput_bytes_per_s": int64(r.Throughput),
					}
					if r.Err != nil {
						o["error"] = r.Err.Error()
					}
					out = append(out, o)
				}
				return g.printJSON(out)
			}
			w := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ENDPOINT\tCONNECT\tHANDSHAKE\tROUND TRIP\tTHROUGHPUT\tVERDICT")
			for _, r := range rs {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Endpoint.Key(), dur(r.Connect), dur(r.Handshake), dur(r.RoundTrip), rate(r.Throughput), r.Verdict)
			}
			return w.Flush()
		}),
	}
	c.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "time allowed for each step")
	g.addJSON(c)
	return c
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func dur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(100 * time.Microsecond).String()
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
