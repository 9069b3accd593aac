package main

// The client engine through the real binary: one engine per home that
// other commands share, nothing acknowledged lost to a full disk, Ctrl-C or
// SIGKILL, idempotent sends, and output that scripts can trust.

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/invite"
)

// via returns an invite for srv that reaches it only through addr.
func via(t *testing.T, srv *server, addr string) string {
	t.Helper()
	inv, err := invite.Parse(srv.invite)
	if err != nil {
		t.Fatal(err)
	}
	return invite.Invite{ServerKey: inv.ServerKey, Addrs: []string{addr}}.String()
}

// newUserVia makes a client home for name that reaches srv through addr.
func newUserVia(t *testing.T, srv *server, name, addr string) string {
	t.Helper()
	home := filepath.Join(t.TempDir(), name)
	mustRun(t, "--home", home, "init", "--invite", via(t, srv, addr))
	mustRun(t, "--home", home, "register", name)
	return home
}

func writeRandom(t *testing.T, name string, n int) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, data
}

// historyWith is the history of home's conversation with peer.
func historyWith(t *testing.T, home, peer string) []event {
	t.Helper()
	return decodeLines[event](t, mustRun(t, "--home", home, "history", peer, "--json", "--limit", "100000").stdout)
}

// Any other command on the same home uses listen's engine: none of them
// knocks listen offline, and listen keeps receiving throughout.
func TestOtherCommandsLeaveListenOnline(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	alice := newUser(t, srv, "alice")
	bob := newUser(t, srv, "bob")
	listen := start(t, nil, "--home", bob, "listen", "--json")
	waitOnline(t, listen)
	for i := range 3 {
		mustRun(t, "--home", bob, "send", "alice", fmt.Sprintf("from bob %d", i))
		mustRun(t, "--home", bob, "lookup", "alice")
		mustRun(t, "--home", bob, "whoami")
		mustRun(t, "--home", bob, "history", "alice")
		mustRun(t, "--home", bob, "typing", "alice")
		mustRun(t, "--home", alice, "send", "bob", fmt.Sprintf("from alice %d", i))
	}
	waitEvent(t, listen, "from alice 2")
	var states []string
	for _, e := range decodeLines[event](t, listen.stdout.String()) {
		if e.Event == "state" {
			states = append(states, e.State)
		}
	}
	if strings.Join(states, " ") != "connecting online" {
		t.Errorf("listen's connection changed while other commands ran: %v\n%s", states, listen)
	}
	if n := len(messages(decodeLines[event](t, listen.stdout.String()))); n != 3 {
		t.Errorf("listen printed %d of alice's 3 messages", n)
	}
}

// A file that arrives while listen runs is saved (and listen says where),
// and the sender learns it was delivered.
func TestListenSavesFiles(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	alice := newUser(t, srv, "alice")
	bob := newUser(t, srv, "bob")
	downloads := t.TempDir()
	listen := start(t, nil, "--home", bob, "listen", "--json", "--downloads", downloads)
	waitOnline(t, listen)
	file, data := writeRandom(t, "pic.bin", 300<<10)
	mustRun(t, "--home", alice, "send", "bob", "--file", file, "--caption", "a picture")
	var saved string
	if !listen.stdout.waitFor(eventTimeout, listen.done, func(s string) bool {
		for _, e := range decodeLines[event](t, s) {
			if e.Event == "update" && e.Attachment != nil && e.Attachment.State == "saved" {
				saved = e.Attachment.Path
				return true
			}
		}
		return false
	}) {
		t.Fatalf("listen did not save the file:\n%s", listen)
	}
	if got, err := os.ReadFile(saved); err != nil || !bytes.Equal(got, data) || filepath.Dir(saved) != downloads {
		t.Fatalf("saved %s: %v", saved, err)
	}
	listen.signal(os.Interrupt)
	listen.waitExit(10 * time.Second)
	mustRun(t, "--home", alice, "inbox")
	if h := historyWith(t, alice, "bob"); len(h) != 1 || (h[0].State != "delivered" && h[0].State != "read") {
		t.Errorf("alice's history: %+v", h)
	}
}

