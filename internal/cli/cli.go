// Package cli implements the magpie command: the server (serve) and the
// client commands, each a thin layer over package server, or over the
// client engine's local API (package engine).
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

// Version is the magpie release; set at build time with -ldflags "-X".
var Version = "0.1.0-dev"

// Exit codes, for scripts (README, `magpie --help`).
const (
	ExitOK          = 0   // done
	ExitFailure     = 1   // failed: the message says why
	ExitUsage       = 2   // the command line is wrong
	ExitNotFound    = 3   // no such user, message or file
	ExitQueued      = 4   // a message was queued, not yet stored by the server: it will be sent later
	ExitInterrupted = 130 // Ctrl-C
)

// Main runs the magpie command with args and returns the process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	// A command line that does not parse has not set --json: look for it,
	// so that even a usage error reaches a script as JSON.
	g.json = g.json || slices.Contains(args, "--json")
	if err == nil {
		return ExitOK
	}
	return g.fail(err)
}

type globals struct {
	home     string
	json     bool
	logLevel string
	stdout   io.Writer
	stderr   io.Writer
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "magpie",
		Short: "Magpie: an end-to-end encrypted messenger that keeps working on censored networks",
		Long: `Magpie is a messenger server and client in one binary.

Run a server:       magpie serve
Set up a client:    magpie init --invite 'magpie://…'   (the line serve prints)
                    magpie register alice
Talk:               magpie app            (a web app in your browser)
                    magpie send bob "hello"
                    magpie inbox          (or: magpie listen)
Groups:             magpie group create Harbour bob carol
                    magpie send Harbour "hello"
                    magpie group --help   (add, remove, roles, links…)

Client state lives in --home (or $MAGPIE_HOME), so several clients can run
side by side on one machine. One engine at a time keeps a home connected;
every command uses the running one, or runs it while it works.

Exit codes: 0 done, 1 failed, 2 wrong usage, 3 not found (a user, a
group, a message), 4 queued (the message waits in the outbox and will be
sent), 130 interrupted. With --json, every command prints one JSON object
per line, errors included:
{"error": {"code": "…", "message": "…", "hint": "…"}}.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w\nsee: %s --help", err, c.CommandPath())}
	})
	root.PersistentFlags().StringVar(&g.home, "home", "", "client state directory (default $MAGPIE_HOME, else "+defaultHomeHint()+")")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.AddCommand(
		serveCmd(g),
		initCmd(g),
		registerCmd(g),
		lookupCmd(g),
		sendCmd(g),
		outboxCmd(g),
		typingCmd(g),
		inboxCmd(g),
		listenCmd(g),
		historyCmd(g),
		groupCmd(g),
		appCmd(g),
		whoamiCmd(g),
		settingsCmd(g),
		verifyCmd(g),
		endpointsCmd(g),
		inviteCmd(g),
		probeCmd(g),
		relayCmd(g),
		relaysCmd(g),
		benchCmd(g),
		versionCmd(g),
	)
	return root
}

func defaultHomeHint() string {
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "magpie")
	}
	return "the user config directory"
}

// clientHome resolves the client state directory: --home, $MAGPIE_HOME, or
// the user's config directory.
func (g *globals) clientHome() (string, error) {
	if g.home != "" {
		return g.home, nil
	}
	if h := os.Getenv("MAGPIE_HOME"); h != "" {
		return h, nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no --home given and no user config directory: %w", err)
	}
	return filepath.Join(d, "magpie"), nil
}

func (g *globals) level() slog.Level {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		level = slog.LevelInfo
	}
	return level
}

func (g *globals) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: g.level()}))
}

// addJSON adds the --json flag to commands whose output scripts read.
func (g *globals) addJSON(c *cobra.Command) {
	c.Flags().BoolVar(&g.json, "json", false, "print JSON (one object per line) instead of text")
}

func (g *globals) printJSON(v any) error {
	return json.NewEncoder(g.stdout).Encode(v)
}

// usageError is a mistake in the command line (exit 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// exactArgs is cobra.ExactArgs with an error that shows the usage line.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s takes %d argument(s), got %d\nusage: %s\nsee: %s --help",
				cmd.Name(), n, len(args), cmd.UseLine(), cmd.CommandPath())}
		}
		return nil
	}
}

// queuedError ends a command whose message was queued, not sent; what to
// say was printed already (exit 4).
type queuedError struct{ error }

// fail reports err (as text, or as JSON with --json) and returns the exit
// code for it.
func (g *globals) fail(err error) int {
	var qe queuedError
	if errors.As(err, &qe) {
		return ExitQueued
	}
	code, hint := errorCode(err), g.hint(err)
	exit := ExitFailure
	var ue usageError
	switch {
	case errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown flag"):
		code, exit = "usage", ExitUsage
	case code == "empty_message":
		exit = ExitUsage
	case code == "unknown_user" || code == "unknown_group" || code == "not_found":
		exit = ExitNotFound
	case code == "interrupted":
		exit = ExitInterrupted
	}
	if g.json {
		e := map[string]string{"code": code, "message": err.Error()}
		if hint != "" {
			e["hint"] = hint
		}
		g.printJSON(map[string]any{"error": e})
		return exit
	}
	fmt.Fprintf(g.stderr, "magpie: %v\n", err)
	if hint != "" {
		fmt.Fprintf(g.stderr, "  hint: %s\n", hint)
	}
	return exit
}

// magpie returns a command line to paste: "magpie ARGS", with --home when
// one was given.
func (g *globals) magpie(args string) string {
	if g.home != "" {
		return fmt.Sprintf("magpie --home %s %s", shellQuote(g.home), args)
	}
	return "magpie " + args
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '-' || r == '_' || r == '~' || r == ':' ||
			(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
