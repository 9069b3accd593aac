package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// dirSize sums the sizes of regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// TestAttachmentSurvivesServerRestart: `send --file` keeps going when the
// server is killed (SIGKILL) mid-upload and restarted, and exits 0 once the
// message is sent; the recipient's `inbox --json` saves the file, verified,
// into --downloads.
func TestAttachmentSurvivesServerRestart(t *testing.T) {
	data := t.TempDir()
	srv := serveOnFreePort(t, data)
	alice := newUser(t, srv, "alice")
	bob := newUser(t, srv, "bob")
	content := make([]byte, 48<<20)
	rand.Read(content)
	file := filepath.Join(t.TempDir(), "film.bin")
	if err := os.WriteFile(file, content, 0o600); err != nil {
		t.Fatal(err)
	}
	send := start(t, nil, "--home", alice, "send", "bob", "--file", file, "--caption", "the film")
	// Kill the server once part of the upload is on its disk.
	incomplete := filepath.Join(data, "blobs", "incomplete")
	for deadline := time.Now().Add(60 * time.Second); dirSize(incomplete) < 4<<20; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) || send.exited() {
			t.Fatalf("the upload never got going:\n%s", send)
		}
	}
	srv.proc.kill()
	srv.waitExit(10 * time.Second)
	time.Sleep(300 * time.Millisecond)
	srv = srv.restart(t)
	if code, ok := send.waitExit(120 * time.Second); !ok || code != 0 {
		t.Fatalf("send after the restart: %d %v\n%s", code, ok, send)
	}
	downloads := t.TempDir()
	evs := messages(decodeLines[event](t, mustRun(t, "--home", bob, "inbox", "--json", "--downloads", downloads).stdout))
	if len(evs) != 1 || evs[0].Attachment == nil || evs[0].Attachment.State != "saved" || evs[0].Attachment.Size != int64(len(content)) || evs[0].Text != "the film" {
		t.Fatalf("bob's inbox: %+v", evs)
	}
	saved := evs[0].Attachment.Path
	got, err := os.ReadFile(saved)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("the saved file differs (%v)", err)
	}
	if filepath.Dir(saved) != downloads || filepath.Base(saved) != "film.bin" {
		t.Fatalf("saved as %s", saved)
	}
	srv.stop(t)
}
