package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/bytesize"
	"github.com/magpie-im/magpie/internal/engine"
)

// decodeEvent decodes an event's data if it has the given name.
func decodeEvent[T any](ev engine.Event, name string) (T, bool) {
	var v T
	if ev.Name != name {
		return v, false
	}
	return v, json.Unmarshal(ev.Data, &v) == nil
}

// summary is a message's text, or a description of its attachment.
func summary(m *engine.Message) string {
	if a := m.Attachment; a != nil {
		s := fmt.Sprintf("[%s %s, %s]", a.Kind, a.Name, bytesize.Format(a.Size))
		if m.Text != "" {
			s += " " + m.Text
		}
		return s
	}
	if m.State == string(client.StateUnreadable) && m.ErrorCode == client.ErrCodeDamaged {
		return "(a message whose stored copy on this client is damaged)"
	}
	if m.State == string(client.StateUnreadable) {
		return "(a message this client could not decrypt or read)"
	}
	return m.Text
}

// snippet is the start of a message's summary, for receipts.
func snippet(m *engine.Message) string {
	s := summary(m)
	if r := []rune(s); len(r) > 40 {
		s = string(r[:39]) + "…"
	}
	return fmt.Sprintf("%q", s)
}

// printMessage shows one message of the history. label, when not "",
// names the group a group's message is in (where several conversations
// are shown together).
func (g *globals) printMessage(m *engine.Message, label string) error {
	if g.json {
		return g.printJSON(m)
	}
	ts := m.ComposedAt.Local().Format(time.DateTime)
	where := ""
	if label != "" {
		where = "[" + label + "] "
	}
	switch {
	case isGroupPeer(m.Peer) && m.Notice:
		fmt.Fprintf(g.stdout, "%s  %s* %s\n", ts, where, m.Text)
	case isGroupPeer(m.Peer) && m.Outgoing:
		fmt.Fprintf(g.stdout, "%s  %s%s: %s  [%s]\n", ts, where, m.Sender, summary(m), groupState(m))
	case isGroupPeer(m.Peer):
		fmt.Fprintf(g.stdout, "%s  %s%s: %s\n", ts, where, m.Sender, summary(m))
	case m.Outgoing:
		fmt.Fprintf(g.stdout, "%s  -> %s: %s  [%s]\n", ts, m.Peer, summary(m), m.State)
	default:
		fmt.Fprintf(g.stdout, "%s  %s: %s\n", ts, m.Peer, summary(m))
	}
	if a := m.Attachment; a != nil && !m.Outgoing {
		switch client.TransferState(a.State) {
		case client.TransferSaved:
			fmt.Fprintf(g.stdout, "      saved to %s\n", a.Path)
		case client.TransferFailed:
			fmt.Fprintf(g.stdout, "      could not be saved: %s\n", a.Error)
		default:
			fmt.Fprintf(g.stdout, "      downloading (%s)\n", a.State)
		}
	}
	return nil
}

// groupState is where a message this account sent to a group stands: its
// state, and how many of the members have it and have read it.
func groupState(m *engine.Message) string {
	switch client.MessageState(m.State) {
	case client.StateSent, client.StateDelivered, client.StateRead:
		if m.Recipients > 0 {
			return fmt.Sprintf("%s: %d of %d have it, %d read", m.State, len(m.DeliveredTo), m.Recipients, len(m.ReadBy))
		}
	}
	return m.State
}

