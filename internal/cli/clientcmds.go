package cli

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/invite"
)

// withClient adapts a command body that needs the client in --home: it
// opens it before and closes it after.
func (g *globals) withClient(run func(cmd *cobra.Command, cl *client.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cl, err := g.openClient(cmd.Context())
		if err != nil {
			return err
		}
		defer cl.Close()
		return run(cmd, cl, args)
	}
}

// openClient opens the client in the resolved home directory.
func (g *globals) openClient(ctx context.Context) (*client.Client, error) {
	home, err := g.clientHome()
	if err != nil {
		return nil, err
	}
	c, err := client.Open(ctx, home, client.Options{
		Logger:   g.logger(),
		Dial:     client.DialOptions{UserAgent: "magpie-cli/" + Version},
		Unlocker: client.EnvUnlocker(os.Stdin, g.stderr),
		OnIdentityChange: func(user string) {
			fmt.Fprintf(g.stderr, "warning: %s's safety number has changed (a new phone, or someone impersonating them).\n"+
				"         Compare it with them: magpie verify %s\n", user, user)
		},
	})
	if errors.Is(err, client.ErrNotInitialized) {
		return nil, fmt.Errorf("%w (home: %s)", err, home)
	}
	return c, err
}

func initCmd(g *globals) *cobra.Command {
	var inviteText string
	c := &cobra.Command{
		Use:   "init --invite INVITE",
		Short: "Set up this client for a server",
		Long: `Set up a client in --home for the server named by an invite (the
magpie://… line that 'magpie serve' prints). It creates this device's key the
first time; running it again with a new invite keeps the key and account.`,
		Example: `  magpie init --invite 'magpie://k3y…@203.0.113.7:7443'
  MAGPIE_HOME=/tmp/bob magpie init --invite "$(cat invite.txt)"`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if inviteText == "" {
				return errors.New("--invite is required: paste the magpie://… line the server printed")
			}
			inv, err := invite.Parse(inviteText)
			if err != nil {
				return err
			}
			home, err := g.clientHome()
			if err != nil {
				return err
			}
			if err := client.Init(cmd.Context(), home, inv, client.EnvUnlocker(os.Stdin, g.stderr)); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"home": home, "server_fingerprint": inv.Fingerprint(), "addresses": inv.Addrs})
			}
			fmt.Fprintf(g.stdout, "Client ready in %s\nServer fingerprint: %s\nNext: magpie register NAME\n", home, inv.Fingerprint())
			return nil
		},
	}
	c.Flags().StringVar(&inviteText, "invite", "", "the server's invite (magpie://…)")
	g.addJSON(c)
	return c
}

func registerCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "register NAME",
		Short: "Create an account with this device",
		Long: `Create an account named NAME with this device as its first device.

Usernames: 3 to 32 characters, letters a-z, digits and underscores, starting
with a letter and not ending with an underscore. Case does not matter
("Alice" is "alice"). A few names (admin, support, magpie, …) are reserved.`,
		Example: `  magpie register alice`,
		Args:    exactArgs(1),
		RunE: g.withClient(func(cmd *cobra.Command, cl *client.Client, args []string) error {
			d, err := cl.Register(cmd.Context(), args[0])
			if err != nil {
				return userError(err)
			}
			if g.json {
				return g.printJSON(map[string]any{"user": d.User, "device": d.Device})
			}
			fmt.Fprintf(g.stdout, "Registered as %s (device %d)\n", d.User, d.Device)
			return nil
		}),
	}
	g.addJSON(c)
	return c
}

func lookupCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:     "lookup NAME",
		Short:   "Show a user's devices",
		Example: `  magpie lookup bob`,
		Args:    exactArgs(1),
		RunE: g.withClient(func(cmd *cobra.Command, cl *client.Client, args []string) error {
			u, err := cl.Lookup(cmd.Context(), args[0])
			if err != nil {
				return userError(err)
			}
			if g.json {
				devs := []map[string]any{}
				for _, d := range u.Devices {
					devs = append(devs, map[string]any{"device": d.Device, "key": hex.EncodeToString(d.Key[:]), "created": d.Created.UTC()})
				}
				return g.printJSON(map[string]any{"user": u.Name, "devices": devs})
			}
			fmt.Fprintf(g.stdout, "%s\n", u.Name)
			for _, d := range u.Devices {
				fmt.Fprintf(g.stdout, "  device %d  key %x  since %s\n", d.Device, d.Key[:8], d.Created.Format(time.DateOnly))
			}
			return nil
		}),
	}
	g.addJSON(c)
	return c
}