// A download cut off by Ctrl-C, then by SIGKILL, resumes with the next
// command and is saved once, whole. The message was stored (with its
// download job) before it was acknowledged, so the sender is told it was
// delivered only because it was safe here.
func TestInterruptedDownloadResumes(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	alice := newUser(t, srv, "alice")
	slow := servertest.StartRelay(t, srv.addrs[0])
	slow.Throttle(2 << 20)
	bob := newUserVia(t, srv, "bob", slow.Addr())
	file, data := writeRandom(t, "film.bin", 24<<20)
	mustRun(t, "--home", alice, "send", "bob", "--file", file)
	downloads := t.TempDir()
	partSize := func() int64 {
		m, _ := filepath.Glob(filepath.Join(downloads, ".*.part"))
		var n int64
		for _, p := range m {
			if fi, err := os.Stat(p); err == nil {
				n += fi.Size()
			}
		}
		return n
	}
	for i, sig := range []os.Signal{os.Interrupt, syscall.SIGKILL} {
		inbox := start(t, nil, "--home", bob, "inbox", "--downloads", downloads)
		before := partSize()
		for deadline := time.Now().Add(60 * time.Second); partSize() < before+2<<20; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) || inbox.exited() {
				t.Fatalf("round %d: the download did not move on:\n%s", i, inbox)
			}
		}
		inbox.signal(sig)
		if _, ok := inbox.waitExit(20 * time.Second); !ok {
			t.Fatalf("round %d: inbox did not stop after %v:\n%s", i, sig, inbox)
		}
	}
	if partSize() == 0 {
		t.Fatal("no partial download was left to resume")
	}
	slow.Throttle(0) // full speed
	mustRun(t, "--home", bob, "inbox", "--downloads", downloads)
	h := historyWith(t, bob, "alice")
	if len(h) != 1 || h[0].Attachment == nil || h[0].Attachment.State != "saved" {
		t.Fatalf("bob's history: %+v", h)
	}
	if got, err := os.ReadFile(h[0].Attachment.Path); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the saved file differs (%v)", err)
	}
	files, _ := os.ReadDir(downloads)
	if len(files) != 1 {
		t.Errorf("downloads holds %d files, want the one: %v", len(files), files)
	}
}

// An upload cut off by Ctrl-C, and again by SIGKILL, resumes with the next
// command that runs the engine, and the recipient gets the file once.
func TestInterruptedUploadResumes(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	bob := newUser(t, srv, "bob")
	slow := servertest.StartRelay(t, srv.addrs[0])
	alice := newUserVia(t, srv, "alice", slow.Addr())
	file, data := writeRandom(t, "report.bin", 16<<20)
	// Slow the server's confirmations, so the upload is still going.
	slow.Throttle(64 << 10)
	send := start(t, nil, "--home", alice, "send", "bob", "--file", file, "--json")
	time.Sleep(2 * time.Second)
	send.signal(os.Interrupt)
	code, ok := send.waitExit(20 * time.Second)
	if !ok || code == 0 {
		t.Fatalf("send interrupted mid-upload: exit %d (%v), want non-zero:\n%s", code, ok, send)
	}
	out := decodeLines[event](t, mustRun(t, "--home", alice, "outbox", "--json").stdout)
	if len(out) != 1 || out[0].State != "uploading" {
		t.Fatalf("alice's outbox after the interruption: %+v", out)
	}
	// The next command's engine takes the upload up again, and is killed.
	inbox := start(t, nil, "--home", alice, "inbox")
	time.Sleep(2 * time.Second)
	inbox.kill()
	slow.Throttle(0)
	mustRun(t, "--home", alice, "inbox") // runs the engine: the upload resumes and the message goes
	if out := decodeLines[event](t, mustRun(t, "--home", alice, "outbox", "--json").stdout); len(out) != 0 {
		t.Fatalf("alice's outbox after a sync: %+v", out)
	}
	mustRun(t, "--home", bob, "inbox")
	h := historyWith(t, bob, "alice")
	if len(h) != 1 || h[0].Attachment == nil || h[0].Attachment.State != "saved" {
		t.Fatalf("bob's history: %+v", h)
	}
	if got, err := os.ReadFile(h[0].Attachment.Path); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the received file differs (%v)", err)
	}
}

