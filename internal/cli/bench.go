package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/magpie-im/magpie/internal/bench"
	"github.com/magpie-im/magpie/invite"
)

// benchCmd is magpie bench, the load tool (package bench).
func benchCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "bench",
		Short: "Load-test a running server: chat, handshake and hold scenarios",
		Example: `  magpie bench chat --invite "$(magpie invite --data /var/lib/magpie)" --clients 100 --rate 2000 --compare
  magpie bench handshake --invite "$INVITE" --connections 2000 --concurrency 32
  magpie bench hold --invite "$INVITE" --connections 1000 --admin 127.0.0.1:9465`,
		Long: `Load-test a running Magpie server, reached through its invite.

  magpie bench chat      users in pairs sending at a fixed rate (open loop)
  magpie bench handshake a connect storm: full handshakes per second
  magpie bench hold      many idle connections: server memory and CPU each

Every scenario registers throw-away users named bench_<random>_<n> on the
server. Against a server on loopback the tool spreads its connections over
source addresses in 127.0.0.0/8, because the server allows only a few
sign-ups per address; against a remote server, raise its sign-up limit or
expect registrations to be refused.

Latency is measured from each message's intended send time, fixed in
advance from the target rate, so that a stalled server cannot hide behind
the load generator waiting for it ("coordinated omission": Gil Tene, "How
NOT to Measure Latency"; the method wrk2 uses).

One process holds at most about 15,000 connections (the open-files limit is
20,000); spreading a run over worker processes is future work, as are
end-to-end encrypted payloads (--e2e) and the drain and crash scenarios.`,
	}
	c.AddCommand(benchChatCmd(g), benchHandshakeCmd(g), benchHoldCmd(g))
	return c
}

func parseInvite(s string) (invite.Invite, error) {
	if s == "" {
		return invite.Invite{}, errors.New("--invite is required (the line magpie serve prints)")
	}
	return invite.Parse(s)
}

// scenarioRunE is the RunE of a scenario that needs only the invite: parse
// it, run with live progress lines (unless --quiet), then print the report
// as a table or, with --json, as JSON.
func scenarioRunE[R interface{ Text() string }](g *globals, inv *string, quiet *bool,
	run func(ctx context.Context, in invite.Invite, progress io.Writer) (R, error)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		in, err := parseInvite(*inv)
		if err != nil {
			return err
		}
		r, err := run(cmd.Context(), in, g.progress(*quiet))
		if err != nil {
			return userError(err)
		}
		if g.json {
			return g.printJSON(r)
		}
		fmt.Fprint(g.stdout, r.Text())
		return nil
	}
}

// progress is where live progress lines go: stderr, unless quiet.
func (g *globals) progress(quiet bool) io.Writer {
	if quiet {
		return nil
	}
	return g.stderr
}