func sendCmd(g *globals) *cobra.Command {
	var file, caption string
	c := &cobra.Command{
		Use:   "send NAME [TEXT] [--file PATH]",
		Short: "Send a text message or a file",
		Long: `Send TEXT, or the file at --file (a photo, video, voice note or any
document), to every device of user NAME. The command returns once the server
has stored the message. A file is encrypted under a fresh key and uploaded
over the same connection as text (whatever transport it uses), resumably:
if the connection drops, the upload goes on where it stopped, even after
running the command again. If the server cannot be reached, a message stays
in this client's outbox and goes out, with the same id (so never twice),
with the next send, inbox or listen.`,
		Example: `  magpie send bob "See you at 6"
  magpie send bob --file ~/photos/harbour.jpg --caption "the harbour at dawn"`,
		Args: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return exactArgs(2)(cmd, args)
			}
			return exactArgs(1)(cmd, args)
		},
		RunE: g.withClient(func(cmd *cobra.Command, cl *client.Client, args []string) error {
			var s client.Sent
			var err error
			if file != "" {
				bar := newProgressBar(g.stderr, "upload")
				s, err = cl.SendFile(cmd.Context(), args[0], file, caption, bar.update)
				bar.done()
			} else {
				s, err = cl.SendText(cmd.Context(), args[0], args[1])
			}
			if err != nil {
				return userError(err)
			}
			if g.json {
				return g.printJSON(map[string]any{"id": hex.EncodeToString(s.ID[:]), "to": s.To, "server_time": s.ServerTime.UTC(), "devices": s.Devices})
			}
			fmt.Fprintf(g.stdout, "Sent to %s (%d device(s)) at %s\n", s.To, s.Devices, s.ServerTime.Format(time.TimeOnly))
			return nil
		}),
	}
	c.Flags().StringVar(&file, "file", "", "send this file as an attachment")
	c.Flags().StringVar(&caption, "caption", "", "text to go with --file")
	g.addJSON(c)
	return c
}

func typingCmd(g *globals) *cobra.Command {
	var stopped bool
	c := &cobra.Command{
		Use:   "typing NAME",
		Short: "Tell NAME you are typing (never stored)",
		Long: `Send a typing indicator: an ephemeral envelope that reaches only the
devices of NAME that are connected now, and is never stored.`,
		Example: `  magpie typing bob
  magpie typing bob --stopped`,
		Args: exactArgs(1),
		RunE: g.withClient(func(cmd *cobra.Command, cl *client.Client, args []string) error {
			n, err := cl.Typing(cmd.Context(), args[0], !stopped)
			if err != nil {
				return userError(err)
			}
			if g.json {
				return g.printJSON(map[string]any{"to": args[0], "devices": n})
			}
			fmt.Fprintf(g.stdout, "Typing indicator reached %d device(s)\n", n)
			return nil
		}),
	}
	c.Flags().BoolVar(&stopped, "stopped", false, "say you stopped typing")
	g.addJSON(c)
	return c
}

func inboxCmd(g *globals) *cobra.Command {
	var downloads string
	c := &cobra.Command{
		Use:   "inbox",
		Short: "Fetch and show waiting messages, then exit",
		Long: `Connect, send anything left in the outbox, receive every message and
delivery receipt waiting on the server, store them locally, and exit.
Attachments are downloaded, verified and decrypted into --downloads
(default: downloads/ in the client's home); an interrupted download resumes.`,
		Example: `  magpie inbox
  magpie inbox --json | jq .text
  magpie inbox --downloads ~/Downloads`,
		Args: exactArgs(0),
		RunE: g.withClient(func(cmd *cobra.Command, cl *client.Client, _ []string) error {
			dir, err := g.downloadsDir(downloads)
			if err != nil {
				return err
			}
			n := 0
			var atts []client.Event
			err = cl.Sync(cmd.Context(), func(ev client.Event) {
				if ev.Kind == client.EventMessage {
					n++
				}
				if ev.Attachment != nil {
					atts = append(atts, ev) // fetched after the queue: pushes must keep flowing
					return
				}
				g.printEvent(ev)
			})
			if err != nil {
				return userError(err)
			}
			for _, ev := range atts {
				bar := newProgressBar(g.stderr, "download")
				path, err := cl.Download(cmd.Context(), ev.Attachment, dir, bar.update)
				bar.done()
				g.printAttachment(ev, path, err)
			}
			if !g.json && n == 0 {
				fmt.Fprintln(g.stdout, "No new messages.")
			}
			return nil
		}),
	}
	c.Flags().StringVar(&downloads, "downloads", "", "where to save attachments (default: downloads/ in the client's home)")
	g.addJSON(c)
	return c
}

