// Package cli implements the magpie command: the server (serve) and the
// client commands, each a thin layer over package server or package client.
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

	"github.com/spf13/cobra"
)

// Version is the magpie release; set at build time with -ldflags "-X".
var Version = "0.1.0-dev"

// Main runs the magpie command with args and returns the process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "magpie: %v\n", err)
		return 1
	}
	return 0
}

type globals struct {
	home     string
	json     bool
	logLevel string
	stdout   io.Writer
	stderr   io.Writer
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "magpie",
		Short: "Magpie: an end-to-end encrypted messenger that keeps working on censored networks",
		Long: `Magpie is a messenger server and client in one binary.

Run a server:       magpie serve
Set up a client:    magpie init --invite 'magpie://…'   (the line serve prints)
                    magpie register alice
Talk:               magpie send bob "hello"
                    magpie inbox        (or: magpie listen)

Client state lives in --home (or $MAGPIE_HOME), so several clients can run
side by side on one machine.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.home, "home", "", "client state directory (default $MAGPIE_HOME, else "+defaultHomeHint()+")")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.AddCommand(
		serveCmd(g),
		initCmd(g),
		registerCmd(g),
		lookupCmd(g),
		sendCmd(g),
		typingCmd(g),
		inboxCmd(g),
		listenCmd(g),
		historyCmd(g),
		whoamiCmd(g),
		verifyCmd(g),
		endpointsCmd(g),
		inviteCmd(g),
		probeCmd(g),
		relayCmd(g),
		relaysCmd(g),
		benchCmd(g),
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

func (g *globals) logger() *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
}

// addJSON adds the --json flag to commands whose output scripts read.
func (g *globals) addJSON(c *cobra.Command) {
	c.Flags().BoolVar(&g.json, "json", false, "print JSON (one object per line) instead of text")
}

func (g *globals) printJSON(v any) error {
	return json.NewEncoder(g.stdout).Encode(v)
}

// exactArgs is cobra.ExactArgs with an error that shows the usage line.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s takes %d argument(s), got %d\nusage: %s\nsee: %s --help",
				cmd.Name(), n, len(args), cmd.UseLine(), cmd.CommandPath())
		}
		return nil
	}
}

// userError rewrites errors whose text a user can act on.
func userError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return errors.New("interrupted")
	}
	return err
}