func benchChatCmd(g *globals) *cobra.Command {
	var (
		inv               string
		o                 bench.ChatOptions
		baseline, compare bool
		quiet             bool
	)
	c := &cobra.Command{
		Use:   "chat --invite INVITE [--clients N --rate R --duration D --size B]",
		Short: "Pairs of users sending messages at a fixed total rate",
		Long: `Register --clients users, pair them at random, and send --rate messages a
second in all for --duration, with --size-byte payloads (plain payloads
through the server, not end-to-end encrypted: --e2e is future work).
Recipients acknowledge what they receive in batches, as clients do.

Reported: send → server ack and send → recipient latency (p50, p90, p99,
p99.9, max, from HdrHistogram), the throughput achieved, and errors.

--baseline runs the same scenario against a bare relay on loopback that the
tool starts itself (length-prefixed frames over TCP, no Noise, no store);
--compare runs both and prints Magpie / raw ratios.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			o.Progress = g.progress(quiet)
			var raw, mp *bench.ChatReport
			var in invite.Invite
			var err error
			if !baseline {
				if in, err = parseInvite(inv); err != nil {
					return err
				}
			}
			if baseline || compare {
				if o.Progress != nil {
					fmt.Fprintln(o.Progress, "raw relay baseline:")
				}
				if raw, err = bench.RunRawChat(ctx, o); err != nil {
					return userError(err)
				}
			}
			if !baseline {
				if o.Progress != nil {
					fmt.Fprintln(o.Progress, "magpie:")
				}
				if mp, err = bench.RunChat(ctx, in, o); err != nil {
					return userError(err)
				}
			}
			if g.json {
				out := map[string]any{}
				if mp != nil {
					out["magpie"] = mp
				}
				if raw != nil {
					out["raw"] = raw
				}
				if mp != nil && raw != nil {
					out["ratio"] = ratios(mp, raw)
				}
				return g.printJSON(out)
			}
			for _, r := range []*bench.ChatReport{raw, mp} {
				if r != nil {
					fmt.Fprintln(g.stdout, r.Text())
				}
			}
			if mp != nil && raw != nil {
				q := ratios(mp, raw)
				fmt.Fprintf(g.stdout, "magpie / raw on this box: throughput %.2f×, p99 ack %.1f×, p99 deliver %.1f×\n",
					q.Throughput, q.P99Ack, q.P99Deliver)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&inv, "invite", "", "the server's invite (magpie://…)")
	f.IntVar(&o.Clients, "clients", 100, "users, paired at random")
	f.Float64Var(&o.Rate, "rate", 1000, "messages per second, all clients together")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to send")
	f.IntVar(&o.Size, "size", 1024, "payload bytes (at least 16)")
	f.BoolVar(&o.Uniform, "uniform", false, "evenly spaced sends (default: Poisson arrivals)")
	f.IntVar(&o.Inflight, "inflight", 64, "unacknowledged sends allowed per client")
	f.DurationVar(&o.Drain, "drain", 10*time.Second, "how long to wait for deliveries after the last send")
	f.BoolVar(&baseline, "baseline", false, "run against a bare loopback TCP relay instead (no --invite needed)")
	f.BoolVar(&compare, "compare", false, "run the raw baseline, then Magpie, and print the ratios")
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	g.addJSON(c)
	return c
}

type chatRatios struct {
	Throughput float64 `json:"throughput"`  // magpie acked/s ÷ raw acked/s
	P99Ack     float64 `json:"p99_ack"`     // magpie ÷ raw
	P99Deliver float64 `json:"p99_deliver"` // magpie ÷ raw
}

func ratios(mp, raw *bench.ChatReport) chatRatios {
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	return chatRatios{
		Throughput: div(mp.AckedPerS, raw.AckedPerS),
		P99Ack:     div(float64(mp.Ack.P99), float64(raw.Ack.P99)),
		P99Deliver: div(float64(mp.Deliver.P99), float64(raw.Deliver.P99)),
	}
}

func benchHandshakeCmd(g *globals) *cobra.Command {
	var (
		inv   string
		o     bench.HandshakeOptions
		quiet bool
	)
	c := &cobra.Command{
		Use:   "handshake --invite INVITE [--connections N --concurrency C]",
		Short: "A connect storm: full handshakes per second and their latency",
		Long: `Open --connections connections, --concurrency at a time, each with a
fresh device key: TCP connect, Noise IK handshake and hello, then close.
Reports handshakes per second and their latency.`,
		Args: cobra.NoArgs,
		RunE: scenarioRunE(g, &inv, &quiet, func(ctx context.Context, in invite.Invite, progress io.Writer) (*bench.HandshakeReport, error) {
			o.Progress = progress
			return bench.RunHandshake(ctx, in, o)
		}),
	}
	f := c.Flags()
	f.StringVar(&inv, "invite", "", "the server's invite (magpie://…)")
	f.IntVar(&o.Connections, "connections", 1000, "handshakes in all")
	f.IntVar(&o.Concurrency, "concurrency", 64, "handshakes at once")
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	g.addJSON(c)
	return c
}

func benchHoldCmd(g *globals) *cobra.Command {
	var (
		inv   string
		o     bench.HoldOptions
		quiet bool
	)
	c := &cobra.Command{
		Use:   "hold --invite INVITE --admin ADDR [--connections N --hold D]",
		Short: "Many idle connections: the server's memory and CPU per connection",
		Long: `Register --connections users and keep one connection each open and idle
(the client's keepalives only) for --hold. The server's resident memory
(process_resident_memory_bytes) and CPU time (process_cpu_seconds_total)
are read from its admin listener's /metrics (magpie serve --admin, default
127.0.0.1:9465) before connecting, after connecting, and after the hold.

Up to about 15,000 connections per process (open-files limit 20,000);
worker processes for more are future work.`,
		Args: cobra.NoArgs,
		RunE: scenarioRunE(g, &inv, &quiet, func(ctx context.Context, in invite.Invite, progress io.Writer) (*bench.HoldReport, error) {
			o.Progress = progress
			return bench.RunHold(ctx, in, o)
		}),
	}
	f := c.Flags()
	f.StringVar(&inv, "invite", "", "the server's invite (magpie://…)")
	f.StringVar(&o.Admin, "admin", "127.0.0.1:9465", "the server's admin listener (host:port), for /metrics")
	f.IntVar(&o.Connections, "connections", 1000, "idle connections to hold")
	f.DurationVar(&o.Hold, "hold", time.Minute, "how long to hold them, quiet")
	f.DurationVar(&o.Settle, "settle", 2*time.Second, "pause after connecting before reading memory")
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	g.addJSON(c)
	return c
}