func inboxCmd(g *globals) *cobra.Command {
	var downloads string
	c := &cobra.Command{
		Use:   "inbox",
		Short: "Fetch and show new messages, then exit",
		Long: `Bring this client up to date, show the messages you have not read yet,
and mark them read: connect (or use the running engine), send the outbox,
receive everything waiting on the server, and finish downloading the
attachments that came with it (verified and decrypted into --downloads,
default downloads/ in the client's home; an interrupted download resumes
the next time Magpie runs). A message is acknowledged to the server only
once it is stored here, and an attachment once its download is recorded,
so nothing is lost to a crash, a full disk or Ctrl-C.`,
		Example: `  magpie inbox
  magpie inbox --json | jq .text
  magpie inbox --downloads ~/Downloads`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			s, err := g.session(ctx, downloads)
			if err != nil {
				return err
			}
			defer s.Close()
			pctx, stop := context.WithCancel(ctx)
			b := newBars(g.stderr)
			if evs, err := s.Events(pctx); err == nil {
				go func() {
					for ev := range evs {
						if p, ok := decodeEvent[engine.Progress](ev, "progress"); ok && p.Phase == "download" {
							b.set(p.Seq, "download", p.Done, p.Total)
						}
					}
				}()
			}
			_, syncErr := s.Sync(ctx)
			stop()
			convs, err := s.Conversations(ctx)
			if err != nil {
				return err
			}
			n := 0
			for _, cv := range convs {
				if cv.Unread == 0 {
					continue
				}
				msgs, _, err := s.History(ctx, cv.Peer, 0, max(cv.Unread, 1)+50, "")
				if err != nil {
					return err
				}
				label := ""
				if cv.Group != nil {
					label = cv.Name
				}
				for i := range msgs {
					if msgs[i].Unread {
						b.done(msgs[i].Seq)
						if err := g.printMessage(&msgs[i], label); err != nil {
							return err
						}
						n++
					}
				}
				g.markRead(ctx, s, cv.Peer)
			}
			if syncErr != nil {
				return fmt.Errorf("could not bring this client up to date: %w", syncErr)
			}
			if !g.json && n == 0 {
				fmt.Fprintln(g.stdout, "No new messages.")
			}
			return nil
		},
	}
	c.Flags().StringVar(&downloads, "downloads", "", "where to save attachments, if this command runs the engine (default: downloads/ in the client's home)")
	g.addJSON(c)
	return c
}

// markRead marks what was shown as read. Failing to is not the command's
// failure (it showed what was asked): it is said on stderr.
func (g *globals) markRead(ctx context.Context, s *engine.Session, peer string) {
	if err := s.MarkRead(ctx, peer); err != nil {
		fmt.Fprintf(g.stderr, "magpie: could not mark the messages from %s read: %v\n", peer, err)
	}
}

func historyCmd(g *globals) *cobra.Command {
	var limit int
	var before uint64
	var search string
	c := &cobra.Command{
		Use:   "history [NAME]",
		Short: "Show your conversations, or the messages with NAME",
		Long: `Without NAME: the conversations, most recent first, with how many
messages are unread. With NAME: the last messages with NAME, oldest first,
each with its state (queued, sent, delivered, read, failed); showing them
marks them read.

NAME is a user or a group (its name, its id, or group:ID). In a group,
each message says who wrote it ("bob: hi"), the group's changes are lines
that start with "*", and your own messages say how many members have them
and have read them.`,
		Example: "  magpie history\n  magpie history bob --limit 20\n  magpie history bob --search harbour\n  magpie history bob --before 120   # older than message 120\n  magpie history Harbour",
		Args:    cobra.MaximumNArgs(1),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			ctx := cmd.Context()
			if len(args) == 0 {
				convs, err := s.Conversations(ctx)
				if err != nil {
					return err
				}
				for _, cv := range convs {
					if g.json {
						if err := g.printJSON(cv); err != nil {
							return err
						}
						continue
					}
					last := ""
					if cv.Last != nil {
						last = cv.Last.ComposedAt.Local().Format(time.DateTime) + "  " + snippet(cv.Last)
					}
					unread := ""
					if cv.Unread > 0 {
						unread = fmt.Sprintf(" (%d unread)", cv.Unread)
					}
					name := cv.Peer
					if cv.Group != nil {
						name = cv.Name + " (group)"
					}
					fmt.Fprintf(g.stdout, "%-12s%s  %s\n", name, unread, last)
				}
				return nil
			}
			peer, _, err := resolvePeer(ctx, s, args[0])
			if err != nil {
				return err
			}
			msgs, more, err := s.History(ctx, peer, before, limit, search)
			if err != nil {
				return withPeer(err, args[0])
			}
			if !g.json && more && len(msgs) > 0 {
				fmt.Fprintf(g.stdout, "(older: %s)\n", g.magpie(fmt.Sprintf("history %s --before %d", shellQuote(args[0]), msgs[0].Seq)))
			}
			damaged := 0
			for i := range msgs {
				if msgs[i].ErrorCode == client.ErrCodeDamaged {
					damaged++
				}
				if err := g.printMessage(&msgs[i], ""); err != nil {
					return err
				}
			}
			if damaged > 0 {
				fmt.Fprintf(g.stderr, "magpie: %d message(s) here could not be read: their stored copy on this client is damaged (the disk, or an edit of %s). The others are shown; a backup of the home has them.\n",
					damaged, client.StoreFileName)
			}
			if search == "" {
				g.markRead(ctx, s, peer)
			}
			return nil
		}),
	}
	c.Flags().IntVar(&limit, "limit", 50, "most recent messages to show")
	c.Flags().Uint64Var(&before, "before", 0, "show messages older than this one (its number)")
	c.Flags().StringVar(&search, "search", "", "show only messages that contain this text")
	g.addJSON(c)
	return c
}

