package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/magpie-im/magpie/internal/bench"
	"github.com/magpie-im/magpie/invite"
)

// benchCmd is magpie bench, the load tool (package bench).
func benchCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "bench",
		Short: "Load-test a server: chat, handshake, hold, drain, crash, group and abuse scenarios",
		Example: `  magpie bench chat --invite "$(magpie invite --data /var/lib/magpie)" --clients 100 --rate 2000 --compare
  magpie bench handshake --invite "$INVITE" --connections 2000 --concurrency 32
  magpie bench hold --invite "$INVITE" --connections 1000 --admin 127.0.0.1:9465
  magpie bench drain --invite "$INVITE" --messages 5000   # 100,000 needs serve --queue-limit above it
  magpie bench crash --clients 100 --rate 1000 --duration 30s`,
		Long: `Load-test a Magpie server, reached through its invite (crash runs its own).

  magpie bench chat      users in pairs sending at a fixed rate (open loop)
  magpie bench handshake a connect storm: full handshakes per second
  magpie bench hold      many idle connections: server memory and CPU each
  magpie bench drain     a device with a large offline queue reconnects:
                         messages per second until empty
  magpie bench crash     chat while the tool kills its own server with
                         SIGKILL and restarts it: nothing acknowledged lost
  magpie bench curve     chat once per number of clients or message size,
                         plotted as SVG
  magpie bench ceiling   the highest chat rate the server sustains, and
                         with --baseline the raw relay's and their ratio
  magpie bench group     groups: one upload fanned out to every member,
                         latency to the last member, CPU and bytes per copy
  magpie bench abuse     honest clients while attackers hold half-open,
                         slowloris and idle connections

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
20,000); hold spreads larger runs over worker processes (--workers).
chat --plot and the --json reports carry a per-second timeline.`,
	}
	c.AddCommand(benchHoldWorkerCmd(g), benchChatCmd(g), benchHandshakeCmd(g), benchHoldCmd(g), benchDrainCmd(g), benchCrashCmd(g), benchCurveCmd(g), benchCeilingCmd(g), benchGroupCmd(g), benchAbuseCmd(g))
	return c
}

