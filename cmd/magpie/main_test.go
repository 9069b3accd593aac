package main

// Process-level tests: TestMain builds the real magpie binary once and the
// tests drive it as subprocesses over loopback TCP.

import (
	"github.com/magpie-im/magpie/internal/pgtest"

	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/invite"
)

var (
	magpieBin string // the binary under test
	configDir string // XDG_CONFIG_HOME of every child
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

// testMain is goleak.VerifyTestMain with a build step around it.
func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "magpie-cmdtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	configDir = filepath.Join(dir, "config")
	magpieBin = filepath.Join(dir, "magpie")
	goBin, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "the go command is needed to build magpie:", err)
		return 1
	}
	args := []string{"build", "-o", magpieBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command(goBin, append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building magpie:", err)
		return 1
	}
	code := pgtest.Main(m) // m.Run, then stop PostgreSQL if a test started it
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	return code
}

func TestCLIConversation(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	alice := newUser(t, srv, "alice")
	bob := newUser(t, srv, "bob")

	sent := mustRun(t, "--home", alice, "send", "bob", "hello", "--json")
	var s struct {
		Status  string `json:"status"`
		Message event  `json:"message"`
	}
	if err := json.Unmarshal([]byte(sent.stdout), &s); err != nil || s.Status != "sent" || s.Message.Peer != "bob" || len(s.Message.ID) != 32 {
		t.Fatalf("send --json: %q (%v)", sent.stdout, err)
	}

	evs := decodeLines[event](t, mustRun(t, "--home", bob, "inbox", "--json").stdout)
	msgs := messages(evs)
	if len(msgs) != 1 || msgs[0].Peer != "alice" || msgs[0].Text != "hello" || msgs[0].ID != s.Message.ID {
		t.Fatalf("bob's inbox: want exactly alice's %q with id %s, got %+v", "hello", s.Message.ID, evs)
	}
	// Alice's next command learns that bob has it, and (inbox shows, so
	// marks read) that he read it.
	mustRun(t, "--home", alice, "inbox")
	type hist struct {
		Outgoing bool   `json:"outgoing"`
		Peer     string `json:"peer"`
		ID       string `json:"id"`
		Text     string `json:"text"`
		State    string `json:"state"`
	}
	ah := decodeLines[hist](t, mustRun(t, "--home", alice, "history", "bob", "--json").stdout)
	if len(ah) != 1 || ah[0] != (hist{Outgoing: true, Peer: "bob", ID: s.Message.ID, Text: "hello", State: "read"}) {
		t.Errorf("alice's history with bob: %+v", ah)
	}

	// Delivered once: a second inbox has nothing, in JSON or in text.
	if m := messages(decodeLines[event](t, mustRun(t, "--home", bob, "inbox", "--json").stdout)); len(m) != 0 {
		t.Errorf("bob's second inbox: got messages again: %+v", m)
	}
	if r := mustRun(t, "--home", bob, "inbox"); !strings.Contains(r.stdout, "No new messages") {
		t.Errorf("bob's third inbox (text) should say there is nothing new:\n%s", r)
	}
	bh := decodeLines[hist](t, mustRun(t, "--home", bob, "history", "alice", "--json").stdout)
	if len(bh) != 1 || bh[0] != (hist{Outgoing: false, Peer: "alice", ID: s.Message.ID, Text: "hello", State: "received"}) {
		t.Errorf("bob's history: %+v", bh)
	}
	convs := decodeLines[struct {
		Peer   string `json:"peer"`
		Unread int    `json:"unread"`
		Last   hist   `json:"last"`
	}](t, mustRun(t, "--home", bob, "history", "--json").stdout)
	if len(convs) != 1 || convs[0].Peer != "alice" || convs[0].Unread != 0 || convs[0].Last.Text != "hello" {
		t.Errorf("bob's conversations: %+v", convs)
	}
	if r := mustRun(t, "--home", bob, "history"); !strings.Contains(r.stdout, "hello") || !strings.Contains(r.stdout, "alice") {
		t.Errorf("bob's text history does not show the conversation:\n%s", r)
	}

	// lookup agrees with bob's own view of his key; whoami honours MAGPIE_HOME.
	var who struct {
		User       string `json:"user"`
		Device     uint32 `json:"device"`
		Registered bool   `json:"registered"`
		DeviceKey  string `json:"device_key"`
	}
	r := runEnv(t, []string{"MAGPIE_HOME=" + bob}, "whoami", "--json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &who) != nil || who.User != "bob" || !who.Registered || len(who.DeviceKey) != 64 {
		t.Fatalf("MAGPIE_HOME=bob magpie whoami --json:\n%s", r)
	}
	var lk struct {
		User    string `json:"user"`
		Devices []struct {
			Device uint32 `json:"device"`
			Key    string `json:"key"`
		} `json:"devices"`
	}
	r = mustRun(t, "--home", alice, "lookup", "bob", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &lk); err != nil {
		t.Fatalf("lookup --json: %v\n%s", err, r)
	}
	if lk.User != "bob" || len(lk.Devices) != 1 || lk.Devices[0].Device != who.Device || lk.Devices[0].Key != who.DeviceKey {
		t.Errorf("lookup bob = %+v; bob's whoami = %+v", lk, who)
	}

	// Errors: clear text on stderr, non-zero exit.
	carol := filepath.Join(t.TempDir(), "carol")
	mustRun(t, "--home", carol, "init", "--invite", srv.invite)
	mustFail(t, []string{"taken"}, "--home", carol, "register", "alice")
	mustFail(t, []string{"invalid username", "1x"}, "--home", carol, "register", "1x")
	mustFail(t, []string{"nobody", "no user"}, "--home", alice, "send", "nobody", "hi")
	mustFail(t, []string{"nobody", "no user"}, "--home", alice, "lookup", "nobody")
	mustFail(t, []string{"register"}, "--home", carol, "send", "bob", "hi") // not registered yet
	mustFail(t, []string{"already registered"}, "--home", alice, "register", "alice2")
	mustFail(t, []string{"invalid invite"}, "--home", filepath.Join(t.TempDir(), "x"), "init", "--invite", "https://example.org")
	mustFail(t, []string{"takes 2 argument"}, "--home", alice, "send", "bob")

	empty := filepath.Join(t.TempDir(), "empty")
	for _, args := range [][]string{
		{"whoami"}, {"register", "dave"}, {"send", "bob", "hi"}, {"inbox"}, {"listen"},
		{"lookup", "bob"}, {"typing", "bob"}, {"history"}, {"outbox"}, {"app", "--no-browser"},
	} {
		mustFail(t, []string{"magpie --home " + empty + " init"}, append([]string{"--home", empty}, args...)...)
	}
	if _, err := os.Stat(empty); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("client commands in an un-initialised home created it (%v)", err)
	}

	srv.stop(t)
}

