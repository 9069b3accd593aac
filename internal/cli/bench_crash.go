package cli

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/magpie-im/magpie/internal/bench"
)

// benchCrashCmd is magpie bench crash: chat while the tool kills the server
// with SIGKILL and restarts it, then checks that nothing acknowledged was
// lost.
func benchCrashCmd(g *globals) *cobra.Command {
	var (
		o                               bench.CrashOptions
		data, listen, server, serverLog string
		quiet                           bool
	)
	c := &cobra.Command{
		Use:   "crash [--clients N --rate R --duration D --kills K]",
		Short: "Chat while the server is killed with SIGKILL and restarted: nothing acknowledged may be lost",
		Long: `Run a server, chat through it, and kill it with SIGKILL --kills times (spread
evenly over --duration, or every --kill-every), restarting it each time.
The tool runs the server itself, because it has to kill it: --server (this
magpie binary by default) serve --data DIR --listen ADDR, with the admin
listener off. The data directory keeps the server's key, so the invite
stays valid from one start to the next.

--clients users are registered and paired at random, and send --rate
messages a second in all (open loop, as in bench chat). After a kill each
client reconnects with backoff as the same device (its key) and resends
every message the server had not acknowledged, with the same message id:
the server stores it once. Recipients record every delivery by message id
and acknowledge it.

After the sends the tool waits (up to --drain) for the resends to be
acknowledged and for every acknowledged message to arrive, then reports:

  acked-and-lost  acknowledged by the server, never delivered: must be 0
  redelivered     delivered again (at-least-once after a crash is allowed)
  reordered       delivered after a message its sender sent later
  per kill        messages unacknowledged at the kill, time until the
                  server was back, time until its first acknowledgement

and the send → ack and send → deliver latencies, from each message's
intended send time, across kills and resends. The command fails (exit
status 1) if any acknowledged message was lost.

A client has up to --inflight sends under way at once, and these can
overtake each other on their way to the server, as can resends after a
kill and the sends that follow them; --inflight 1 sends each client's
messages strictly one after the other, so that any reordering left is the
server's.`,
		Example: `  magpie bench crash
  magpie bench crash --clients 100 --rate 1000 --duration 30s --kills 5
  magpie bench crash --kill-every 2s --duration 20s --json --quiet
  magpie bench crash --data /tmp/crashdb --listen 127.0.0.1:7600 --server-log /tmp/serve.log`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Interrupted, the tool still stops its server and removes its
			// temporary data directory.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if server == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("finding the magpie binary to run as the server (give --server): %w", err)
				}
				server = exe
			}
			if data == "" {
				dir, err := os.MkdirTemp("", "magpie-bench-crash-")
				if err != nil {
					return fmt.Errorf("temporary data directory: %w", err)
				}
				defer os.RemoveAll(dir)
				data = dir
			}
			if listen == "" {
				addr, err := freeLoopbackAddr()
				if err != nil {
					return err
				}
				listen = addr
			}
			if cmd.Flags().Changed("kill-every") && !cmd.Flags().Changed("kills") {
				o.Kills = 0 // as many as fit in --duration
			}
			if serverLog != "" {
				f, err := os.OpenFile(serverLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
				if err != nil {
					return fmt.Errorf("--server-log: %w", err)
				}
				defer f.Close()
				o.ServerLog = f
			}
			o.Server = []string{server, "serve", "--data", data, "--listen", listen, "--admin", "", "--log-level", g.logLevel}
			o.Progress = g.progress(quiet)
			o.Logger = g.logger()
			r, err := bench.RunCrash(ctx, o)
			if r != nil {
				if g.json {
					if perr := g.printJSON(r); perr != nil && err == nil {
						err = perr
					}
				} else {
					fmt.Fprint(g.stdout, r.Text())
				}
			}
			return err
		},
	}
	f := c.Flags()
	f.IntVar(&o.Clients, "clients", 100, "users, paired at random")
	f.Float64Var(&o.Rate, "rate", 1000, "messages per second, all clients together")
	f.DurationVar(&o.Duration, "duration", 30*time.Second, "how long to send")
	f.IntVar(&o.Size, "size", 1024, "payload bytes (at least 16)")
	f.BoolVar(&o.Uniform, "uniform", false, "evenly spaced sends (default: Poisson arrivals)")
	f.IntVar(&o.Inflight, "inflight", 64, "unacknowledged messages allowed per client")
	f.IntVar(&o.Kills, "kills", 5, "SIGKILLs, spread evenly over --duration")
	f.DurationVar(&o.KillEvery, "kill-every", 0, "kill this often instead (at most --kills times, if given)")
	f.DurationVar(&o.Drain, "drain", 30*time.Second, "how long to wait after the last send for acknowledgements and deliveries")
	f.StringVar(&data, "data", "", "the server's data directory (default: a temporary one, removed afterwards)")
	f.StringVar(&listen, "listen", "", "the server's fixed listen address (default: a free port on 127.0.0.1); keep it on loopback, where the tool can register its users")
	f.StringVar(&server, "server", "", "the magpie binary to run as the server (default: this one)")
	f.StringVar(&serverLog, "server-log", "", "append the server's log (stderr, every start) to this file")
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	g.addJSON(c)
	return c
}

// freeLoopbackAddr returns a loopback address whose port was free a moment
// ago: the server gets it for all its starts.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port for the server (give --listen): %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
