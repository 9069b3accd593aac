package main

import (
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
