package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestVerifySafetyNumbers: both sides see the same 60-digit number and QR
// payload; --confirm marks the contact verified, but only once the number
// was shown (or its digits typed).
func TestVerifySafetyNumbers(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	alice := newUser(t, srv, "alice")
	bob := newUser(t, srv, "bob")

	type verdict struct {
		User         string `json:"user"`
		SafetyNumber string `json:"safety_number"`
		QRPayload    string `json:"qr_payload"`
		Status       string `json:"status"`
	}
	var ab, ba verdict
	if err := json.Unmarshal([]byte(mustRun(t, "--home", alice, "verify", "bob", "--json").stdout), &ab); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(mustRun(t, "--home", bob, "verify", "alice", "--json").stdout), &ba); err != nil {
		t.Fatal(err)
	}
	if len(ab.SafetyNumber) != 60 || ab.SafetyNumber != ba.SafetyNumber || ab.Status != "unverified" {
		t.Fatalf("safety numbers: alice sees %+v, bob sees %+v", ab, ba)
	}
	if ab.QRPayload == "" || ab.QRPayload == ba.QRPayload {
		t.Fatalf("QR payloads must exist and differ by side (local first): %q %q", ab.QRPayload, ba.QRPayload)
	}
	// The text form shows the digits in groups of five and a QR code.
	text := mustRun(t, "--home", alice, "verify", "bob").stdout
	if !strings.Contains(text, ab.SafetyNumber[:5]+" "+ab.SafetyNumber[5:10]) || !strings.Contains(text, "█") ||
		!strings.Contains(text, "magpie --home "+alice+" verify bob --confirm") {
		t.Fatalf("verify output:\n%s", text)
	}
	if r := mustRun(t, "--home", alice, "verify", "bob", "--confirm"); !strings.Contains(r.stdout, "now verified") {
		t.Fatalf("--confirm: %s", r)
	}
	// carol never looked at the number: a bare --confirm is refused, typed
	// digits must match, and the right ones verify.
	carol := newUser(t, srv, "carol")
	mustFail(t, []string{"not been shown", "magpie --home " + carol + " verify alice"}, "--home", carol, "verify", "alice", "--confirm")
	mustFail(t, []string{"do not match"}, "--home", carol, "verify", "alice", "--digits", strings.Repeat("0", 60))
	var ca verdict
	json.Unmarshal([]byte(mustRun(t, "--home", alice, "verify", "carol", "--json").stdout), &ca)
	mustRun(t, "--home", carol, "verify", "alice", "--digits", ca.SafetyNumber[:30]+" "+ca.SafetyNumber[30:])
	var cv verdict
	json.Unmarshal([]byte(mustRun(t, "--home", carol, "verify", "alice", "--json").stdout), &cv)
	if cv.Status != "verified" {
		t.Errorf("carol's view after typing the digits: %+v", cv)
	}
	var after verdict
	json.Unmarshal([]byte(mustRun(t, "--home", alice, "verify", "bob", "--json").stdout), &after)
	if after.Status != "verified" || after.SafetyNumber != ab.SafetyNumber {
		t.Fatalf("after confirm: %+v", after)
	}
	mustFail(t, []string{"nobody"}, "--home", alice, "verify", "nobody")
	srv.stop(t)
}

// TestPassphraseProtectedHome: a home made with MAGPIE_PASSPHRASE opens
// with it and not without it or with another.
func TestPassphraseProtectedHome(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	home := filepath.Join(t.TempDir(), "dave")
	pass := []string{"MAGPIE_PASSPHRASE=correct horse battery staple"}
	if r := runEnv(t, pass, "--home", home, "init", "--invite", srv.invite); r.code != 0 {
		t.Fatalf("init with a passphrase: %s", r)
	}
	if r := runEnv(t, pass, "--home", home, "register", "dave"); r.code != 0 {
		t.Fatalf("register: %s", r)
	}
	wrong := []string{"MAGPIE_PASSPHRASE=wrong"}
	if r := runEnv(t, wrong, "--home", home, "whoami"); r.code == 0 || !strings.Contains(strings.ToLower(r.stderr), "passphrase") {
		t.Fatalf("wrong passphrase: %s", r)
	}
	// A set but empty secret is an error, not a silent fallback (a secret
	// injection that failed must not go unnoticed).
	for _, empty := range []string{"MAGPIE_PASSPHRASE=", "MAGPIE_KEY="} {
		if r := runEnv(t, []string{empty}, "--home", home, "whoami"); r.code == 0 || !strings.Contains(r.stderr, "empty") {
			t.Fatalf("%s: %s", empty, r)
		}
	}
	if r := runEnv(t, pass, "--home", home, "whoami"); r.code != 0 || !strings.Contains(r.stdout, "dave") {
		t.Fatalf("right passphrase: %s", r)
	}
	srv.stop(t)
}