// transportFlag is --transport, for the scenarios that dial one transport
// of the invite's.
func transportFlag(c *cobra.Command, t *string) {
	c.Flags().StringVar(t, "transport", "", "dial only this transport's endpoints: tcp, obfs or tls (default: the invite's endpoints in order); for tls against a loopback server, see docs/BENCHMARKS.md on sign-ups")
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
			return err
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
		plot              string
	)
	c := &cobra.Command{
		Use:   "chat --invite INVITE [--clients N --rate R --duration D --size B --e2e]",
		Short: "Pairs of users sending messages at a fixed total rate",
		Long: `Register --clients users, pair them at random, and send --rate messages a
second in all for --duration, with --size-byte payloads. By default the
payloads go through the server in the clear; with --e2e every user is a real
end-to-end device (keys uploaded, a PQXDH session with its peer set up
before the timed part) and every message is Double-Ratchet encrypted by the
sender and decrypted by the recipient, as the client SDK does, with the
state in memory. Recipients acknowledge what they receive in batches, as
clients do.

Reported: send → server ack and send → recipient latency (p50, p90, p99,
p99.9, max, from HdrHistogram), the throughput achieved, and errors.

--baseline runs the same scenario against a bare relay on loopback that the
tool starts itself (length-prefixed frames over TCP, no Noise, no store);
--compare runs both and prints Magpie / raw ratios (the relay never
encrypts: with --e2e the ratios include the cost of encryption).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if baseline && o.E2E {
				return errors.New("--e2e needs a Magpie server: it cannot be used with --baseline")
			}
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
					return err
				}
			}
			if !baseline {
				if o.Progress != nil {
					fmt.Fprintln(o.Progress, "magpie:")
				}
				if mp, err = bench.RunChat(ctx, in, o); err != nil {
					return err
				}
			}
			if plot != "" {
				r := mp
				if r == nil {
					r = raw
				}
				if err := writePlot(plot, r.Plot); err != nil {
					return err
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
	transportFlag(c, &o.Transport)
	f.Float64Var(&o.Rate, "rate", 1000, "messages per second, all clients together")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to send")
	f.IntVar(&o.Size, "size", 1024, "payload bytes (at least 16)")
	f.BoolVar(&o.Uniform, "uniform", false, "evenly spaced sends (default: Poisson arrivals)")
	f.IntVar(&o.Inflight, "inflight", 64, "unacknowledged sends allowed per client")
	f.DurationVar(&o.Drain, "drain", 10*time.Second, "how long to wait for deliveries after the last send")
	f.BoolVar(&baseline, "baseline", false, "run against a bare loopback TCP relay instead (no --invite needed)")
	f.BoolVar(&compare, "compare", false, "run the raw baseline, then Magpie, and print the ratios")
	f.BoolVar(&o.E2E, "e2e", false, "end-to-end encrypt every message (real keys, sessions and Double Ratchet)")
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	f.StringVar(&plot, "plot", "", "write throughput and latency over time to this SVG file")
	f.StringVar(&o.Admin, "admin", "", "the server's admin listener (host:port; a cluster's nodes comma-separated): report its CPU time per message")
	g.addJSON(c)
	return c
}

// writePlot writes an SVG chart to path, whole or not at all.
func writePlot(path string, draw func(io.Writer) error) error {
	var b bytes.Buffer
	if err := draw(&b); err != nil {
		return fmt.Errorf("drawing the plot: %w", err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing the plot: %w", err)
	}
	return nil
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
	transportFlag(c, &o.Transport)
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
		Long: `Register --connections users, disconnect them, then connect them again, one
connection each, and keep them open and idle (the client's keepalives
only) for --hold. The server's resident memory
(process_resident_memory_bytes), Go heap and stacks, and CPU time
(process_cpu_seconds_total) are read from its admin listener's /metrics
(magpie serve --admin, default 127.0.0.1:9465): the baseline after the
sign-ups have disconnected, then after connecting, after the hold, and
after a forced collection (if the admin listener serves /debug/pprof).

For a baseline untouched by sign-ups, register once with --keys FILE,
restart the server, and run again with the same --keys: the users are
reused and nothing is registered.

Past about 15,000 connections (the open-files limit is 20,000 per
process) the connections are spread over worker processes, each a copy of
this command (--workers sets how many).`,
		Args: cobra.NoArgs,
		RunE: scenarioRunE(g, &inv, &quiet, func(ctx context.Context, in invite.Invite, progress io.Writer) (*bench.HoldReport, error) {
			o.Progress = progress
			exe, err := os.Executable()
			if err != nil {
				return nil, err
			}
			o.WorkerArgv = []string{exe, "bench", "hold-worker"}
			return bench.RunHold(ctx, in, o)
		}),
	}
	f := c.Flags()
	f.StringVar(&inv, "invite", "", "the server's invite (magpie://…)")
	f.StringVar(&o.Admin, "admin", "127.0.0.1:9465", "the server's admin listener (host:port), for /metrics")
	f.IntVar(&o.Connections, "connections", 1000, "idle connections to hold")
	f.DurationVar(&o.Hold, "hold", time.Minute, "how long to hold them, quiet")
	f.DurationVar(&o.Settle, "settle", 2*time.Second, "pause after connecting before reading memory")
	f.StringVar(&o.Keys, "keys", "", "file of users' device keys: reused if it exists (no sign-ups), else written")
	f.DurationVar(&o.Keepalive, "keepalive", 0, "client ping interval (default: the client's own, 2m)")
	transportFlag(c, &o.Transport)
	f.IntVar(&o.Workers, "workers", 0, fmt.Sprintf("worker processes holding the connections (default: one per %d)", bench.PerProcess))
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	g.addJSON(c)
	return c
}

// benchHoldWorkerCmd is one worker process of bench hold (hidden: bench
// hold starts it; see bench.RunHoldWorker for its protocol).
func benchHoldWorkerCmd(g *globals) *cobra.Command {
	var (
		inv string
		o   bench.HoldWorkerOptions
	)
	c := &cobra.Command{
		Use:    "hold-worker",
		Short:  "One worker process of bench hold (started by it)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, err := parseInvite(inv)
			if err != nil {
				return err
			}
			return bench.RunHoldWorker(cmd.Context(), in, o, cmd.InOrStdin(), g.stdout)
		},
	}
	f := c.Flags()
	f.StringVar(&inv, "invite", "", "the server's invite")
	f.StringVar(&o.Keys, "keys", "", "the keys file")
	f.IntVar(&o.From, "from", 0, "first key of this worker")
	f.IntVar(&o.Count, "count", 0, "keys of this worker")
	f.IntVar(&o.SetupConcurrency, "setup-concurrency", 16, "connections set up at once")
	f.DurationVar(&o.Keepalive, "keepalive", 0, "client ping interval (0: the client's default)")
	transportFlag(c, &o.Transport)
	return c
}

func benchCurveCmd(g *globals) *cobra.Command {
	var (
		inv, plot, values, title string
		o                        bench.CurveOptions
		quiet                    bool
	)
	c := &cobra.Command{
		Use:   "curve clients|size --invite INVITE --values V1,V2,… [chat flags] [--plot FILE]",
		Short: "Run chat once per number of clients or message size, and plot the curve",
		Example: `  magpie bench curve clients --invite "$INVITE" --values 100,1000,10000 --rate 5000 --plot docs/curve-clients.svg
  magpie bench curve size --invite "$INVITE" --values 256,1024,16384,65536 --clients 100 --rate 2000 --plot docs/curve-size.svg`,
		Long: `Run the chat scenario once for each value of --values, as the number of
clients or as the message size, and report throughput and p99 latency for
each; --plot draws them against that axis (logarithmic) as SVG, and
--baseline adds each point's raw relay run.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := parseInvite(inv)
			if err != nil {
				return err
			}
			o.Axis = args[0]
			for _, v := range strings.Split(values, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(v))
				if err != nil || n <= 0 {
					return fmt.Errorf("--values: %q is not a positive whole number", v)
				}
				o.Values = append(o.Values, n)
			}
			o.Chat.Progress = g.progress(quiet)
			r, err := bench.RunCurve(cmd.Context(), in, o)
			if err != nil {
				return err
			}
			if plot != "" {
				if title == "" {
					title = "Magpie: throughput and latency against " + map[string]string{"clients": "connected clients", "size": "message size"}[o.Axis]
				}
				if err := writePlot(plot, func(w io.Writer) error { return r.Plot(w, title) }); err != nil {
					return err
				}
			}
			if g.json {
				return g.printJSON(r)
			}
			fmt.Fprint(g.stdout, r.Text())
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&inv, "invite", "", "the server's invite (magpie://…)")
	f.StringVar(&values, "values", "", "comma-separated values of the axis")
	f.IntVar(&o.Chat.Clients, "clients", 100, "users (when the axis is size)")
	f.Float64Var(&o.Chat.Rate, "rate", 1000, "messages per second, all clients together")
	f.DurationVar(&o.Chat.Duration, "duration", 10*time.Second, "how long each run sends")
	f.IntVar(&o.Chat.Size, "size", 1024, "payload bytes (when the axis is clients)")
	f.IntVar(&o.Chat.Inflight, "inflight", 64, "unacknowledged sends allowed per client")
	f.DurationVar(&o.Chat.Drain, "drain", 10*time.Second, "how long to wait for deliveries after each run's last send")
	f.StringVar(&o.Chat.Admin, "admin", "", "the server's admin listener (a cluster's nodes comma-separated): report its CPU time per message")
	f.BoolVar(&o.Baseline, "baseline", false, "also run each point against a bare loopback TCP relay")
	f.StringVar(&plot, "plot", "", "write the curve to this SVG file")
	f.StringVar(&title, "title", "", "the plot's title")
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	g.addJSON(c)
	return c
}