// A message sent while the server is down is queued (exit 4, status
// "queued"); sending it again does not queue a second copy; it goes out by
// itself once the server is back, and arrives once. A queued message can be
// cancelled and then never arrives.
func TestQueuedSendIsIdempotent(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	alice := newUser(t, srv, "alice")
	bob := newUser(t, srv, "bob")
	srv.kill()
	srv.waitExit(10 * time.Second)
	var first int
	for range 2 {
		r := run(t, "--home", alice, "send", "bob", "written while offline", "--json")
		var got struct {
			Status  string `json:"status"`
			Message event  `json:"message"`
		}
		if r.code != ExitQueuedForTest || json.Unmarshal([]byte(r.stdout), &got) != nil || got.Status != "queued" || got.Message.State != "queued" {
			t.Fatalf("send while offline: want exit %d and status queued:\n%s", ExitQueuedForTest, r)
		}
		if first == 0 {
			first = int(got.Message.Seq)
		} else if int(got.Message.Seq) != first {
			t.Errorf("the same text queued twice: messages %d and %d", first, got.Message.Seq)
		}
	}
	r := run(t, "--home", alice, "send", "bob", "never mind")
	if r.code != ExitQueuedForTest || !strings.Contains(r.stdout, "Queued") || !strings.Contains(r.stdout, "magpie --home "+alice+" outbox") {
		t.Fatalf("text send while offline:\n%s", r)
	}
	out := decodeLines[event](t, mustRun(t, "--home", alice, "outbox", "--json").stdout)
	if len(out) != 2 {
		t.Fatalf("outbox: %+v", out)
	}
	mustRun(t, "--home", alice, "outbox", "cancel", fmt.Sprint(out[1].Seq))
	if r := run(t, "--home", alice, "outbox", "cancel", fmt.Sprint(out[1].Seq)); r.code != ExitNotFoundForTest {
		t.Errorf("cancelling it twice: want exit %d:\n%s", ExitNotFoundForTest, r)
	}
	srv = srv.restart(t)
	mustRun(t, "--home", alice, "inbox")
	mustRun(t, "--home", bob, "inbox")
	h := historyWith(t, bob, "alice")
	if len(h) != 1 || h[0].Text != "written while offline" {
		t.Fatalf("bob's history: %+v", h)
	}
	if r := run(t, "--home", alice, "outbox", "cancel", fmt.Sprint(first)); r.code == 0 || !strings.Contains(r.stderr, "already sent") {
		t.Errorf("cancelling a sent message:\n%s", r)
	}
	srv.stop(t)
}

// The same exit codes as internal/cli (package main cannot import it).
const (
	ExitQueuedForTest   = 4
	ExitNotFoundForTest = 3
	ExitUsageForTest    = 2
)

