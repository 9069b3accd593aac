package vault

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
)

// Environment variables the CLI reads the secret from.
const (
	// EnvKey holds a raw 32-byte key as base64 (standard or URL alphabet,
	// padded or not) or as 64 hex digits. Surrounding whitespace is ignored.
	EnvKey = "MAGPIE_KEY"
	// EnvPassphrase holds the passphrase, used byte for byte.
	EnvPassphrase = "MAGPIE_PASSPHRASE"
)

// ErrNoSecret is returned by ResolveNew and ResolveExisting when no
// environment variable is set and stdin is not a terminal.
var ErrNoSecret = errors.New("vault: no passphrase or key: stdin is not a terminal, so set " +
	EnvPassphrase + " (a passphrase) or " + EnvKey + " (32 bytes as base64 or 64 hex digits)")

// ParseKey decodes a raw key in the EnvKey format. Its errors never contain
// the input.
func ParseKey(s string) ([32]byte, error) {
	var key [32]byte
	s = strings.TrimSpace(s)
	if s == "" {
		return key, fmt.Errorf("vault: %s is empty", EnvKey)
	}
	if len(s) == 2*KeySize {
		// 64 characters: hex. (64 base64 characters would be 48 bytes,
		// never a valid key, so there is no ambiguity.)
		if _, err := hex.Decode(key[:], []byte(s)); err != nil {
			clear(key[:])
			return key, fmt.Errorf("vault: %s has 64 characters but is not valid hex", EnvKey)
		}
		return key, nil
	}
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding,
		base64.URLEncoding, base64.RawURLEncoding,
	} {
		b, err := enc.Strict().DecodeString(s)
		if err != nil {
			clear(b)
			continue
		}
		if len(b) != KeySize {
			clear(b)
			return key, fmt.Errorf("vault: %s decodes to %d bytes, want %d (32 bytes as base64, or 64 hex digits)", EnvKey, len(b), KeySize)
		}
		copy(key[:], b)
		clear(b)
		return key, nil
	}
	return key, fmt.Errorf("vault: %s is neither base64 nor 64 hex digits (want 32 bytes; %d characters given)", EnvKey, len(s))
}

// env abstracts where the secret comes from, for tests.
type env struct {
	lookup func(string) (string, bool)
	isTTY  bool
	// readPassword reads one line from the terminal without echo.
	readPassword func() ([]byte, error)
	stderr       io.Writer
}

func osEnv(stdin *os.File, stderr io.Writer) env {
	e := env{lookup: os.LookupEnv, stderr: stderr}
	if e.stderr == nil {
		e.stderr = io.Discard
	}
	if stdin != nil && term.IsTerminal(int(stdin.Fd())) {
		fd := int(stdin.Fd())
		e.isTTY = true
		e.readPassword = func() ([]byte, error) { return term.ReadPassword(fd) }
	}
	return e
}

// ResolveNew creates a vault for a new store. The secret comes from, in
// order: EnvKey (raw-key mode), EnvPassphrase (Argon2id with p), or a
// terminal prompt on stdin (asked twice) if stdin is a terminal. Otherwise
// it returns ErrNoSecret. Prompts go to stderr.
func ResolveNew(stdin *os.File, stderr io.Writer, p Params) (*Vault, Header, error) {
	return osEnv(stdin, stderr).resolveNew(p)
}

// ResolveExisting opens the vault of an existing store described by h,
// taking the secret from the same sources, in the same order, as
// ResolveNew (the terminal is asked once). The source is chosen by that
// order alone: if EnvKey is set but h is a passphrase header, the result is
// ErrWrongMode, not a fallback. A raw-key store cannot be opened from a
// prompt.
func ResolveExisting(stdin *os.File, stderr io.Writer, h Header) (*Vault, error) {
	return osEnv(stdin, stderr).resolveExisting(h)
}

// envSecret returns the key or passphrase from the environment, key first.
// Set-but-empty variables are errors rather than silently skipped.
func (e env) envSecret() (key *[32]byte, pass []byte, err error) {
	if s, ok := e.lookup(EnvKey); ok {
		k, err := ParseKey(s)
		if err != nil {
			return nil, nil, err
		}
		return &k, nil, nil
	}
	if s, ok := e.lookup(EnvPassphrase); ok {
		if s == "" {
			return nil, nil, fmt.Errorf("vault: %s is set but empty", EnvPassphrase)
		}
		return nil, []byte(s), nil
	}
	return nil, nil, nil
}

func (e env) resolveNew(p Params) (*Vault, Header, error) {
	key, pass, err := e.envSecret()
	if err != nil {
		return nil, Header{}, err
	}
	if key != nil {
		defer clear(key[:])
		return NewFromKey(*key)
	}
	if pass == nil {
		if !e.isTTY {
			return nil, Header{}, ErrNoSecret
		}
		if pass, err = e.prompt("New passphrase for the Magpie store: "); err != nil {
			return nil, Header{}, err
		}
		again, err := e.prompt("Repeat the passphrase: ")
		if err != nil {
			clear(pass)
			return nil, Header{}, err
		}
		same := bytes.Equal(pass, again)
		clear(again)
		if !same {
			clear(pass)
			return nil, Header{}, errors.New("vault: the two passphrases differ")
		}
	}
	defer clear(pass)
	return NewFromPassphrase(pass, p)
}

func (e env) resolveExisting(h Header) (*Vault, error) {
	if err := h.validate(); err != nil {
		return nil, err
	}
	key, pass, err := e.envSecret()
	if err != nil {
		return nil, err
	}
	if key != nil {
		defer clear(key[:])
		if h.mode != ModeRawKey {
			return nil, fmt.Errorf("%w: %s is set but the store was created with a passphrase; unset it and use %s or the prompt", ErrWrongMode, EnvKey, EnvPassphrase)
		}
		return OpenWithKey(*key, h)
	}
	if h.mode == ModeRawKey {
		clear(pass)
		return nil, fmt.Errorf("%w: the store was created with a raw key; set %s", ErrWrongMode, EnvKey)
	}
	if pass == nil {
		if !e.isTTY {
			return nil, ErrNoSecret
		}
		if pass, err = e.prompt("Passphrase for the Magpie store: "); err != nil {
			return nil, err
		}
	}
	defer clear(pass)
	return OpenWithPassphrase(pass, h)
}

// prompt asks for one passphrase on the terminal. An empty answer is
// ErrEmptyPassphrase.
func (e env) prompt(msg string) ([]byte, error) {
	fmt.Fprint(e.stderr, msg)
	pass, err := e.readPassword()
	fmt.Fprintln(e.stderr) // the user's Enter was not echoed
	if err != nil {
		clear(pass)
		return nil, fmt.Errorf("vault: reading passphrase from terminal: %w", err)
	}
	if len(pass) == 0 {
		return nil, ErrEmptyPassphrase
	}
	return pass, nil
}
