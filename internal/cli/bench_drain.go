package cli

import (
	"context"
	"io"

	"github.com/spf13/cobra"

	"github.com/magpie-im/magpie/internal/bench"
	"github.com/magpie-im/magpie/invite"
)

// benchDrainCmd is magpie bench drain: a device with a large offline queue
// reconnects.
func benchDrainCmd(g *globals) *cobra.Command {
	var (
		inv   string
		o     bench.DrainOptions
		quiet bool
	)
	c := &cobra.Command{
		Use:   "drain --invite INVITE [--messages N --size B --senders S --admin ADDR]",
		Short: "A device with a large offline queue reconnects: messages per second until empty",
		Long: `Register a recipient and --senders senders. The recipient disconnects;
the senders queue --messages messages of --size bytes for it (pipelined,
each acknowledged by the server, so durably stored) and disconnect too.
Then the recipient reconnects as the same device and receives, acknowledging
in batches as clients do, until the server says its queue has been pushed.

Reported: the enqueue rate, the time to the first message, and the drain
rate in messages and bytes per second, timed from the start of the
reconnection (dial and handshake included) to the last message; messages
missing or delivered twice. Afterwards the senders reconnect and acknowledge
their delivery receipts (untimed), which leaves the server's queues as they
were.

The server must keep the whole queue: start it with a --queue-limit above
--messages (its default is 10,000 per device).

With --admin (the server's admin listener, magpie serve --admin), the tool
also checks that the server's queue depth (magpie_queue_depth) grew by the
number of messages queued, and reports the server's CPU time per drained
message (process_cpu_seconds_total).`,
		Example: `  magpie serve --data /tmp/drain --queue-limit 200000 &
  magpie bench drain --invite "$(magpie invite --data /tmp/drain)" --messages 100000 --admin 127.0.0.1:9465
  magpie bench drain --invite "$INVITE" --messages 5000 --size 256 --json --quiet`,
		Args: cobra.NoArgs,
		RunE: scenarioRunE(g, &inv, &quiet, func(ctx context.Context, in invite.Invite, progress io.Writer) (*bench.DrainReport, error) {
			o.Progress = progress
			return bench.RunDrain(ctx, in, o)
		}),
	}
	f := c.Flags()
	f.StringVar(&inv, "invite", "", "the server's invite (magpie://…)")
	f.IntVar(&o.Messages, "messages", 100_000, "messages to queue for the offline device")
	f.IntVar(&o.Size, "size", 1024, "payload bytes (at least 16)")
	f.IntVar(&o.Senders, "senders", 32, "sending connections (each may make 1,000 requests a second by default)")
	f.StringVar(&o.Admin, "admin", "", "the server's admin listener (host:port), to confirm the queue depth from /metrics (optional)")
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	g.addJSON(c)
	return c
}