// Scripts get one JSON object per line from every command, errors included,
// with a stable code and the documented exit codes; people get hints they
// can paste, which carry --home.
func TestCLIForScripts(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	alice := newUser(t, srv, "alice")
	newUser(t, srv, "bob")
	type jsonError struct {
		Error struct {
			Code, Message, Hint string
		} `json:"error"`
	}
	for _, c := range []struct {
		args []string
		exit int
		code string
		hint string
	}{
		{[]string{"send", "nobody", "hi"}, ExitNotFoundForTest, "unknown_user", "lookup nobody"},
		{[]string{"send", "bob", "  "}, ExitUsageForTest, "empty_message", ""},
		{[]string{"send", "bob", strings.Repeat("x", 65<<10)}, 1, "too_large", "send bob --file PATH"},
		{[]string{"send", "bob"}, ExitUsageForTest, "usage", ""},
		{[]string{"verify", "bob", "--confirm"}, 1, "not_shown", "verify bob"},
		{[]string{"lookup", "nobody"}, ExitNotFoundForTest, "unknown_user", ""},
		{[]string{"history", "bob", "--bogus"}, ExitUsageForTest, "usage", ""},
	} {
		r := run(t, append([]string{"--home", alice}, append(c.args, "--json")...)...)
		lines := completeLines(r.stdout)
		var e jsonError
		if r.code != c.exit || len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &e) != nil || e.Error.Code != c.code {
			t.Errorf("%v: want exit %d and one JSON error with code %q:\n%s", c.args, c.exit, c.code, r)
			continue
		}
		if c.hint != "" && !strings.Contains(e.Error.Hint, "magpie --home "+alice+" "+c.hint) {
			t.Errorf("%v: hint %q does not carry --home and %q", c.args, e.Error.Hint, c.hint)
		}
	}
	// Every command that prints, prints JSON lines.
	for _, args := range [][]string{
		{"whoami"}, {"history"}, {"history", "bob"}, {"outbox"}, {"settings"}, {"relays", "list"},
		{"lookup", "bob"}, {"verify", "bob"}, {"probe", "--timeout", "2s"}, {"version"}, {"inbox"},
	} {
		r := mustRun(t, append([]string{"--home", alice}, append(args, "--json")...)...)
		for _, l := range completeLines(r.stdout) {
			var v map[string]any
			if err := json.Unmarshal([]byte(l), &v); err != nil {
				t.Errorf("%v --json printed a line that is not a JSON object: %q", args, l)
			}
		}
	}
	if r := mustRun(t, "version"); !strings.HasPrefix(r.stdout, "magpie ") {
		t.Errorf("magpie version: %q", r.stdout)
	}
	// Read receipts can be turned off.
	mustRun(t, "--home", alice, "settings", "read-receipts", "off")
	var st struct {
		ReadReceipts bool `json:"read_receipts"`
	}
	if json.Unmarshal([]byte(mustRun(t, "--home", alice, "settings", "--json").stdout), &st) != nil || st.ReadReceipts {
		t.Errorf("read receipts still on after turning them off")
	}
}

