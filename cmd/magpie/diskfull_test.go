package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The server's disk full is a state, not a failure: a send is refused
// with a clear code and waits on the sender's device, the server keeps
// serving what it has, it starts on a full disk, and once there is space
// the waiting message goes through by itself.
func TestServerDiskFull(t *testing.T) {
	data := filepath.Join(t.TempDir(), "srv")
	mounted(t, data, "96m")
	srv := serveOnFreePort(t, data)
	alice, bob := newUser(t, srv, "alice"), newUser(t, srv, "bob")
	mustRun(t, "--home", alice, "send", "bob", "before")
	filler := fill(t, data, 0)

	r := run(t, "--home", alice, "send", "bob", "on a full disk", "--wait", "3s", "--json")
	if r.code != 4 || !strings.Contains(r.stdout+r.stderr, "disk is full") {
		t.Fatalf("a send to a server whose disk is full: exit %d, want 4 (queued) saying the disk is full:\n%s", r.code, r)
	}
	// An upload is refused as fast, with the same words.
	doc := filepath.Join(t.TempDir(), "minutes.txt")
	if err := os.WriteFile(doc, make([]byte, 200<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	r = run(t, "--home", alice, "send", "bob", "--file", doc, "--wait", "3s", "--json")
	if r.code != 4 || !strings.Contains(r.stdout+r.stderr, "disk is full") || time.Since(began) > 20*time.Second {
		t.Fatalf("an upload to a server whose disk is full: exit %d after %v, want 4 (queued) saying the disk is full:\n%s", r.code, time.Since(began), r)
	}

	// What is stored is still read, and acknowledged (in the space the
	// store keeps for that): alice hears that bob has it. His read receipt
	// is a message like any other, refused while the disk is full, so
	// "before" is delivered, not read, and alice's message still waits.
	mustContain(t, mustRun(t, "--home", bob, "inbox"), "before")
	deadline := time.Now().Add(20 * time.Second)
	for {
		before := decodeLines[sentState](t, mustRun(t, "--home", alice, "history", "bob", "--json").stdout)
		if len(before) > 0 && before[0].Text == "before" && before[0].State == "delivered" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("want bob's acknowledgement on the full disk to reach alice (delivered), and nothing else through: %+v", before)
		}
		time.Sleep(300 * time.Millisecond)
	}

	// It starts on a full disk.
	srv.signal(syscall.SIGKILL)
	if _, ok := srv.waitExit(10 * time.Second); !ok {
		t.Fatal("serve did not exit after SIGKILL")
	}
	srv.restart(t) // serves until the test ends

	// Space returns: the waiting message goes by itself.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	listen := start(t, nil, "--home", alice, "listen")
	defer listen.kill()
	deadline = time.Now().Add(40 * time.Second)
	for !strings.Contains(mustRun(t, "--home", bob, "inbox").stdout, "on a full disk") {
		if time.Now().After(deadline) {
			t.Fatalf("the message did not arrive once there was space:\n%s", listen)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// sentState is what a test reads of a message in history --json.
type sentState struct {
	Text  string `json:"text"`
	State string `json:"state"`
}
