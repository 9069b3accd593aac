package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/magpie-im/magpie/internal/pgtest"
)

// TestServePostgres: serve --store postgres://… carries a message between
// two clients, and its queue survives a restart of the server.
func TestServePostgres(t *testing.T) {
	// An empty database: serve creates the schema itself.
	url := pgtest.NewDatabase(t, "cli", func(string) error { return nil })
	var srv *server
	for range 5 {
		var err error
		srv, err = startServeWith(t, t.TempDir(), []string{"--store", url}, freeAddr(t))
		if errors.Is(err, errAddrInUse) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		break
	}
	if srv == nil {
		t.Fatal("no free port after 5 tries")
	}
	if !strings.Contains(srv.stdout.String(), "accounts, queues, attachments and sign-up codes in PostgreSQL") || strings.Contains(srv.stdout.String(), url) {
		t.Errorf("banner should name PostgreSQL without its URL:\n%s", srv.stdout)
	}
	alice := newUser(t, srv, "alice")
	bob := newUser(t, srv, "bob")
	mustRun(t, "--home", alice, "send", "bob", "first")
	if m := messages(decodeLines[event](t, mustRun(t, "--home", bob, "inbox", "--json").stdout)); len(m) != 1 || m[0].Text != "first" {
		t.Fatalf("bob's inbox: %+v, want alice's first", m)
	}

	// Queued while bob is away; the server restarts before he looks.
	mustRun(t, "--home", alice, "send", "bob", "kept")
	srv.stop(t)
	srv = srv.restart(t)
	defer srv.stop(t)
	if m := messages(decodeLines[event](t, mustRun(t, "--home", bob, "inbox", "--json").stdout)); len(m) != 1 || m[0].Text != "kept" || m[0].Peer != "alice" {
		t.Fatalf("bob's inbox after the restart: %+v, want alice's kept", m)
	}
}
