package cli

import (
	"context"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/magpie-im/magpie/internal/bench"
	"github.com/magpie-im/magpie/invite"
)

// benchGroupCmd is magpie bench group: group messages fanned out by the
// server.
func benchGroupCmd(g *globals) *cobra.Command {
	var (
		inv   string
		o     bench.GroupOptions
		quiet bool
	)
	c := &cobra.Command{
		Use:   "group --invite INVITE [--groups G --members M --rate R --duration D --admin ADDR --store FILE]",
		Short: "Group messages: one upload fanned out to every member device",
		Long: `Register --groups × --members users, each with one device and real
end-to-end keys, and create --groups groups of --members (the first member
of each makes the group's signed Create, naming the others with their
identity keys). --senders members of each group then send --rate group
messages a second in all for --duration, each encrypted once with the
sender's Sender Key chain (timed on its own) and uploaded once with a
GroupSend, which the server stores once and queues for every other member's
device. Members acknowledge in batches as clients do; the senders get, and
acknowledge, a receipt per copy.

Reported: the offered and acknowledged rates, copies delivered per second,
send → ack, send → each member and send → the last member latency (p50 to
max, from each message's intended send time), the sender's encryption time
per message and the bytes it uploads, and copies missing or delivered twice.
--verify members of each group (its last ones; -1 for all) decrypt and check
every copy they get; the others time and count each copy by its message id,
because on a real group every member decrypts on its own device, not on the
load tool's cores.

--admin (the server's admin listener) adds the server's CPU time per
delivered copy, from the first send until the copies and their receipts
are in. --store (the server's SQLite file, DATA/magpie.db, on this machine)
adds the bytes stored per message: after the timed part every member stops
acknowledging, --store-messages messages are sent, and the bytes in use in
the file (SQLite's dbstat, read-only beside the server) are compared before
and after; then the members acknowledge again.`,
		Example: `  magpie bench group --invite "$INVITE" --groups 1 --members 1024 --rate 2 --duration 30s --admin 127.0.0.1:9465
  magpie bench group --invite "$INVITE" --groups 100 --members 50 --rate 1000 --duration 20s --admin 127.0.0.1:9465 --store /var/lib/magpie/magpie.db`,
		Args: cobra.NoArgs,
		RunE: scenarioRunE(g, &inv, &quiet, func(ctx context.Context, in invite.Invite, progress io.Writer) (*bench.GroupReport, error) {
			o.Progress = progress
			o.NoVerify = o.Verify == 0 // the library takes 0 as its default, 1
			return bench.RunGroup(ctx, in, o)
		}),
	}
	f := c.Flags()
	f.StringVar(&inv, "invite", "", "the server's invite (magpie://…)")
	f.IntVar(&o.Groups, "groups", 1, "groups")
	f.IntVar(&o.Members, "members", 1024, "members of each group, its creator included (2 to 1,024)")
	f.IntVar(&o.Senders, "senders", 0, "members of each group that send (default: 8, or all if fewer)")
	f.Float64Var(&o.Rate, "rate", 2, "group messages per second, all groups together")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to send")
	f.IntVar(&o.Size, "size", 1024, "message bytes before encryption (at least 16)")
	f.IntVar(&o.Verify, "verify", 1, "members of each group that decrypt every copy they get (0: none, -1: all)")
	f.IntVar(&o.Inflight, "inflight", 64, "unacknowledged sends allowed per sender")
	f.DurationVar(&o.Drain, "drain", 10*time.Second, "how long to wait for copies and receipts after the last send")
	f.StringVar(&o.Admin, "admin", "", "the server's admin listener (host:port): report its CPU time per delivered copy")
	f.StringVar(&o.Store, "store", "", "the server's SQLite file (DATA/magpie.db) of a server run with --store sqlite: report the bytes stored per message")
	f.IntVar(&o.StoreMessages, "store-messages", 200, "messages held undelivered for the storage measurement")
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	g.addJSON(c)
	return c
}
