package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/magpie-im/magpie/internal/pgtest"
	"github.com/magpie-im/magpie/invite"
)

// Two servers on one PostgreSQL database (--store postgres://…), each with
// a data directory holding a copy of the server key, as an operator sets
// up a cluster: a sign-up code made with magpie invite --signup --store
// works on either and is spent once across both, and a file sent through
// one is received through the other after the first is gone.
func TestClusterSharesSignupCodesAndAttachments(t *testing.T) {
	url := pgtest.NewDatabase(t, "cmdmagpie", func(string) error { return nil })
	dataA, dataB := t.TempDir(), t.TempDir()
	serve := func(data string) *server {
		t.Helper()
		addr := freeAddr(t)
		p := start(t, nil, "serve", "--data", data, "--listen", addr, "--store", url, "--signup", "invite", "--admin", "")
		inv, ok := p.waitLine("magpie://")
		if !ok {
			t.Fatalf("serve printed no invite:\n%s", p)
		}
		banner := p.stdout.String()
		if !strings.Contains(banner, "attachments and sign-up codes in PostgreSQL") || strings.Contains(banner, url) {
			t.Fatalf("the banner does not say where the data is, or shows the URL:\n%s", banner)
		}
		return &server{proc: p, data: data, addrs: []string{addr}, invite: inv}
	}
	a := serve(dataA)
	key, err := os.ReadFile(filepath.Join(dataA, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataB, "server.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	b := serve(dataB)

	// A code of one use for the cluster, in each server's invite.
	withCode := func(s *server, code []byte) string {
		inv, err := invite.Parse(s.invite)
		if err != nil {
			t.Fatal(err)
		}
		inv.SignupCode = code
		return inv.String()
	}
	newCode := func(uses string) []byte {
		out := strings.TrimSpace(mustRun(t, "invite", "--data", dataA, "--signup", "--uses", uses, "--store", url).stdout)
		inv, err := invite.Parse(out)
		if err != nil || len(inv.SignupCode) == 0 {
			t.Fatalf("invite --signup --store printed %q (%v)", out, err)
		}
		return inv.SignupCode
	}
	home := func(name, inv string) string {
		h := filepath.Join(t.TempDir(), name)
		mustRun(t, "--home", h, "init", "--invite", inv)
		return h
	}
	once := newCode("1")
	alice := home("alice", withCode(a, once))
	mustRun(t, "--home", alice, "register", "alice")
	mustFail(t, []string{"used up"}, "--home", home("bob", withCode(b, once)), "register", "bob")
	// A code in a data directory is not the cluster's.
	local := strings.TrimSpace(mustRun(t, "invite", "--data", dataB, "--signup").stdout)
	mustFail(t, []string{"used up"}, "--home", home("mallory", local), "register", "mallory")
	twice := newCode("2")
	carol := home("carol", withCode(b, twice))
	mustRun(t, "--home", carol, "register", "carol")
	mustRun(t, "--home", home("dave", withCode(a, twice)), "register", "dave")

	// alice (on a) sends carol (on b) a file; a goes before carol looks.
	content := make([]byte, 3<<20+5)
	rand.Read(content)
	file := filepath.Join(t.TempDir(), "photo.jpg")
	if err := os.WriteFile(file, content, 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "--home", alice, "send", "carol", "--file", file, "--caption", "from a")
	a.stop(t)
	downloads := t.TempDir()
	evs := messages(decodeLines[event](t, mustRun(t, "--home", carol, "inbox", "--json", "--downloads", downloads).stdout))
	if len(evs) != 1 || evs[0].Attachment == nil || evs[0].Attachment.State != "saved" || evs[0].Text != "from a" {
		t.Fatalf("carol's inbox through b: %+v", evs)
	}
	if got, err := os.ReadFile(evs[0].Attachment.Path); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("the file carol saved differs (%v)", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dataA, "blobs")); len(entries) > 0 {
		t.Errorf("a kept attachments in its data directory: %v", entries)
	}
	b.stop(t)
}
