package vault

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
)

func testKey() [32]byte {
	var k [32]byte
	for i := range k {
		k[i] = byte(0xf8 + i) // high bytes give '+' '/' vs '-' '_' in base64
	}
	return k
}

func TestParseKey(t *testing.T) {
	k := testKey()
	good := map[string]string{
		"std padded": base64.StdEncoding.EncodeToString(k[:]),
		"std raw":    base64.RawStdEncoding.EncodeToString(k[:]),
		"url padded": base64.URLEncoding.EncodeToString(k[:]),
		"url raw":    base64.RawURLEncoding.EncodeToString(k[:]),
		"hex lower":  hex.EncodeToString(k[:]),
		"hex upper":  strings.ToUpper(hex.EncodeToString(k[:])),
		"whitespace": " " + hex.EncodeToString(k[:]) + "\n",
	}
	if good["std raw"] == good["url raw"] {
		t.Fatal("test key does not distinguish the alphabets")
	}
	for name, s := range good {
		got, err := ParseKey(s)
		if err != nil || got != k {
			t.Errorf("%s: ParseKey(%q) = %x, %v", name, s, got, err)
		}
	}

	secretish := "ZZZZsecretZZZZ"
	bad := map[string]struct{ in, want string }{
		"empty":          {"", "empty"},
		"spaces":         {"   ", "empty"},
		"31 bytes b64":   {base64.StdEncoding.EncodeToString(k[:31]), "decodes to 31 bytes"},
		"33 bytes b64":   {base64.RawURLEncoding.EncodeToString(append(k[:], 1)), "decodes to 33 bytes"},
		"16 bytes b64":   {base64.StdEncoding.EncodeToString(k[:16]), "decodes to 16 bytes"},
		"63 hex":         {hex.EncodeToString(k[:])[:63], "neither base64 nor"},
		"62 hex":         {hex.EncodeToString(k[:31]), "neither base64 nor"},
		"66 hex":         {hex.EncodeToString(append(k[:], 1)), "neither base64 nor"},
		"64 non-hex":     {strings.Repeat("g", 64), "not valid hex"},
		"mixed alphabet": {"+" + base64.RawURLEncoding.EncodeToString(k[:])[1:], "neither base64 nor"},
		"garbage":        {secretish + "!!", "neither base64 nor"},
	}
	for name, c := range bad {
		_, err := ParseKey(c.in)
		if err == nil {
			t.Errorf("%s: ParseKey(%q) succeeded", name, c.in)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), EnvKey) {
			t.Errorf("%s: error %q lacks %q or %s", name, err, c.want, EnvKey)
		}
		if strings.TrimSpace(c.in) != "" && strings.Contains(err.Error(), strings.TrimSpace(c.in)) {
			t.Errorf("%s: error %q contains the input", name, err)
		}
	}
}

// nonTTY returns a file that is not a terminal.
func nonTTY(t *testing.T) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r
}

func unsetEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{EnvKey, EnvPassphrase} {
		t.Setenv(k, "") // restores the old value after the test
		os.Unsetenv(k)
	}
}

func TestResolveEnvPrecedence(t *testing.T) {
	k := testKey()
	unsetEnv(t)
	t.Setenv(EnvKey, base64.StdEncoding.EncodeToString(k[:]))
	t.Setenv(EnvPassphrase, "env pass")

	// Both set: the key wins.
	v, h, err := ResolveNew(nonTTY(t), nil, testParams)
	if err != nil {
		t.Fatal(err)
	}
	if h.Mode() != ModeRawKey {
		t.Fatalf("mode %v, want raw key", h.Mode())
	}
	sealed := v.Seal(nil, []byte("x"))
	direct, err := OpenWithKey(k, h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Open(nil, sealed); err != nil {
		t.Fatal(err)
	}
	v2, err := ResolveExisting(nonTTY(t), nil, h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2.Open(nil, sealed); err != nil {
		t.Fatal(err)
	}

	// Only the passphrase.
	os.Unsetenv(EnvKey)
	v, ph, err := ResolveNew(nonTTY(t), nil, testParams)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := ph.Params(); !ok || p != testParams {
		t.Fatalf("header %v %+v", ph.Mode(), p)
	}
	if _, err := OpenWithPassphrase([]byte("env pass"), ph); err != nil {
		t.Fatalf("env passphrase not used: %v", err)
	}
	v2, err = ResolveExisting(nonTTY(t), nil, ph)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2.Open(nil, v.Seal(nil, []byte("y"))); err != nil {
		t.Fatal(err)
	}
	// A raw-key store needs the key.
	if _, err := ResolveExisting(nonTTY(t), nil, h); !errors.Is(err, ErrWrongMode) || !strings.Contains(err.Error(), EnvKey) {
		t.Fatalf("raw-key store with passphrase env: %v", err)
	}

	// Wrong passphrase from env.
	t.Setenv(EnvPassphrase, "other")
	if _, err := ResolveExisting(nonTTY(t), nil, ph); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong env passphrase: %v", err)
	}

	// The key is tried first even for a passphrase store, and says so.
	t.Setenv(EnvKey, hex.EncodeToString(k[:]))
	if _, err := ResolveExisting(nonTTY(t), nil, ph); !errors.Is(err, ErrWrongMode) {
		t.Fatalf("key env with passphrase store: %v", err)
	}
	// A bad key is an error, not a fallback to the passphrase.
	t.Setenv(EnvKey, "tooshort")
	if _, _, err := ResolveNew(nonTTY(t), nil, testParams); err == nil || !strings.Contains(err.Error(), EnvKey) {
		t.Fatalf("bad key env: %v", err)
	}
	// Wrong key.
	var k2 [32]byte
	k2[0] = 9
	t.Setenv(EnvKey, hex.EncodeToString(k2[:]))
	if _, err := ResolveExisting(nonTTY(t), nil, h); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong env key: %v", err)
	}
}