func benchCeilingCmd(g *globals) *cobra.Command {
	var (
		inv   string
		o     bench.CeilingOptions
		quiet bool
	)
	c := &cobra.Command{
		Use:     "ceiling --invite INVITE [--clients N --duration D --p99 L] [--baseline]",
		Short:   "Find the highest chat rate the server sustains (and the raw relay's)",
		Example: `  magpie bench ceiling --invite "$INVITE" --clients 2000 --duration 15s --baseline --admin 127.0.0.1:9465`,
		Long: `Run the chat scenario at rising rates, doubling from --start until a run
does not sustain its rate, then halving the gap between the highest rate
sustained and the lowest not, --steps times. A run sustains its rate when
every message is acknowledged and delivered, nothing fails, and the p99
send → ack latency stays within --p99: past what a server does, open-loop
latency grows without bound. A rate gets up to --tries runs, so that one
hiccup near the limit does not end the search.

--baseline searches the bare loopback relay's ceiling first, with the same
clients and payloads, and reports Magpie's ceiling as a fraction of it: the
throughput ratio that means something (at a rate both keep up with it is
1.0 by construction).`,
		Args: cobra.NoArgs,
		RunE: scenarioRunE(g, &inv, &quiet, func(ctx context.Context, in invite.Invite, progress io.Writer) (*bench.CeilingReport, error) {
			o.Chat.Progress = progress
			return bench.RunCeiling(ctx, in, o)
		}),
	}
	f := c.Flags()
	f.StringVar(&inv, "invite", "", "the server's invite (magpie://…)")
	f.IntVar(&o.Chat.Clients, "clients", 100, "users, paired at random")
	f.DurationVar(&o.Chat.Duration, "duration", 10*time.Second, "how long each trial sends")
	f.IntVar(&o.Chat.Size, "size", 1024, "payload bytes")
	f.IntVar(&o.Chat.Inflight, "inflight", 64, "unacknowledged sends allowed per client")
	f.DurationVar(&o.Chat.Drain, "drain", 10*time.Second, "how long to wait for deliveries after each trial's last send")
	f.StringVar(&o.Chat.Admin, "admin", "", "the server's admin listener (a cluster's nodes comma-separated): report its CPU time per message")
	f.Float64Var(&o.Start, "start", 1000, "the first rate tried (messages per second)")
	f.Float64Var(&o.Limit, "limit", 1_000_000, "the highest rate tried")
	f.DurationVar(&o.MaxP99, "p99", 100*time.Millisecond, "the p99 send → ack latency a sustained rate stays within")
	f.IntVar(&o.Steps, "steps", 4, "halvings of the gap after the first rate not sustained")
	f.IntVar(&o.Tries, "tries", 2, "runs a rate gets before it counts as not sustained")
	f.BoolVar(&o.Baseline, "baseline", false, "search the raw relay's ceiling too, and print the ratio")
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	g.addJSON(c)
	return c
}
