package main

// Invites and local state verify themselves (issue 19, item 7): what a
// user sees, through the real binary, when an invite was edited, names the
// wrong server key, or the home's state is damaged.

import (
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/invite"
)

// An invite whose signed endpoint list was edited is refused by init, with
// a message that says so and what to do; nothing is set up.
func TestInitRefusesTamperedInvite(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	inv, err := invite.Parse(srv.invite)
	if err != nil || len(inv.Endpoints) == 0 {
		t.Fatalf("the banner's invite has no endpoint list: %q (%v)", srv.invite, err)
	}
	// Point the list's tcp address elsewhere (the signature then fails),
	// and serve the edited invite without its plain addresses, as a server
	// reachable only through its list would print it.
	edited := inv
	edited.Endpoints = []byte(string(inv.Endpoints))
	i := strings.Index(string(edited.Endpoints), srv.addrs[0])
	if i < 0 {
		t.Fatalf("the list does not name %s", srv.addrs[0])
	}
	edited.Endpoints[i+len(srv.addrs[0])-1] ^= 1 // another port
	edited.Addrs = nil
	for _, tampered := range []string{edited.String(), srv.invite + "&e=" + base64.RawURLEncoding.EncodeToString(inv.Endpoints)} {
		home := filepath.Join(t.TempDir(), "carol")
		r := mustFail(t, []string{"tampered", "new invite"}, "--home", home, "init", "--invite", tampered)
		if _, err := os.Stat(filepath.Join(home, client.StoreFileName)); err == nil {
			t.Errorf("init set up a home from a tampered invite:\n%s", r)
		}
	}
	srv.stop(t)
}

// A wrong server key is reported as such within a few seconds, and a
// refused connection is not blamed on the key.
func TestWrongServerKeyReportedFast(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	var key [32]byte
	rand.Read(key[:])
	wrong := invite.Invite{ServerKey: key, Addrs: srv.addrs}.String()
	home := filepath.Join(t.TempDir(), "mallory")
	mustRun(t, "--home", home, "init", "--invite", wrong)
	start := time.Now()
	r := mustFail(t, []string{"did not answer the handshake", "server key", "clock", "new invite"}, "--home", home, "register", "mallory")
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("the wrong key was reported after %v:\n%s", d, r)
	}
	// Nothing listens: that is a refusal, not a key to check.
	closed := invite.Invite{ServerKey: key, Addrs: []string{freeAddr(t)}}.String()
	home2 := filepath.Join(t.TempDir(), "nobody")
	mustRun(t, "--home", home2, "init", "--invite", closed)
	r = mustFail(t, []string{"connection refused"}, "--home", home2, "register", "nobody")
	if strings.Contains(r.stderr, "server key") {
		t.Errorf("a refused connection blamed on the server key:\n%s", r)
	}
	// The server still answers the right key, and only it.
	newUser(t, srv, "alice")
	srv.stop(t)
}

// storeDB opens a client home's store directly (no magpie process may have
// it open).
func storeDB(t *testing.T, home string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(home, client.StoreFileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// flipByte changes one byte of the value of a row of the store.
func flipByte(t *testing.T, db *sql.DB, ns, key string, at func(n int) int) {
	t.Helper()
	var v []byte
	if err := db.QueryRow(`SELECT value FROM kv WHERE ns = ? AND key = ?`, ns, key).Scan(&v); err != nil {
		t.Fatalf("%s/%s: %v", ns, key, err)
	}
	v[at(len(v))] ^= 0x40
	if _, err := db.Exec(`UPDATE kv SET value = ? WHERE ns = ? AND key = ?`, v, ns, key); err != nil {
		t.Fatal(err)
	}
}

// A damaged vault header says "corrupted" and what to do, not "wrong
// passphrase"; the right passphrase on an intact header still opens.
func TestCorruptedVaultHeaderSaysCorrupted(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	pass := []string{"MAGPIE_PASSPHRASE=correct horse battery staple"}
	for _, c := range []struct {
		name string
		at   func(n int) int
	}{
		{"check value", func(n int) int { return n - 1 }}, // reads as a wrong passphrase without the checksum
		{"magic", func(int) int { return 0 }},
	} {
		home := filepath.Join(t.TempDir(), "dave")
		if r := runEnv(t, pass, "--home", home, "init", "--invite", srv.invite); r.code != 0 {
			t.Fatalf("init: %s", r)
		}
		if r := runEnv(t, pass, "--home", home, "whoami"); r.code != 0 {
			t.Fatalf("whoami before the damage: %s", r)
		}
		flipByte(t, storeDB(t, home), "meta", "vault", c.at)
		r := runEnv(t, pass, "--home", home, "whoami")
		low := strings.ToLower(r.stderr)
		if r.code == 0 || !strings.Contains(low, "corrupted") || !strings.Contains(low, "backup") || strings.Contains(low, "wrong passphrase") {
			t.Errorf("%s damaged: %s", c.name, r)
		}
	}
	srv.stop(t)
}

// One unreadable history row is reported and skipped: the rest of the
// conversation still shows.
func TestDamagedHistoryRowIsSkipped(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	alice := newUser(t, srv, "alice")
	bob := newUser(t, srv, "bob")
	for _, text := range []string{"one", "two", "three"} {
		mustRun(t, "--home", alice, "send", "bob", text)
	}
	mustRun(t, "--home", bob, "inbox")
	db := storeDB(t, bob)
	var keys []string
	rows, err := db.Query(`SELECT key FROM kv WHERE ns = 'msg' AND key LIKE 'alice/%' ORDER BY key`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		rows.Scan(&k)
		keys = append(keys, k)
	}
	rows.Close()
	if len(keys) != 3 {
		t.Fatalf("bob's store has %d messages from alice: %q", len(keys), keys)
	}
	flipByte(t, db, "msg", keys[1], func(n int) int { return n / 2 })
	db.Close()

	r := mustRun(t, "--home", bob, "history", "alice")
	if !strings.Contains(r.stdout, "one") || !strings.Contains(r.stdout, "three") || strings.Contains(r.stdout, "two") ||
		!strings.Contains(r.stdout, "damaged") || !strings.Contains(r.stderr, "could not be read") {
		t.Errorf("history with a damaged row:\n%s", r)
	}
	evs := decodeLines[event](t, mustRun(t, "--home", bob, "history", "alice", "--json").stdout)
	if len(evs) != 3 || evs[1].State != string(client.StateUnreadable) || evs[0].Text != "one" || evs[2].Text != "three" {
		t.Errorf("history --json: %+v", evs)
	}
	// The list of conversations still reads too.
	mustRun(t, "--home", bob, "history")
	srv.stop(t)
}