// mounted makes a tmpfs of size at dir, or skips the test where that is
// not possible (not root), unless MAGPIE_REQUIRE_TMPFS is set (CI).
func mounted(t *testing.T, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		if os.Getenv("MAGPIE_REQUIRE_TMPFS") != "" {
			t.Fatalf("mounting a tmpfs: %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs here (%v: %s); CI runs this as root", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
}

// fill takes all but about keep bytes of the filesystem that holds dir.
func fill(t *testing.T, dir string, keep int64) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n := free - keep; n > 0 {
		if _, err := f.Write(make([]byte, n)); err != nil {
			t.Logf("filling: %v", err)
		}
	}
	return path
}

// With the client's home on a full disk, nothing is acknowledged that was
// not stored: the sender is never told "delivered" for a message the
// recipient could not keep, and once there is space every message arrives
// exactly once. An attachment that does not fit waits for space.
func TestFullClientDiskLosesNothing(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	alice := newUser(t, srv, "alice")
	disk := filepath.Join(t.TempDir(), "disk")
	mounted(t, disk, "8m")
	bob := filepath.Join(disk, "bob")
	mustRun(t, "--home", bob, "init", "--invite", srv.invite)
	mustRun(t, "--home", bob, "register", "bob")
	filler := fill(t, disk, 400<<10)

	const n = 10
	for i := range n {
		mustRun(t, "--home", alice, "send", "bob", fmt.Sprintf("%02d %s", i, strings.Repeat("lorem ipsum ", 3000)))
	}
	r := run(t, "--home", bob, "inbox", "--json")
	summary := func() string {
		var b strings.Builder
		for _, e := range decodeLines[map[string]any](t, r.stdout) {
			if e["error"] != nil {
				fmt.Fprintf(&b, "error %v\n", e["error"])
			} else {
				fmt.Fprintf(&b, "message %v %v\n", e["seq"], e["state"])
			}
		}
		return b.String() + "stderr: " + r.stderr
	}
	if r.code == 0 {
		t.Errorf("inbox on a full disk exited 0:\n%s", summary())
	}
	if !strings.Contains(r.stdout+r.stderr, "storage_full") && !strings.Contains(r.stdout+r.stderr, "disk") {
		t.Errorf("inbox on a full disk does not say the disk is full:\n%s", summary())
	}
	stored := len(historyWith(t, bob, "alice"))
	mustRun(t, "--home", alice, "inbox")
	delivered := 0
	for _, m := range historyWith(t, alice, "bob") {
		if m.State == "delivered" || m.State == "read" {
			delivered++
		}
	}
	if delivered > stored {
		t.Errorf("alice was told %d messages were delivered, bob stored %d", delivered, stored)
	}
	if stored == n {
		t.Fatalf("the disk never filled up: all %d messages were stored", n)
	}
	t.Logf("on the full disk bob stored %d of %d, alice saw %d delivered", stored, n, delivered)

	os.Remove(filler)
	mustRun(t, "--home", bob, "inbox")
	h := historyWith(t, bob, "alice")
	seen := map[string]int{}
	for _, m := range h {
		seen[m.Text[:2]]++
	}
	if len(h) != n || len(seen) != n {
		t.Errorf("after freeing space bob has %d messages (%d distinct), want %d once each", len(h), len(seen), n)
	}

	// An attachment larger than the space left: its message is stored (and
	// acknowledged), its download waits, and once there is space it is
	// saved, whole.
	filler = fill(t, disk, 400<<10)
	file, data := writeRandom(t, "scan.bin", 2<<20)
	mustRun(t, "--home", alice, "send", "bob", "--file", file)
	mustRun(t, "--home", bob, "inbox") // the download waits for space: not a failure
	h = historyWith(t, bob, "alice")
	if a := h[len(h)-1].Attachment; a == nil || a.State == "saved" || a.State == "failed" {
		t.Fatalf("the attachment on a full disk: %+v", a)
	}
	os.Remove(filler)
	mustRun(t, "--home", bob, "inbox")
	h = historyWith(t, bob, "alice")
	a := h[len(h)-1].Attachment
	if a == nil || a.State != "saved" {
		t.Fatalf("after freeing space the attachment is %+v", a)
	}
	if got, err := os.ReadFile(a.Path); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the saved file differs (%v)", err)
	}
}

// SIGKILL of the receiving engine while messages arrive: every message
// ends up in the history once, and no listen ever shows one twice.
func TestKill9ReceiverShowsEachOnce(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	alice := newUser(t, srv, "alice")
	bob := newUser(t, srv, "bob")
	const n = 60
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range n {
			if r := run(t, "--home", alice, "send", "bob", fmt.Sprintf("m%03d", i)); r.code != 0 {
				t.Errorf("send %d: %s", i, r)
				return
			}
		}
	}()
	shown := map[string]int{}
	for done := false; !done; {
		select {
		case <-sent:
			done = true
		default:
		}
		listen := start(t, nil, "--home", bob, "listen", "--json")
		time.Sleep(300 * time.Millisecond)
		listen.kill()
		for _, e := range messages(decodeLines[event](t, listen.stdout.String())) {
			shown[e.Text]++
		}
	}
	mustRun(t, "--home", bob, "inbox")
	h := historyWith(t, bob, "alice")
	if len(h) != n {
		t.Errorf("bob's history has %d messages, want %d", len(h), n)
	}
	for text, k := range shown {
		if k > 1 {
			t.Errorf("%s was shown %d times", text, k)
		}
	}
}
