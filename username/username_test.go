package username

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	valid := map[string]string{
		"alice":                 "alice",
		"Alice":                 "alice",
		"bob_99":                "bob_99",
		"abc":                   "abc",
		strings.Repeat("a", 32): strings.Repeat("a", 32),
		"X_Y_Z":                 "x_y_z",
	}
	for in, want := range valid {
		got, err := Normalize(in)
		if err != nil || got != want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	invalid := map[string]string{
		"":                      "characters long",
		"ab":                    "characters long",
		strings.Repeat("a", 33): "characters long",
		"1abc":                  "start with a letter",
		"_abc":                  "start with a letter",
		"abc_":                  "end with an underscore",
		"al ice":                "only letters",
		"al-ice":                "only letters",
		"аlice":                 "only letters", // Cyrillic а
		"ali\x00ce":             "only letters",
		"Aİ":                    "only letters", // U+0130 lower-cases to ASCII 'i'
		"\u212Aevin":            "only letters", // Kelvin sign lower-cases to 'k'

		"Admin":  "reserved",
		"magpie": "reserved",
	}
	for in, msg := range invalid {
		_, err := Normalize(in)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Normalize(%q) error = %v; want ErrInvalid", in, err)
			continue
		}
		if !strings.Contains(err.Error(), msg) {
			t.Errorf("Normalize(%q) error = %q; want it to mention %q", in, err, msg)
		}
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"alice", "Alice", "a", "1abc", "аlice", "abc_"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Normalize(s)
		if err != nil {
			return
		}
		// A valid name is canonical: normalizing again is the identity.
		if again, err := Normalize(n); err != nil || again != n {
			t.Fatalf("Normalize(%q) = %q, but Normalize(%q) = %q, %v", s, n, n, again, err)
		}
		if !strings.EqualFold(s, n) {
			t.Fatalf("Normalize(%q) = %q changed more than case", s, n)
		}
	})
}