func TestListenGetsMessagesLive(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	alice := newUser(t, srv, "alice")
	bob := newUser(t, srv, "bob")

	listen := start(t, nil, "--home", bob, "listen", "--json")
	waitOnline(t, listen)

	want := []string{"first", "second, with a comma", "third: ünïcödé ✓"}
	for _, text := range want {
		mustRun(t, "--home", alice, "send", "bob", text)
	}
	mustRun(t, "--home", alice, "typing", "bob")

	// Expect exactly the three messages in order and the typing indicator.
	var got []event
	ok := listen.stdout.waitFor(eventTimeout, listen.done, func(s string) bool {
		got = nil
		for _, e := range decodeLines[event](t, s) {
			if e.Event == "message" || e.Event == "typing" {
				got = append(got, e)
			}
		}
		return len(got) >= len(want)+1
	})
	if !ok {
		t.Fatalf("listen did not print 3 messages and a typing indicator within %v:\n%s", eventTimeout, listen)
	}
	for i, text := range want {
		if got[i].Event != "message" || got[i].Peer != "alice" || got[i].Text != text {
			t.Errorf("event %d: want message %q from alice, got %+v", i, text, got[i])
		}
	}
	if e := got[len(want)]; e.Event != "typing" || e.Peer != "alice" || e.Typing == nil || !*e.Typing {
		t.Errorf("event %d: want alice typing, got %+v", len(want), e)
	}
	if len(got) > len(want)+1 {
		t.Errorf("unexpected extra events: %+v", got[len(want)+1:])
	}

	listen.signal(os.Interrupt)
	if code, ok := listen.waitExit(10 * time.Second); !ok || code != 0 {
		t.Errorf("listen after SIGINT: exited=%v code=%d\n%s", ok, code, listen)
	}
	// What listen printed was acknowledged: nothing is left on the server
	// for bob, and his history has each message once.
	mustRun(t, "--home", bob, "inbox")
	h := decodeLines[event](t, mustRun(t, "--home", bob, "history", "alice", "--json").stdout)
	if len(h) != len(want) {
		t.Errorf("bob's history after listen and inbox: %+v", h)
	}
	srv.stop(t)
}

