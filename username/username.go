// Package username holds Magpie's username rules, shared by the server (which
// enforces them) and clients (which check before asking).
//
// The rules:
//   - 3 to 32 characters: ASCII letters, digits and underscore;
//   - it starts with a letter and does not end with an underscore;
//   - case does not matter: "Alice" and "alice" are the same user, stored and
//     shown in lower case, so nobody can register a look-alike that differs
//     only in case;
//   - a few names that could pass for the service itself are reserved.
//
// ASCII only, on purpose: it rules out homoglyph impersonation
// ("аlice" with a Cyrillic "а").
package username

import (
	"errors"
	"fmt"
)

// Length limits, in bytes (the alphabet is ASCII).
const (
	MinLen = 3
	MaxLen = 32
)

// ErrInvalid is wrapped by every rule violation.
var ErrInvalid = errors.New("invalid username")

var reserved = map[string]bool{
	"admin": true, "administrator": true, "root": true, "system": true,
	"magpie": true, "support": true, "security": true, "server": true,
	"operator": true, "moderator": true, "official": true, "help": true,
}

// Normalize checks name against the rules and returns its canonical (lower
// case) form. The error says which rule failed, in words a user can act on.
func Normalize(name string) (string, error) {
	if len(name) < MinLen || len(name) > MaxLen {
		return "", fmt.Errorf("%w: %q must be %d to %d characters long", ErrInvalid, truncate(name), MinLen, MaxLen)
	}
	// Check the bytes as given, before any case mapping: Unicode lower-casing
	// turns some non-ASCII runes into ASCII ones (U+0130 'İ' → 'i', the
	// Kelvin sign U+212A → 'k'), which would let look-alikes through and
	// change the length after it was checked.
	b := []byte(name)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z':
		case c >= 'A' && c <= 'Z':
			b[i] = c + ('a' - 'A')
		case c >= '0' && c <= '9', c == '_':
			if i == 0 {
				return "", fmt.Errorf("%w: %q must start with a letter", ErrInvalid, truncate(name))
			}
		default:
			return "", fmt.Errorf("%w: %q may contain only letters a-z, digits and underscores", ErrInvalid, truncate(name))
		}
	}
	n := string(b)
	if n[len(n)-1] == '_' {
		return "", fmt.Errorf("%w: %q must not end with an underscore", ErrInvalid, truncate(name))
	}
	if reserved[n] {
		return "", fmt.Errorf("%w: %q is reserved; choose another name", ErrInvalid, n)
	}
	return n, nil
}

// truncate keeps error messages bounded when a caller passes a huge string.
func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
