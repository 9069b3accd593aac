package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// A server run with --signup invite opens accounts only with a sign-up
// code, which magpie invite --signup puts in an invite, good for --uses
// accounts; the refusal says what to ask for.
func TestSignupByInvitation(t *testing.T) {
	data := t.TempDir()
	p := start(t, nil, "serve", "--data", data, "--listen", freeAddr(t), "--signup", "invite")
	plain, ok := p.waitLine("magpie://")
	if !ok {
		t.Fatalf("serve printed no invite:\n%s", p)
	}
	home := func(name, inv string) string {
		h := filepath.Join(t.TempDir(), name)
		mustRun(t, "--home", h, "init", "--invite", inv)
		return h
	}
	mustFail(t, []string{"invitation only", "invite --signup"}, "--home", home("walkin", plain), "register", "walkin")

	once := strings.TrimSpace(mustRun(t, "invite", "--data", data, "--signup").stdout)
	if !strings.Contains(once, "s=") || once == plain {
		t.Fatalf("invite --signup printed %q", once)
	}
	mustRun(t, "--home", home("alice", once), "register", "alice")
	mustFail(t, []string{"used up"}, "--home", home("bob", once), "register", "bob")

	twice := strings.TrimSpace(mustRun(t, "invite", "--data", data, "--signup", "--uses", "2").stdout)
	for _, name := range []string{"carol", "dave"} {
		mustRun(t, "--home", home(name, twice), "register", name)
	}
	mustFail(t, []string{"used up"}, "--home", home("erin", twice), "register", "erin")
	// A name already taken does not spend a use.
	again := strings.TrimSpace(mustRun(t, "invite", "--data", data, "--signup").stdout)
	mustFail(t, []string{"taken"}, "--home", home("alice2", again), "register", "alice")
	mustRun(t, "--home", home("frank", again), "register", "frank")
}

// A server run with --signup pow opens accounts to whoever solves its
// puzzle: magpie register solves it without being asked, says so on
// stderr (not with --json, whose stdout stays one JSON object), and then
// works like any account.
func TestSignupByProofOfWork(t *testing.T) {
	data := t.TempDir()
	p := start(t, nil, "serve", "--data", data, "--listen", freeAddr(t), "--signup", "pow", "--signup-pow-min", "10", "--signup-pow-max", "14")
	inv, ok := p.waitLine("magpie://")
	if !ok {
		t.Fatalf("serve printed no invite:\n%s", p)
	}
	home := func(name string) string {
		h := filepath.Join(t.TempDir(), name)
		mustRun(t, "--home", h, "init", "--invite", inv)
		return h
	}
	alice := home("alice")
	r := mustRun(t, "--home", alice, "register", "alice")
	if !strings.Contains(r.stderr, "Solving the server's sign-up puzzle (10 bits") || !strings.Contains(r.stdout, "Registered as alice") {
		t.Fatalf("register on a pow server:\n%s", r)
	}
	bob := home("bob")
	r = mustRun(t, "--home", bob, "register", "bob", "--json")
	var out struct{ User string }
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.User != "bob" || strings.Contains(r.stderr, "puzzle") {
		t.Fatalf("register --json on a pow server:\n%s", r)
	}
	mustRun(t, "--home", alice, "send", "bob", "hello")

	mustFail(t, []string{"--signup-pow-min", "40"}, "serve", "--data", t.TempDir(), "--listen", freeAddr(t), "--signup", "pow", "--signup-pow-min", "20", "--signup-pow-max", "41")
	mustFail(t, []string{"open, invite or pow"}, "serve", "--data", t.TempDir(), "--listen", freeAddr(t), "--signup", "proof")
}