// downloadsDir resolves --downloads.
func (g *globals) downloadsDir(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	home, err := g.clientHome()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, "downloads"), nil
}

// printAttachment shows a received attachment and where it was saved.
func (g *globals) printAttachment(ev client.Event, path string, err error) {
	a := ev.Attachment
	if g.json {
		obj := map[string]any{"kind": "message", "peer": ev.Peer.User, "device": ev.Peer.Device, "id": hex.EncodeToString(ev.ID[:]),
			"time": ev.Time.UTC(), "text": ev.Text, "attachment": map[string]any{
				"kind": a.GetKind(), "mime": a.GetMime(), "file_name": a.GetFileName(), "size": a.GetSize(),
				"width": a.GetWidth(), "height": a.GetHeight(), "duration_ms": a.GetDurationMs(), "caption": a.GetCaption(),
				"saved": path}}
		if err != nil {
			obj["error"] = err.Error()
		}
		g.printJSON(obj)
		return
	}
	ts := ev.Time.Local().Format(time.DateTime)
	if err != nil {
		fmt.Fprintf(g.stdout, "%s  %s: %s (could not download: %v)\n", ts, ev.Peer.User, ev.Text, err)
		return
	}
	fmt.Fprintf(g.stdout, "%s  %s: %s saved to %s\n", ts, ev.Peer.User, ev.Text, path)
}

func listenCmd(g *globals) *cobra.Command {
	var keepalive time.Duration
	c := &cobra.Command{
		Use:   "listen",
		Short: "Stay connected and show messages as they arrive",
		Long: `Stay connected, printing messages, delivery receipts and typing
indicators as they arrive; reconnect with backoff when the connection drops.
Stop with Ctrl-C.`,
		Example: `  magpie listen
  magpie listen --json
  magpie listen --keepalive 25s   # fewer pings, slower to notice a blocked path`,
		Args: exactArgs(0),
		RunE: g.withClient(func(cmd *cobra.Command, cl *client.Client, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cl.SetKeepalive(keepalive)
			if !g.json {
				me, _ := cl.Account()
				fmt.Fprintf(g.stdout, "Listening as %s (Ctrl-C to stop)\n", me.User)
			}
			return userError(cl.Listen(ctx, g.printEvent))
		}),
	}
	// A listener only notices a black-holed path by missing pongs: ping
	// often, so it moves to another endpoint within seconds.
	c.Flags().DurationVar(&keepalive, "keepalive", 2*time.Second, "ping the server this often; a path silent for 2.5 pings is abandoned")
	g.addJSON(c)
	return c
}

func historyCmd(g *globals) *cobra.Command {
	var limit int
	c := &cobra.Command{
		Use:     "history [NAME]",
		Short:   "Show stored messages (with NAME, or all)",
		Example: "  magpie history\n  magpie history bob --limit 20",
		Args:    cobra.MaximumNArgs(1),
		RunE: g.withClient(func(cmd *cobra.Command, cl *client.Client, args []string) error {
			peer := ""
			if len(args) == 1 {
				peer = args[0]
			}
			msgs, err := cl.History(cmd.Context(), peer, limit)
			if err != nil {
				return err
			}
			for _, m := range msgs {
				state := "received"
				switch {
				case m.Outgoing && !m.Delivered.IsZero():
					state = "delivered"
				case m.Outgoing && !m.ServerTime.IsZero():
					state = "sent"
				case m.Outgoing:
					state = "outbox"
				}
				if g.json {
					if err := g.printJSON(map[string]any{"outgoing": m.Outgoing, "peer": m.Peer, "id": hex.EncodeToString(m.ID[:]), "text": m.Body, "created": m.Created.UTC(), "state": state}); err != nil {
						return err
					}
					continue
				}
				arrow := "<-"
				if m.Outgoing {
					arrow = "->"
				}
				fmt.Fprintf(g.stdout, "%s %s %-12s %s  [%s]\n", m.Created.Format(time.DateTime), arrow, m.Peer, m.Body, state)
			}
			return nil
		}),
	}
	c.Flags().IntVar(&limit, "limit", 50, "most recent messages to show")
	g.addJSON(c)
	return c
}

func whoamiCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:     "whoami",
		Short:   "Show this client's account, server and key",
		Example: "  magpie whoami --home /tmp/alice",
		Args:    exactArgs(0),
		RunE: g.withClient(func(cmd *cobra.Command, cl *client.Client, _ []string) error {
			me, ok := cl.Account()
			pk := cl.PublicKey()
			if g.json {
				return g.printJSON(map[string]any{"user": me.User, "device": me.Device, "registered": ok,
					"device_key": hex.EncodeToString(pk[:]), "server_fingerprint": cl.Invite().Fingerprint()})
			}
			if ok {
				fmt.Fprintf(g.stdout, "user:   %s (device %d)\n", me.User, me.Device)
			} else {
				fmt.Fprintln(g.stdout, "user:   (not registered: magpie register NAME)")
			}
			fmt.Fprintf(g.stdout, "server: %s\n", cl.Invite().Fingerprint())
			fmt.Fprintf(g.stdout, "key:    %x\n", pk[:])
			return nil
		}),
	}
	g.addJSON(c)
	return c
}

// printEvent shows one client event, as text or one JSON object.
func (g *globals) printEvent(ev client.Event) {
	id := hex.EncodeToString(ev.ID[:])
	kind := map[client.EventKind]string{
		client.EventMessage: "message", client.EventReceipt: "receipt", client.EventTyping: "typing",
		client.EventSent: "sent", client.EventSendFailed: "send_failed", client.EventUnreadable: "unreadable",
		client.EventIdentityChanged: "identity_changed", client.EventSentElsewhere: "sent_elsewhere",
	}[ev.Kind]
	if g.json {
		obj := map[string]any{"kind": kind, "peer": ev.Peer.User, "device": ev.Peer.Device, "id": id, "time": ev.Time.UTC()}
		switch ev.Kind {
		case client.EventMessage, client.EventSentElsewhere:
			obj["text"] = ev.Text
		case client.EventTyping:
			obj["typing"] = ev.Typing
		case client.EventSendFailed:
			obj["error"] = ev.Err.Error()
		}
		g.printJSON(obj)
		return
	}
	ts := ev.Time.Local().Format(time.DateTime)
	switch ev.Kind {
	case client.EventMessage:
		fmt.Fprintf(g.stdout, "%s  %s: %s\n", ts, ev.Peer.User, ev.Text)
	case client.EventReceipt:
		fmt.Fprintf(g.stdout, "%s  delivered to %s (device %d) [%s]\n", ts, ev.Peer.User, ev.Peer.Device, id[:8])
	case client.EventTyping:
		if ev.Typing {
			fmt.Fprintf(g.stdout, "%s is typing…\n", ev.Peer.User)
		} else {
			fmt.Fprintf(g.stdout, "%s stopped typing\n", ev.Peer.User)
		}
	case client.EventSent:
		fmt.Fprintf(g.stdout, "%s  sent queued message to %s [%s]\n", ts, ev.Peer.User, id[:8])
	case client.EventSendFailed:
		fmt.Fprintf(g.stdout, "could not send to %s: %v\n", ev.Peer.User, ev.Err)
	case client.EventUnreadable:
		fmt.Fprintf(g.stdout, "%s  %s sent a message this client could not decrypt or read\n", ts, ev.Peer.User)
	case client.EventIdentityChanged:
		fmt.Fprintf(g.stdout, "%s  %s's safety number changed; compare it with them: magpie verify %s\n", ts, ev.Peer.User, ev.Peer.User)
	case client.EventSentElsewhere:
		fmt.Fprintf(g.stdout, "%s  (you, on another device) -> %s: %s\n", ts, ev.Peer.User, ev.Text)
	}
}
