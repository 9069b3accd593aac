package cli

import (
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/magpie-im/magpie/internal/engine"
)

// Hints are command lines to paste: with --home they carry it, quoted when
// the path needs it.
func TestHintsCarryHome(t *testing.T) {
	err := withPeer(&engine.APIError{Code: engine.CodeTooLarge, Message: "too long"}, "bob")
	for home, want := range map[string]string{
		"":                "magpie send bob --file PATH",
		"/tmp/alice":      "magpie --home /tmp/alice send bob --file PATH",
		"/tmp/my home":    "magpie --home '/tmp/my home' send bob --file PATH",
		"/tmp/it's mine":  `magpie --home '/tmp/it'\''s mine' send bob --file PATH`,
		"/tmp/a;rm -rf /": "magpie --home '/tmp/a;rm -rf /' send bob --file PATH",
	} {
		g := &globals{home: home}
		if got := g.hint(err); !strings.Contains(got, want) {
			t.Errorf("home %q: hint %q does not contain %q", home, got, want)
		}
	}
}

// The exit code follows the error's code: a script can tell "no such user"
// from "queued" from a failure.
func TestExitCodes(t *testing.T) {
	var out bytes.Buffer
	g := &globals{stdout: &out, stderr: &out}
	for _, c := range []struct {
		err  error
		exit int
	}{
		{&engine.APIError{Code: engine.CodeUnknownUser}, ExitNotFound},
		{&engine.APIError{Code: engine.CodeNotFound}, ExitNotFound},
		{&engine.APIError{Code: engine.CodeUnknownGroup}, ExitNotFound},
		{&engine.APIError{Code: engine.CodeForbidden}, ExitFailure},
		{&engine.APIError{Code: engine.CodeEmptyMessage}, ExitUsage},
		{usageError{errors.New("x")}, ExitUsage},
		{queuedError{errors.New("queued")}, ExitQueued},
		{&engine.APIError{Code: engine.CodeInterrupted}, ExitInterrupted},
		{&engine.APIError{Code: engine.CodeOffline}, ExitFailure},
		{errors.New("anything else"), ExitFailure},
	} {
		if got := g.fail(c.err); got != c.exit {
			t.Errorf("%v: exit %d, want %d", c.err, got, c.exit)
		}
	}
}

// A bar on a terminal shows the bytes and, once the transfer has run a
// while, a time left that is not zero (an old hand-written bar always said
// 0s).
func TestProgressBarETA(t *testing.T) {
	var w bytes.Buffer
	b := &bars{w: &w, on: true, all: map[uint64]*progressbar.ProgressBar{}}
	const total = 100 << 20
	b.set(1, "download", 0, total)
	for i := int64(1); i <= 4; i++ {
		time.Sleep(150 * time.Millisecond)
		b.set(1, "download", i<<20, total)
	}
	out := w.String()
	if !strings.Contains(out, "105 MB") { // 100 MiB, in the bar's decimal units
		t.Errorf("bar does not show the total: %q", out)
	}
	eta := regexp.MustCompile(`\[[0-9hms]+:([0-9hms]+)\]`).FindAllStringSubmatch(out, -1)
	if len(eta) == 0 {
		t.Fatalf("no [elapsed:left] in %q", out)
	}
	if left := eta[len(eta)-1][1]; left == "0s" {
		t.Errorf("time left is 0s with 96%% to go: %q", out)
	}
	b.done(1)
}
