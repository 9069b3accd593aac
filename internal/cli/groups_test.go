package cli

import (
	"strings"
	"testing"

	"github.com/magpie-im/magpie/internal/engine"
)

// A group's hints name it as it was typed, quoted for the shell, and an
// unknown group is "not found" (exit 3).
func TestGroupHints(t *testing.T) {
	g := &globals{home: "/tmp/alice"}
	for _, c := range []struct {
		err  error
		want string
	}{
		{withGroup(&engine.APIError{Code: engine.CodeForbidden}, "Book club"), "magpie --home /tmp/alice group show 'Book club'"},
		{withPeer(&engine.APIError{Code: engine.CodeNotMember}, "Harbour"), "magpie --home /tmp/alice group show Harbour"},
		{withGroup(&engine.APIError{Code: engine.CodeUnknownGroup}, "Lighthouse"), "magpie --home /tmp/alice group list"},
		{withPeer(&engine.APIError{Code: engine.CodeTooLarge}, "Book club"), "send 'Book club' --file PATH"},
	} {
		if got := g.hint(c.err); !strings.Contains(got, c.want) {
			t.Errorf("%v: hint %q does not contain %q", c.err, got, c.want)
		}
	}
}

// --disappear takes what people type, and says it back the same way.
func TestGroupDisappearFlag(t *testing.T) {
	for in, want := range map[string]int64{"off": 0, "0": 0, "90s": 90, "30m": 1800, "12h": 43200, "7d": 604800, "365d": 31536000} {
		got, err := parseDisappear(in)
		if err != nil || got != want {
			t.Errorf("parseDisappear(%q) = %d, %v; want %d", in, got, err, want)
		}
		back, err := parseDisappear(formatDisappear(got))
		if err != nil || back != got {
			t.Errorf("formatDisappear(%d) = %q, which reads back as %d, %v", got, formatDisappear(got), back, err)
		}
	}
	for _, in := range []string{"", "-1h", "366d", "1.5s", "soon", "7 days", "9000h"} {
		if _, err := parseDisappear(in); err == nil {
			t.Errorf("parseDisappear(%q) accepted", in)
		}
	}
}