// interactiveKeepalive is how often, on average, a listen or app engine
// pings when it has nothing to send: a client that only receives then
// notices a black-holed path after 3.75 s of silence (2.5 pings) and fails
// over, about as fast as a sender's 3 s stall timeout.
const interactiveKeepalive = 1500 * time.Millisecond

func listenCmd(g *globals) *cobra.Command {
	var downloads string
	var keepalive time.Duration
	c := &cobra.Command{
		Use:   "listen",
		Short: "Stay connected and show messages as they arrive",
		Long: `Stay connected, printing messages, receipts (delivered, read), typing
indicators, groups' changes and the connection's state as they happen. A
group's lines start with its name: "[Harbour] bob: hi". Received attachments
are saved (into --downloads, default downloads/ in the client's home).
While it runs, other commands on the same home use its connection. Stop
with Ctrl-C.`,
		Example: `  magpie listen
  magpie listen --json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return g.follow(ctx, downloads, keepalive, nil)
		},
	}
	c.Flags().StringVar(&downloads, "downloads", "", "where to save attachments, if this command runs the engine (default: downloads/ in the client's home)")
	c.Flags().DurationVar(&keepalive, "keepalive", interactiveKeepalive, "if this command runs the engine: ping the server about this often when idle; a path silent for 2.5 pings is abandoned")
	g.addJSON(c)
	return c
}

// follow connects to the engine (running it here if none runs) and prints
// its events until ctx ends. When the engine it followed stops, it takes
// over. onConnect runs after each connection.
func (g *globals) follow(ctx context.Context, downloads string, keepalive time.Duration, onConnect func(*engine.Session) error) error {
	shown := map[uint64]string{} // what was last said of each message
	first := true
	for {
		s, err := g.sessionKeepalive(ctx, downloads, keepalive)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		evs, err := s.Events(ctx)
		if err == nil && onConnect != nil {
			err = onConnect(s)
		}
		if err != nil {
			s.Close()
			return err
		}
		if first && !g.json {
			st, _ := s.Status(ctx)
			fmt.Fprintf(g.stdout, "Listening as %s (Ctrl-C to stop)\n", st.User)
		}
		first = false
		names := &groupNames{ctx: ctx, s: s.Remote, m: map[string]string{}}
		for ev := range evs {
			g.printEvent(ev, shown, names)
		}
		owned := s.Engine != nil
		s.Close()
		if ctx.Err() != nil {
			return nil
		}
		if owned {
			return errors.New("the engine stopped")
		}
		if !g.json {
			fmt.Fprintln(g.stdout, "The engine this command followed stopped; running it here.")
		}
	}
}

// groupNames names groups for listen's lines, asking the engine once per
// group (and again after the group changed: it may have been renamed).
type groupNames struct {
	ctx context.Context
	s   *engine.Remote
	m   map[string]string // peer → name
}

// label is what to call a conversation: the user, or the group's name.
func (n *groupNames) label(peer string) string {
	if !isGroupPeer(peer) {
		return peer
	}
	if name, ok := n.m[peer]; ok {
		return name
	}
	name := peer
	if grp, err := n.s.Group(n.ctx, peer); err == nil {
		name = grp.Name
	}
	n.m[peer] = name
	return name
}

// who is who a message is from or to, for a receipt's line: the user, or
// the group's name.
func (n *groupNames) who(m *engine.Message) string {
	if isGroupPeer(m.Peer) && !m.Outgoing {
		return m.Sender + " in " + n.label(m.Peer)
	}
	return n.label(m.Peer)
}

// printEvent shows one event as a line (or a JSON object). shown tracks
// what was said of each message (and, at 0, of the connection), so an
// update is printed only when it says something new.
func (g *globals) printEvent(ev engine.Event, shown map[uint64]string, names *groupNames) {
	if g.json {
		var data map[string]any
		if json.Unmarshal(ev.Data, &data) != nil {
			data = map[string]any{}
		}
		data["event"] = ev.Name
		g.printJSON(data)
		return
	}
	switch ev.Name {
	case "state":
		// Say when the connection changes, not every retry: one line
		// when it goes, one when it is back.
		st, ok := decodeEvent[engine.Status](ev, "state")
		if !ok || st.State == string(client.ConnStopped) {
			return
		}
		line := stateLine(st)
		if (st.State == string(client.ConnConnecting) && shown[0] != "") || shown[0] == line {
			return
		}
		shown[0] = line
		fmt.Fprintf(g.stdout, "● %s\n", line)
	case "message":
		m, ok := decodeEvent[engine.Message](ev, "message")
		if !ok {
			return
		}
		shown[m.Seq] = m.State + attState(&m) + receiptCounts(&m)
		if isGroupPeer(m.Peer) {
			ts, where := m.ComposedAt.Local().Format(time.DateTime), names.label(m.Peer)
			if m.Notice {
				fmt.Fprintf(g.stdout, "%s  [%s] * %s\n", ts, where, m.Text)
			} else {
				fmt.Fprintf(g.stdout, "%s  [%s] %s: %s\n", ts, where, m.Sender, summary(&m))
			}
			return
		}
		if m.Outgoing {
			fmt.Fprintf(g.stdout, "%s  (you) -> %s: %s\n", m.ComposedAt.Local().Format(time.DateTime), m.Peer, summary(&m))
			return
		}
		fmt.Fprintf(g.stdout, "%s  %s: %s\n", m.ComposedAt.Local().Format(time.DateTime), m.Peer, summary(&m))
	case "update":
		m, ok := decodeEvent[engine.Message](ev, "update")
		if !ok {
			return
		}
		now := m.State + attState(&m) + receiptCounts(&m)
		if shown[m.Seq] == now {
			return
		}
		shown[m.Seq] = now
		g.printUpdate(&m, names)
	case "typing":
		p, ok := decodeEvent[engine.PeerEvent](ev, "typing")
		if !ok || p.Typing == nil || !*p.Typing {
			return
		}
		if isGroupPeer(p.Peer) {
			fmt.Fprintf(g.stdout, "%s is typing in %s…\n", p.Sender, names.label(p.Peer))
			return
		}
		fmt.Fprintf(g.stdout, "%s is typing…\n", p.Peer)
	case "group":
		// What changed arrives as notices (message events); the name may
		// be new.
		if p, ok := decodeEvent[engine.PeerEvent](ev, "group"); ok {
			delete(names.m, p.Peer)
		}
	case "identity":
		if p, ok := decodeEvent[engine.PeerEvent](ev, "identity"); ok {
			fmt.Fprintf(g.stdout, "! %s's safety number changed (a new phone, or someone in the middle). Compare it: %s\n", p.Peer, g.magpie("verify "+p.Peer))
		}
	}
}

// receiptCounts is, for a message sent to a group, how many members have
// it and have read it: an update that changes them says something new.
func receiptCounts(m *engine.Message) string {
	if m.Recipients == 0 {
		return ""
	}
	return fmt.Sprintf("/%d/%d", len(m.DeliveredTo), len(m.ReadBy))
}

func attState(m *engine.Message) string {
	if m.Attachment == nil {
		return ""
	}
	return "/" + m.Attachment.State
}

// printUpdate says what changed about a message.
func (g *globals) printUpdate(m *engine.Message, names *groupNames) {
	ts := time.Now().Format(time.DateTime)
	if a := m.Attachment; a != nil && !m.Outgoing {
		switch client.TransferState(a.State) {
		case client.TransferSaved:
			fmt.Fprintf(g.stdout, "%s  saved %s from %s to %s\n", ts, a.Name, names.who(m), a.Path)
		case client.TransferFailed:
			fmt.Fprintf(g.stdout, "%s  could not save %s from %s: %s\n", ts, a.Name, names.who(m), a.Error)
		}
		return
	}
	if !m.Outgoing {
		return
	}
	if isGroupPeer(m.Peer) {
		where := names.label(m.Peer)
		switch client.MessageState(m.State) {
		case client.StateSent, client.StateDelivered, client.StateRead:
			fmt.Fprintf(g.stdout, "%s  ✓ [%s] %s: %s\n", ts, where, groupState(m), snippet(m))
		case client.StateFailed:
			fmt.Fprintf(g.stdout, "%s  ✗ not sent to %s: %s: %s\n", ts, where, snippet(m), m.Error)
		case client.StateQueued:
			if m.Error != "" {
				fmt.Fprintf(g.stdout, "%s  … %s: %s\n", ts, snippet(m), m.Error)
			}
		}
		return
	}
	switch client.MessageState(m.State) {
	case client.StateSent:
		fmt.Fprintf(g.stdout, "%s  ✓ sent to %s: %s\n", ts, m.Peer, snippet(m))
	case client.StateDelivered:
		fmt.Fprintf(g.stdout, "%s  ✓✓ delivered to %s: %s\n", ts, m.Peer, snippet(m))
	case client.StateRead:
		fmt.Fprintf(g.stdout, "%s  ✓✓ read by %s: %s\n", ts, m.Peer, snippet(m))
	case client.StateFailed:
		fmt.Fprintf(g.stdout, "%s  ✗ not sent to %s: %s: %s\n", ts, m.Peer, snippet(m), m.Error)
	case client.StateQueued:
		if m.Error != "" {
			fmt.Fprintf(g.stdout, "%s  … %s: %s\n", ts, snippet(m), m.Error)
		}
	}
}

func appCmd(g *globals) *cobra.Command {
	var noBrowser bool
	var downloads string
	var keepalive time.Duration
	c := &cobra.Command{
		Use:   "app",
		Short: "Open Magpie in your browser",
		Long: `Serve the Magpie web app on this machine (127.0.0.1 only) and open it in
your browser: conversations, photos, voice notes, files, receipts and
safety numbers. It prints a link with a one-time token; the browser
exchanges it for a cookie, so the link cannot be used twice. It runs until
Ctrl-C.`,
		Example: `  magpie app
  magpie app --no-browser     # just print the link`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			quiet := *g
			quiet.stdout = discard{}
			return quiet.follow(ctx, downloads, keepalive, func(s *engine.Session) error {
				url, err := s.App(ctx)
				if err != nil {
					return err
				}
				if g.json {
					return g.printJSON(map[string]string{"url": url})
				}
				fmt.Fprintf(g.stdout, "Magpie is open at:\n\n    %s\n\nThe link works once. Ctrl-C stops it.\n", url)
				if !noBrowser {
					openBrowser(url)
				}
				return nil
			})
		},
	}
	c.Flags().BoolVar(&noBrowser, "no-browser", false, "print the link without opening a browser")
	c.Flags().DurationVar(&keepalive, "keepalive", interactiveKeepalive, "if this command runs the engine: ping the server about this often when idle; a path silent for 2.5 pings is abandoned")
	c.Flags().StringVar(&downloads, "downloads", "", "where to save attachments, if this command runs the engine (default: downloads/ in the client's home)")
	g.addJSON(c)
	return c
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// openBrowser opens url in the desktop's browser, if there is a desktop.
func openBrowser(url string) {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", url)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", url)
	default:
		if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
			return
		}
		cmd = exec.Command("xdg-open", url)
	}
	if cmd.Start() == nil {
		go cmd.Wait()
	}
}

func goVersion() string { return runtime.Version() }

func platform() string { return runtime.GOOS + "/" + runtime.GOARCH }