func TestResolveEmptyPassphraseEnv(t *testing.T) {
	unsetEnv(t)
	t.Setenv(EnvPassphrase, "")
	_, _, err := ResolveNew(nonTTY(t), nil, testParams)
	if err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("err = %v", err)
	}
}

func TestResolveNoTTYNoEnv(t *testing.T) {
	unsetEnv(t)
	for _, stdin := range []*os.File{nonTTY(t), nil} {
		_, _, err := ResolveNew(stdin, nil, testParams)
		if !errors.Is(err, ErrNoSecret) {
			t.Fatalf("ResolveNew: err = %v", err)
		}
		for _, want := range []string{EnvPassphrase, EnvKey, "not a terminal"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
		_, h := mustNew(t, "pw")
		if _, err := ResolveExisting(stdin, nil, h); !errors.Is(err, ErrNoSecret) {
			t.Fatalf("ResolveExisting: err = %v", err)
		}
	}
}

// fakeTTY answers prompts from a list. The real terminal path is tested
// in pty_linux_test.go.
func fakeTTY(answers ...string) (env, *bytes.Buffer) {
	var stderr bytes.Buffer
	return env{
		lookup: func(string) (string, bool) { return "", false },
		isTTY:  true,
		readPassword: func() ([]byte, error) {
			if len(answers) == 0 {
				return nil, errors.New("no more input")
			}
			a := answers[0]
			answers = answers[1:]
			return []byte(a), nil
		},
		stderr: &stderr,
	}, &stderr
}

func TestPromptLogic(t *testing.T) {
	e, stderr := fakeTTY("hunter2", "hunter2")
	_, h, err := e.resolveNew(testParams)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(stderr.String(), "assphrase") != 2 {
		t.Fatalf("prompts: %q", stderr.String())
	}
	if strings.Contains(stderr.String(), "hunter2") {
		t.Fatal("passphrase written to stderr")
	}
	if _, err := OpenWithPassphrase([]byte("hunter2"), h); err != nil {
		t.Fatal(err)
	}

	e, _ = fakeTTY("hunter2", "hunter3")
	if _, _, err := e.resolveNew(testParams); err == nil || !strings.Contains(err.Error(), "differ") {
		t.Fatalf("mismatch: %v", err)
	}
	e, _ = fakeTTY("")
	if _, _, err := e.resolveNew(testParams); !errors.Is(err, ErrEmptyPassphrase) {
		t.Fatalf("empty: %v", err)
	}
	e, _ = fakeTTY("hunter2")
	if _, _, err := e.resolveNew(testParams); err == nil {
		t.Fatal("EOF on second prompt accepted")
	}

	e, _ = fakeTTY("hunter2")
	if _, err := e.resolveExisting(h); err != nil {
		t.Fatal(err)
	}
	e, _ = fakeTTY("hunter3")
	if _, err := e.resolveExisting(h); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong: %v", err)
	}
	// A raw-key store is never prompted for.
	_, rh, _ := NewFromKey(testKey())
	e, stderr = fakeTTY("hunter2")
	if _, err := e.resolveExisting(rh); !errors.Is(err, ErrWrongMode) || stderr.Len() != 0 {
		t.Fatalf("raw-key store from prompt: %v, stderr %q", err, stderr.String())
	}
}
