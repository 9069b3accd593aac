package sqlite

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// TestAppendJSONString: every name becomes one valid JSON string, and one
// that is valid UTF-8 decodes back to itself, whichever path wrote it.
func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"alice", "", `a"b`, `a\b`, "a\nb\x00", "a<b>&\x7f", "ünïcode", "bad\xff"} {
		got := appendJSONString([]byte("x"), s)
		if got[0] != 'x' {
			t.Fatalf("%q: the prefix was overwritten: %q", s, got)
		}
		if !json.Valid(got[1:]) {
			t.Errorf("%q: not valid JSON: %s", s, got[1:])
			continue
		}
		var back string
		if err := json.Unmarshal(got[1:], &back); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if utf8.ValidString(s) && back != s {
			t.Errorf("%q: decodes to %q", s, back)
		}
	}
}
