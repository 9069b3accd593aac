package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/engine"
	"github.com/magpie-im/magpie/invite"
)

// engineOptions are how this process would run the home's engine, with a
// keepalive (0: the SDK's).
func (g *globals) engineOptions(downloads string, keepalive time.Duration) (engine.Options, error) {
	home, err := g.clientHome()
	if err != nil {
		return engine.Options{}, err
	}
	return engine.Options{
		Client: client.Options{
			Home:        home,
			Unlocker:    client.EnvUnlocker(os.Stdin, g.stderr),
			DownloadDir: downloads,
			Logger:      g.engineLogger(home),
			Dial:        client.DialOptions{UserAgent: "magpie-cli/" + Version},
			Keepalive:   keepalive,
		},
		Version: Version,
	}, nil
}

// engineLogLimit is the size at which the engine's log is rotated.
const engineLogLimit = 8 << 20

// engineLogger writes the engine's diagnostics to HOME/engine.log, not to
// the terminal, where they would land in the middle of a conversation.
func (g *globals) engineLogger(home string) *slog.Logger {
	path := filepath.Join(home, "engine.log")
	if fi, err := os.Stat(path); err == nil && fi.Size() > engineLogLimit {
		os.Rename(path, path+".1")
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return slog.New(slog.DiscardHandler)
	}
	// The file stays open for the life of the process.
	return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: g.level()}))
}

// connectPatience is how long a command waits for an engine that another
// process is still starting.
const connectPatience = 30 * time.Second

// session connects to the home's engine, starting one in this process if
// none runs.
func (g *globals) session(ctx context.Context, downloads string) (*engine.Session, error) {
	return g.sessionKeepalive(ctx, downloads, 0)
}

// sessionKeepalive is session, pinging every keepalive if it starts the
// engine.
func (g *globals) sessionKeepalive(ctx context.Context, downloads string, keepalive time.Duration) (*engine.Session, error) {
	opts, err := g.engineOptions(downloads, keepalive)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(opts.Client.Home); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (home: %s)", client.ErrNotInitialized, opts.Client.Home)
	}
	s, err := engine.Connect(ctx, opts, connectPatience)
	if errors.Is(err, client.ErrNotInitialized) {
		return nil, fmt.Errorf("%w (home: %s)", err, opts.Client.Home)
	}
	return s, err
}

// withSession adapts a command body that talks to the engine.
func (g *globals) withSession(run func(cmd *cobra.Command, s *engine.Session, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		s, err := g.session(cmd.Context(), "")
		if err != nil {
			return err
		}
		defer s.Close()
		return run(cmd, s, args)
	}
}

func initCmd(g *globals) *cobra.Command {
	var inviteText string
	c := &cobra.Command{
		Use:   "init --invite INVITE",
		Short: "Set up this client for a server",
		Long: `Set up a client in --home for the server named by an invite (the
magpie://… line that 'magpie serve' prints). It creates this device's key the
first time; running it again with a new invite keeps the key and account.
The client's state is encrypted with a passphrase (asked for, or from
$MAGPIE_PASSPHRASE) or a key ($MAGPIE_KEY).`,
		Example: `  magpie init --invite 'magpie://k3y…@203.0.113.7:7443'
  MAGPIE_HOME=/tmp/bob magpie init --invite "$(cat invite.txt)"`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if inviteText == "" {
				return usageError{errors.New("--invite is required: paste the magpie://… line the server printed")}
			}
			inv, err := invite.Parse(inviteText)
			if err != nil {
				return err
			}
			home, err := g.clientHome()
			if err != nil {
				return err
			}
			if r, err := engine.Dial(cmd.Context(), home); err == nil {
				r.Close()
				return errors.New("a Magpie engine is running for this home (magpie listen, app, or another command): stop it first")
			}
			err = client.Init(cmd.Context(), client.Options{Home: home, Unlocker: client.EnvUnlocker(os.Stdin, g.stderr)}, inv)
			if errors.Is(err, client.ErrHomeInUse) {
				return errors.New("another magpie process is using this home: stop it first")
			}
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"home": home, "server_fingerprint": inv.Fingerprint(), "addresses": inv.Addrs})
			}
			fmt.Fprintf(g.stdout, "Client ready in %s\nServer fingerprint: %s\nNext: %s\n", home, inv.Fingerprint(), g.magpie("register NAME"))
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
("Alice" is "alice"). A few names (admin, support, magpie, …) are reserved.