// waitOnline waits until a `listen --json` child says it is online.
func waitOnline(t *testing.T, listen *proc) {
	t.Helper()
	if !listen.stdout.waitFor(eventTimeout, listen.done, func(s string) bool {
		for _, e := range decodeLines[event](t, s) {
			if e.Event == "state" && e.State == "online" {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("listen did not get online within %v:\n%s", eventTimeout, listen)
	}
}

func TestSIGTERMGraceful(t *testing.T) {
	srv := serveOnFreePort(t, t.TempDir())
	bob := newUser(t, srv, "bob")
	// A connected client must not hold the shutdown up.
	listen := start(t, nil, "--home", bob, "listen", "--json")
	waitOnline(t, listen)

	srv.signal(syscall.SIGTERM)
	code, ok := srv.waitExit(10 * time.Second)
	if !ok {
		t.Fatalf("serve still running 10 s after SIGTERM:\n%s", srv.proc)
	}
	if code != 0 {
		t.Errorf("serve exit code after SIGTERM = %d, want 0:\n%s", code, srv.proc)
	}
	if !strings.Contains(srv.stderr.String(), "stopped") {
		t.Errorf("serve's log does not say it stopped:\n%s", srv.proc)
	}
	if listen.exited() {
		t.Errorf("listen should survive a server shutdown and keep reconnecting:\n%s", listen)
	}

	// SIGTERM as soon as the invite is printed (the banner is how a
	// supervisor or script knows the server is up). Repeated, because a
	// signal that lands before serve handles it kills it only sometimes.
	for i := range 5 {
		srv = serveOnFreePort(t, t.TempDir())
		srv.signal(syscall.SIGTERM)
		code, ok := srv.waitExit(10 * time.Second)
		if !ok || code != 0 || !strings.Contains(srv.stderr.String(), "stopped") {
			t.Fatalf("serve got SIGTERM right after printing its invite (try %d): exited=%v code=%d (-1: killed by the signal)\n%s", i+1, ok, code, srv.proc)
		}
	}
}

func TestHelpHasExamples(t *testing.T) {
	r := mustRun(t, "--help")
	var cmds []string
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	in := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Available Commands:"):
			in = true
		case in && strings.TrimSpace(line) == "":
			in = false
		case in:
			name := strings.Fields(line)[0]
			if name != "help" && name != "completion" {
				cmds = append(cmds, name)
			}
		}
	}
	for _, want := range []string{"serve", "init", "register", "send", "inbox", "listen", "lookup", "typing", "history", "whoami", "verify", "app", "outbox", "settings", "version"} {
		if !slices.Contains(cmds, want) {
			t.Errorf("magpie --help does not list %q (found %v):\n%s", want, cmds, r.stdout)
		}
	}
	for _, c := range cmds {
		r := run(t, c, "--help")
		if r.code != 0 {
			t.Errorf("%s --help: exit %d", c, r.code)
		}
		if !strings.Contains(r.stdout, "Examples:") {
			t.Errorf("%s --help has no Examples section:\n%s", c, r.stdout)
		}
		if !strings.Contains(r.stdout, "magpie "+c) {
			t.Errorf("%s --help never shows %q:\n%s", c, "magpie "+c, r.stdout)
		}
	}
}

func TestServePrintsInvite(t *testing.T) {
	data := t.TempDir()
	srv := serveOnFreePort(t, data)
	inv := checkBanner(t, srv)
	if !slices.Equal(inv.Addrs, srv.addrs) {
		t.Errorf("invite addresses %v, want the --listen address %v", inv.Addrs, srv.addrs)
	}
	srv.stop(t)
	if l := srv.stdout.lines(); len(l) == 0 || l[len(l)-1] != srv.invite {
		t.Errorf("the invite is not the banner's last line:\n%s", srv.stdout)
	}

	// The key is the server's identity: a restart on the same data keeps it.
	again := srv.restart(t)
	if inv2 := checkBanner(t, again); inv2.ServerKey != inv.ServerKey {
		t.Errorf("restart on the same --data changed the server key: %s -> %s", inv.Fingerprint(), inv2.Fingerprint())
	}
	again.stop(t)

	// Two --listen addresses: both in the invite, in order.
	var two *server
	for range 5 {
		s, err := startServe(t, t.TempDir(), freeAddr(t), freeAddr(t))
		if err == errAddrInUse {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		two = s
		break
	}
	if two == nil {
		t.Fatal("no two free ports")
	}
	inv = checkBanner(t, two)
	if !slices.Equal(inv.Addrs, two.addrs) {
		t.Errorf("invite addresses %v, want both --listen addresses %v", inv.Addrs, two.addrs)
	}
	for _, a := range two.addrs {
		if !strings.Contains(two.stdout.String(), "listening:   tcp "+a) {
			t.Errorf("banner does not say it listens on %s:\n%s", a, two.stdout)
		}
	}
	// A client can use the two-address invite.
	home := filepath.Join(t.TempDir(), "zed")
	mustRun(t, "--home", home, "init", "--invite", two.invite)
	mustRun(t, "--home", home, "register", "zed")
	two.stop(t)
}

// TestSecondServerOnTheSameDataRefused: a second `serve` on a data
// directory that a running server uses exits at once, saying why, and
// leaves the first one serving.
func TestSecondServerOnTheSameDataRefused(t *testing.T) {
	data := t.TempDir()
	srv := serveOnFreePort(t, data)
	mustFail(t, []string{"another magpie server", "data directory"}, "serve", "--data", data, "--listen", freeAddr(t))
	srv.waitServing(t)
	srv.stop(t)
}

// checkBanner parses the invite and checks that the banner shows its
// fingerprint.
func checkBanner(t *testing.T, s *server) invite.Invite {
	t.Helper()
	inv, err := invite.Parse(s.invite)
	if err != nil {
		t.Fatalf("invite line %q: %v", s.invite, err)
	}
	if inv.String() != s.invite {
		t.Errorf("invite %q does not round-trip: %q", s.invite, inv.String())
	}
	fp := inv.Fingerprint()
	if !strings.Contains(s.stdout.String(), "fingerprint: "+fp+"\n") {
		t.Errorf("banner does not show the invite's fingerprint %q:\n%s", fp, s.stdout)
	}
	return inv
}

func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--listen", "nonsense"}, []string{"nonsense", "missing port"}},
		{[]string{"--listen", "127.0.0.1:99999"}, []string{"99999", "invalid port"}},
		{[]string{"--queue-limit", "0"}, []string{"--queue-limit"}},
		{[]string{"--bogus"}, []string{"unknown flag", "--bogus"}},
		{[]string{"extra-arg"}, []string{"serve takes 0 argument"}},
	} {
		data := filepath.Join(t.TempDir(), "data")
		args := append([]string{"serve", "--data", data}, tc.args...)
		r := mustFail(t, tc.want, args...)
		if strings.Contains(r.stdout, "magpie://") {
			t.Errorf("%v printed an invite although it failed:\n%s", tc.args, r)
		}
		if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%v failed but created the data directory (%v)", tc.args, err)
		}
	}

	// A port in use.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	r := mustFail(t, []string{addr, "address already in use"}, "serve", "--data", t.TempDir(), "--listen", addr)
	if strings.Contains(r.stdout, "magpie://") {
		t.Errorf("serve printed an invite although it could not listen:\n%s", r)
	}
	// The second of two addresses in use: no half-started server.
	r = mustFail(t, []string{addr, "address already in use"}, "serve", "--data", t.TempDir(), "--listen", freeAddr(t), "--listen", addr)
	if strings.Contains(r.stdout, "magpie://") {
		t.Errorf("serve printed an invite although it could not listen on all addresses:\n%s", r)
	}
}