A server run with --signup pow asks each new account to solve a puzzle
first: register solves it by itself, on every core, and says so (from a
moment to a minute, more while the server is flooded with sign-ups).`,
		Example: `  magpie register alice`,
		Args:    exactArgs(1),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			if !g.json {
				stop := g.tellPuzzle(cmd.Context(), s)
				defer stop()
			}
			st, err := s.Register(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"user": st.User, "device": st.Device})
			}
			fmt.Fprintf(g.stdout, "Registered as %s (device %d)\nNext: %s, or %s\n", st.User, st.Device, g.magpie("app"), g.magpie(`send NAME "hello"`))
			return nil
		}),
	}
	g.addJSON(c)
	return c
}

// tellPuzzle says on stderr when registering starts solving the server's
// sign-up puzzle (a server run with --signup pow), until stop.
func (g *globals) tellPuzzle(ctx context.Context, s *engine.Session) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	evs, err := s.Events(ctx)
	if err != nil {
		cancel()
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range evs {
			var p engine.SignupPuzzle
			if ev.Name == "signup_puzzle" && json.Unmarshal(ev.Data, &p) == nil {
				fmt.Fprintf(g.stderr, "Solving the server's sign-up puzzle (%d bits: from a moment to a minute)…\n", p.Bits)
			}
		}
	}()
	return func() { cancel(); <-done }
}

func lookupCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:     "lookup NAME",
		Short:   "Show a user's devices",
		Example: `  magpie lookup bob`,
		Args:    exactArgs(1),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			u, err := s.Contact(cmd.Context(), args[0])
			if err != nil {
				return withPeer(err, args[0])
			}
			if g.json {
				return g.printJSON(u)
			}
			fmt.Fprintf(g.stdout, "%s\n", u.User)
			for _, d := range u.Devices {
				keys := ""
				if !d.HasKeys {
					keys = "  (no end-to-end keys yet)"
				}
				fmt.Fprintf(g.stdout, "  device %d  key %s  since %s%s\n", d.Device, d.Key[:16], d.Created.Local().Format(time.DateOnly), keys)
			}
			return nil
		}),
	}
	g.addJSON(c)
	return c
}

func sendCmd(g *globals) *cobra.Command {
	var file, caption, id, grp string
	var wait time.Duration
	c := &cobra.Command{
		Use:   "send NAME|--group G [TEXT] [--file PATH]",
		Short: "Send a text message or a file to a user or a group",
		Long: `Send TEXT, or the file at --file (a photo, video, voice note or any
document), to every device of user NAME, or to every member of a group
(NAME is then the group's name, its id, or group:ID). With --group G,
G is only ever a group, even when a user has the same name.

The message goes into this client's outbox first, so it is never lost, and
then to the server. The command returns once the server has stored it
(exit 0). If the server cannot be reached it stays queued (exit 4, JSON
"status": "queued") and goes out, with the same id (never twice), as soon
as Magpie is connected again: right away when 'magpie listen' or 'magpie
app' runs, otherwise with the next command. Sending the same text again
while it is queued does not queue a second copy; see 'magpie outbox'.

A file is encrypted under a fresh key and uploaded over the same connection
as text, resumably: interrupted, the upload goes on where it stopped, even
after a restart.`,
		Example: `  magpie send bob "See you at 6"
  magpie send bob --file ~/photos/harbour.jpg --caption "the harbour at dawn"
  magpie send bob "report attached" --id 5f0e…   # a script's idempotency key
  magpie send Harbour "Boats at 6"                 # a group
  magpie send --group Harbour --file tides.pdf`,
		Args: func(cmd *cobra.Command, args []string) error {
			n := 2
			if file != "" {
				n--
			}
			if grp != "" {
				n--
			}
			return exactArgs(n)(cmd, args)
		},
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			ctx := cmd.Context()
			var to, peer, label string
			if grp != "" {
				to = grp
				found, err := findGroup(ctx, s, grp)
				if err != nil {
					return err
				}
				peer, label = found.Peer, found.Name
			} else {
				to, args = args[0], args[1:]
				var err error
				if peer, label, err = resolvePeer(ctx, s, to); err != nil {
					return err
				}
			}
			var m engine.Message
			var err error
			if file != "" {
				path, aerr := filepath.Abs(file)
				if aerr != nil {
					return aerr
				}
				m, err = s.SendFile(ctx, peer, path, caption)
			} else {
				m, err = s.Send(ctx, engine.SendRequest{To: peer, Text: args[0], ID: id})
			}
			if err != nil {
				return withPeer(err, to)
			}
			m, err = g.waitSent(ctx, s, m, wait)
			if err != nil {
				return withPeer(err, to)
			}
			return withPeer(g.reportSent(m, label), to)
		}),
	}
	c.Flags().StringVar(&file, "file", "", "send this file as an attachment")
	c.Flags().StringVar(&grp, "group", "", "send to this group (its name, id or group:ID) instead of NAME")
	c.Flags().StringVar(&caption, "caption", "", "text to go with --file")
	c.Flags().StringVar(&id, "id", "", "the message id (32 hex digits): sending again with the same id never sends twice")
	c.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to wait for the server (or, for a file, for the upload to move on) before leaving the message queued")
	g.addJSON(c)
	return c
}

// waitSent waits until m has left the outbox, showing an attachment's
// upload. A text gives up (staying queued) when the engine is offline; an
// upload rides out a dropped connection, and gives up once it has made no
// progress for wait.
func (g *globals) waitSent(ctx context.Context, s *engine.Session, m engine.Message, wait time.Duration) (engine.Message, error) {
	if !pending(m) {
		return m, nil
	}
	var lastProgress atomic.Int64
	lastProgress.Store(time.Now().UnixNano())
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	b := newBars(g.stderr)
	if m.Attachment != nil {
		seq, label := m.Seq, "upload "+m.Attachment.Name
		if evs, err := s.Events(pctx); err == nil {
			go func() {
				for ev := range evs {
					if p, ok := decodeEvent[engine.Progress](ev, "progress"); ok && p.Seq == seq && p.Phase == "upload" {
						lastProgress.Store(time.Now().UnixNano())
						b.set(seq, label, p.Done, p.Total)
					}
				}
			}()
		}
	}
	defer b.done(m.Seq)
	for {
		left := wait - time.Since(time.Unix(0, lastProgress.Load()))
		if left <= 0 {
			return m, nil
		}
		got, err := s.Message(ctx, m.Seq, left)
		if err != nil {
			return m, err
		}
		m = got
		if !pending(m) {
			return m, nil
		}
		if m.State == string(client.StateQueued) && m.Error != "" && !strings.HasPrefix(m.Error, "offline") {
			return m, nil // refused for now by the server: the engine retries later
		}
		if m.Error != "" && m.Attachment == nil {
			return m, nil // offline: a text waits in the outbox
		}
		if m.Error != "" {
			// Offline mid-upload: ask again in a moment (asking makes the
			// engine try to connect at once); the upload resumes where
			// the server's copy ends.
			select {
			case <-ctx.Done():
				return m, ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
}

func pending(m engine.Message) bool {
	return m.State == string(client.StateQueued) || m.State == string(client.StateUploading)
}

// reportSent prints where a sent message stands: sent (exit 0), queued
// (exit 4), or failed. label names the conversation: the user, or the
// group's name.
func (g *globals) reportSent(m engine.Message, label string) error {
	status := "sent"
	switch client.MessageState(m.State) {
	case client.StateQueued, client.StateUploading:
		status = "queued"
	case client.StateFailed:
		return &engine.APIError{Code: m.ErrorCode, Message: m.Error}
	}
	if g.json {
		if err := g.printJSON(map[string]any{"status": status, "message": m}); err != nil {
			return err
		}
	} else if status == "queued" {
		why := m.Error
		if why == "" {
			why = "the server did not answer in time"
		}
		fmt.Fprintf(g.stdout, "Queued for %s (%s).\nIt goes out by itself, once, when Magpie is connected again: right away while %s or %s runs, otherwise with the next command. See %s.\n",
			label, why, g.magpie("listen"), g.magpie("app"), g.magpie("outbox"))
	} else {
		fmt.Fprintf(g.stdout, "Sent to %s at %s [%d]\n", label, m.ServerTime.Local().Format(time.TimeOnly), m.Seq)
	}
	if status == "queued" {
		return queuedError{errors.New("queued")}
	}
	return nil
}

func outboxCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "outbox [cancel SEQ]",
		Short: "List messages waiting to be sent, or cancel one",
		Long: `List the messages in the outbox: written, not yet stored by the server
(because it could not be reached, or refused them for now). Each goes out
by itself, once. 'magpie outbox cancel SEQ' removes one that has not left.`,
		Example: `  magpie outbox
  magpie outbox cancel 42`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 || (len(args) == 2 && args[0] == "cancel") {
				return nil
			}
			return usageError{fmt.Errorf("usage: %s\nsee: %s --help", cmd.UseLine(), cmd.CommandPath())}
		},
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			if len(args) == 2 {
				seq, err := strconv.ParseUint(args[1], 10, 64)
				if err != nil {
					return usageError{fmt.Errorf("%q is not a message number (see %s)", args[1], g.magpie("outbox"))}
				}
				if err := s.Cancel(cmd.Context(), seq); err != nil {
					return err
				}
				if g.json {
					return g.printJSON(map[string]any{"cancelled": seq})
				}
				fmt.Fprintf(g.stdout, "Cancelled message %d.\n", seq)
				return nil
			}
			ms, err := s.Outbox(cmd.Context())
			if err != nil {
				return err
			}
			names := &groupNames{ctx: cmd.Context(), s: s.Remote, m: map[string]string{}}
			for i := range ms {
				if g.json {
					if err := g.printJSON(ms[i]); err != nil {
						return err
					}
					continue
				}
				why := ""
				if ms[i].Error != "" {
					why = "  (" + ms[i].Error + ")"
				}
				fmt.Fprintf(g.stdout, "[%d] %s  -> %-12s %s  %s%s\n", ms[i].Seq, ms[i].ComposedAt.Local().Format(time.DateTime), names.label(ms[i].Peer), summary(&ms[i]), ms[i].State, why)
			}
			if !g.json && len(ms) == 0 {
				fmt.Fprintln(g.stdout, "The outbox is empty: everything was sent.")
			}
			return nil
		}),
	}
	g.addJSON(c)
	return c
}

func typingCmd(g *globals) *cobra.Command {
	var stopped bool
	c := &cobra.Command{
		Use:   "typing NAME",
		Short: "Tell NAME (a user or a group) you are typing (never stored)",
		Long: `Send a typing indicator: an ephemeral envelope that reaches only the
devices of NAME that are connected now, and is never stored. NAME may be a
group (its name, its id, or group:ID): its members who are connected see
it once they hold your key (after your first message to the group).`,
		Example: `  magpie typing bob
  magpie typing bob --stopped
  magpie typing Harbour`,
		Args: exactArgs(1),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			ctx := cmd.Context()
			peer, label, err := resolvePeer(ctx, s, args[0])
			if err != nil {
				return err
			}
			if err := s.Typing(ctx, peer, !stopped); err != nil {
				return withPeer(err, args[0])
			}
			if g.json {
				return g.printJSON(map[string]any{"to": peer, "typing": !stopped})
			}
			if isGroupPeer(peer) {
				fmt.Fprintf(g.stdout, "Told the connected members of %s.\n", label)
				return nil
			}
			fmt.Fprintf(g.stdout, "Told %s's connected devices.\n", label)
			return nil
		}),
	}
	c.Flags().BoolVar(&stopped, "stopped", false, "say you stopped typing")
	g.addJSON(c)
	return c
}

func whoamiCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:     "whoami",
		Short:   "Show this client's account, server, key and connection",
		Example: "  magpie whoami --home /tmp/alice",
		Args:    exactArgs(0),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, _ []string) error {
			st, err := s.Status(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(st)
			}
			if st.Registered {
				fmt.Fprintf(g.stdout, "user:    %s (device %d)\n", st.User, st.Device)
			} else {
				fmt.Fprintf(g.stdout, "user:    (not registered: %s)\n", g.magpie("register NAME"))
			}
			fmt.Fprintf(g.stdout, "server:  %s\nkey:     %s\nstate:   %s\nhome:    %s\n", st.ServerFingerprint, st.DeviceKey, stateLine(st), st.Home)
			if st.Outbox > 0 {
				fmt.Fprintf(g.stdout, "outbox:  %d waiting (%s)\n", st.Outbox, g.magpie("outbox"))
			}
			return nil
		}),
	}
	g.addJSON(c)
	return c
}

func settingsCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "settings [read-receipts|plain-tcp on|off]",
		Short: "Show or change this client's settings",
		Long: `Show the settings, or change one. read-receipts: whether contacts are
told when you have read their messages (you still see theirs). plain-tcp:
whether this client may dial plain tcp endpoints the operator did not mark
safe. Off (the default), it uses obfs, tls and relays whenever the server
offers them: plain tcp's first packet is what a censor fingerprints. Turn it
on for a network known not to censor.`,
		Example: `  magpie settings
  magpie settings read-receipts off
  magpie settings plain-tcp on`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 || (len(args) == 2 && (args[0] == "read-receipts" || args[0] == "plain-tcp") && (args[1] == "on" || args[1] == "off")) {
				return nil
			}
			return usageError{fmt.Errorf("usage: %s\nsee: %s --help", cmd.UseLine(), cmd.CommandPath())}
		},
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			var set *engine.Settings
			if len(args) == 2 {
				on := args[1] == "on"
				set = &engine.Settings{ReadReceipts: &on}
				if args[0] == "plain-tcp" {
					set = &engine.Settings{PlainTCP: &on}
				}
			}
			st, err := s.Settings(cmd.Context(), set)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(st)
			}
			fmt.Fprintf(g.stdout, "read-receipts: %s\nplain-tcp: %s\n", onOff(st.ReadReceipts != nil && *st.ReadReceipts), onOff(st.PlainTCP != nil && *st.PlainTCP))
			return nil
		}),
	}
	g.addJSON(c)
	return c
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func versionCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:     "version",
		Short:   "Show this magpie's version",
		Example: "  magpie version --json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.json {
				return g.printJSON(map[string]any{"version": Version, "go": goVersion(), "platform": platform()})
			}
			fmt.Fprintf(g.stdout, "magpie %s (%s, %s)\n", Version, goVersion(), platform())
			return nil
		},
	}
	g.addJSON(c)
	return c
}

// stateLine says how the engine is connected, for people.
func stateLine(st engine.Status) string {
	switch client.ConnState(st.State) {
	case client.ConnOnline:
		return "online"
	case client.ConnConnecting:
		return "connecting…"
	case client.ConnStorageFull:
		return "storage full: " + st.Error + " (free space; nothing is lost meanwhile)"
	case client.ConnOffline:
		return "offline: " + strings.TrimPrefix(st.Error, "offline: ") + " (retrying)"
	}
	return st.State
}
