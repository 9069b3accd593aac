package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/magpie-im/magpie/client"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Generous bounds: they only turn a hang into a failure.
const (
	cmdTimeout   = 60 * time.Second // one client command
	startTimeout = 30 * time.Second // serve printing its invite
	eventTimeout = 15 * time.Second // listen printing an event
)

// output collects what a child process writes and lets tests wait for it.
type output struct {
	mu      sync.Mutex
	buf     []byte
	changed chan struct{} // closed and replaced on every write
}

func newOutput() *output { return &output{changed: make(chan struct{})} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf = append(o.buf, p...)
	close(o.changed)
	o.changed = make(chan struct{})
	return len(p), nil
}

func (o *output) snapshot() (string, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return string(o.buf), o.changed
}

func (o *output) String() string {
	s, _ := o.snapshot()
	return s
}

// lines returns the complete (newline-terminated) lines written so far.
func (o *output) lines() []string {
	return completeLines(o.String())
}

func completeLines(s string) []string {
	i := strings.LastIndexByte(s, '\n')
	if i < 0 {
		return nil
	}
	return strings.Split(s[:i], "\n")
}

// waitFor waits until cond holds for everything written so far, the
// process exits (done closed) or timeout passes; it reports whether cond
// held.
func (o *output) waitFor(timeout time.Duration, done <-chan struct{}, cond func(string) bool) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s, changed := o.snapshot()
		if cond(s) {
			return true
		}
		select {
		case <-changed:
		case <-done:
			// Wait has returned, so all output has been copied: look once more.
			return cond(o.String())
		case <-timer.C:
			return false
		}
	}
}

// proc is a running magpie child process. It is killed when the test ends.
type proc struct {
	t      *testing.T
	args   []string
	cmd    *exec.Cmd
	stdout *output
	stderr *output
	done   chan struct{} // closed once Wait has returned
}

// childEnv is the environment of every child: no inherited MAGPIE_HOME and
// a private config directory, so a test that forgets --home cannot touch the
// real user's state. GORACE drops the race runtime's 1 s sleep at exit
// (the binary is built with -race when the tests are).
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "MAGPIE_HOME=") || strings.HasPrefix(kv, "XDG_CONFIG_HOME=") || strings.HasPrefix(kv, "GORACE=") ||
			strings.HasPrefix(kv, "MAGPIE_KEY=") || strings.HasPrefix(kv, "MAGPIE_PASSPHRASE=") {
			continue
		}
		env = append(env, kv)
	}
	// Client state is encrypted at rest; headless children take the key
	// from the environment, as a server-side bot would.
	env = append(env, "XDG_CONFIG_HOME="+configDir, "GORACE=atexit_sleep_ms=0")
	// Unless the test brings its own secret.
	if !slices.ContainsFunc(extra, func(kv string) bool {
		return strings.HasPrefix(kv, "MAGPIE_KEY=") || strings.HasPrefix(kv, "MAGPIE_PASSPHRASE=")
	}) {
		env = append(env, "MAGPIE_KEY="+testKeyHex)
	}
	return append(env, extra...)
}

func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(magpieBin, args...)
	cmd.Env = childEnv(env...)
	cmd.WaitDelay = 5 * time.Second
	p := &proc{t: t, args: args, cmd: cmd, stdout: newOutput(), stderr: newOutput(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting magpie %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if s := p.stderr.String(); strings.Contains(s, "DATA RACE") {
			t.Errorf("magpie %s reported a data race:\n%s", strings.Join(args, " "), s)
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL (if still running) and waits for the process to be reaped.
func (p *proc) kill() {
	if !p.exited() {
		p.cmd.Process.Kill()
	}
	<-p.done
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// waitExit waits for the process to exit and returns its exit code; ok is
// false after timeout.
func (p *proc) waitExit(timeout time.Duration) (code int, ok bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return -1, false
	}
}

func (p *proc) String() string {
	return fmt.Sprintf("magpie %s\n--- stdout:\n%s--- stderr:\n%s", strings.Join(p.args, " "), p.stdout, p.stderr)
}

// result is a finished client command.
type result struct {
	args   []string
	stdout string
	stderr string
	code   int
}

func (r result) String() string {
	return fmt.Sprintf("magpie %s (exit %d)\n--- stdout:\n%s--- stderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// run runs magpie with args to completion.
func run(t *testing.T, args ...string) result { t.Helper(); return runEnv(t, nil, args...) }

func runEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	p := start(t, env, args...)
	code, ok := p.waitExit(cmdTimeout)
	if !ok {
		p.kill()
		t.Fatalf("did not exit within %v:\n%s", cmdTimeout, p)
	}
	return result{args: args, stdout: p.stdout.String(), stderr: p.stderr.String(), code: code}
}

// mustRun runs magpie with args and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) result {
	t.Helper()
	r := run(t, args...)
	if r.code != 0 {
		t.Fatalf("expected exit 0:\n%s", r)
	}
	return r
}

// mustFail runs magpie with args, expects a non-zero exit, and checks that
// stderr contains every one of want (case-insensitive).
func mustFail(t *testing.T, want []string, args ...string) result {
	t.Helper()
	r := run(t, args...)
	if r.code == 0 {
		t.Errorf("expected a non-zero exit:\n%s", r)
		return r
	}
	for _, w := range want {
		if !strings.Contains(strings.ToLower(r.stderr), strings.ToLower(w)) {
			t.Errorf("stderr does not mention %q:\n%s", w, r)
		}
	}
	return r
}

// event is one line of `inbox --json` or `history --json` (a message) or
// of `listen --json` (an event, named by Event, with its data's fields).
type event struct {
	Event      string      `json:"event"` // listen only: message, update, state, typing, …
	Seq        uint64      `json:"seq"`
	Peer       string      `json:"peer"`
	ID         string      `json:"id"`
	Text       string      `json:"text"`
	Outgoing   bool        `json:"outgoing"`
	State      string      `json:"state"`
	Typing     *bool       `json:"typing"`
	Error      string      `json:"error"`
	Attachment *attachment `json:"attachment"`
}

type attachment struct {
	Name  string `json:"name"`
	Size  int64  `json:"size"`
	State string `json:"state"`
	Path  string `json:"path"`
	Error string `json:"error"`
}

// decodeLines parses one JSON object per line into T.
func decodeLines[T any](t *testing.T, s string) []T {
	t.Helper()
	var out []T
	for _, line := range completeLines(s) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var v T
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("not a JSON object: %q: %v", line, err)
		}
		out = append(out, v)
	}
	return out
}

// messages keeps the incoming messages: the lines of inbox --json, or the
// message events of listen --json.
func messages(evs []event) []event {
	var out []event
	for _, e := range evs {
		if (e.Event == "" || e.Event == "message") && !e.Outgoing {
			out = append(out, e)
		}
	}
	return out
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitLine waits up to startTimeout for a complete stdout line that starts
// with prefix (an invite, a relay link) and returns it; false if the
// process exited or the time ran out first.
func (p *proc) waitLine(prefix string) (string, bool) {
	var line string
	ok := p.stdout.waitFor(startTimeout, p.done, func(s string) bool {
		for _, l := range completeLines(s) {
			if strings.HasPrefix(l, prefix) {
				line = l
				return true
			}
		}
		return false
	})
	return line, ok
}

// server is a running `magpie serve`.
type server struct {
	*proc
	data   string
	addrs  []string
	extra  []string // more serve flags, kept on restart
	invite string   // the banner's last line
}

var errAddrInUse = errors.New("address already in use")

// startServe starts `magpie serve --data data --listen addr...` and waits
// for the invite line. It returns errAddrInUse if a port was taken.
func startServe(t *testing.T, data string, addrs ...string) (*server, error) {
	t.Helper()
	return startServeWith(t, data, nil, addrs...)
}

// startServeWith is startServe with more serve flags.
func startServeWith(t *testing.T, data string, extra []string, addrs ...string) (*server, error) {
	t.Helper()
	args := append([]string{"serve", "--data", data}, extra...)
	for _, a := range addrs {
		args = append(args, "--listen", a)
	}
	p := start(t, nil, args...)
	inv, ok := p.waitLine("magpie://")
	if !ok {
		p.kill()
		if strings.Contains(p.stderr.String(), "address already in use") {
			return nil, errAddrInUse
		}
		return nil, fmt.Errorf("serve printed no invite:\n%s", p)
	}
	return &server{proc: p, data: data, addrs: addrs, extra: extra, invite: inv}, nil
}

// serveOnFreePort starts a server on a fresh loopback port in data,
// retrying if the port was taken meanwhile.
func serveOnFreePort(t *testing.T, data string) *server {
	t.Helper()
	return serveOnFreePortWith(t, data, nil)
}

// serveOnFreePortWith is serveOnFreePort with more flags for serve.
func serveOnFreePortWith(t *testing.T, data string, args []string) *server {
	t.Helper()
	for range 5 {
		s, err := startServeWith(t, data, args, freeAddr(t))
		if errors.Is(err, errAddrInUse) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Fatal("no free port after 5 tries")
	return nil
}

// restart starts a new server on the same data directory and addresses
// (after the old one has exited), retrying briefly if the port is not yet
// free again.
func (s *server) restart(t *testing.T) *server {
	t.Helper()
	if !s.exited() {
		t.Fatal("restart of a running server")
	}
	deadline := time.Now().Add(startTimeout)
	for {
		ns, err := startServeWith(t, s.data, s.extra, s.addrs...)
		if err == nil {
			return ns
		}
		if !errors.Is(err, errAddrInUse) || time.Now().After(deadline) {
			t.Fatalf("restarting serve: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (s *server) stop(t *testing.T) {
	t.Helper()
	s.waitServing(t)
	s.signal(syscall.SIGTERM)
	code, ok := s.waitExit(20 * time.Second)
	if !ok {
		// Show where it is stuck: SIGQUIT makes a Go program print every
		// goroutine's stack and exit.
		s.signal(syscall.SIGQUIT)
		s.waitExit(10 * time.Second)
	}
	if !ok || code != 0 {
		t.Errorf("serve did not exit 0 after SIGTERM (exited=%v code=%d):\n%s", ok, code, s.proc)
	}
}

// waitServing waits until the server has completed a handshake, which
// proves that its accept loop (and so its signal handling) is running: serve
// prints the invite before it handles SIGTERM (see TestSIGTERMGraceful).
func (s *server) waitServing(t *testing.T) {
	t.Helper()
	home := filepath.Join(t.TempDir(), "probe")
	mustRun(t, "--home", home, "init", "--invite", s.invite)
	mustFail(t, []string{"register"}, "--home", home, "lookup", "nobody")
}

// newUser makes a client home for name: init with the server's invite, then
// register.
func newUser(t *testing.T, s *server, name string) string {
	t.Helper()
	home := filepath.Join(t.TempDir(), name)
	mustRun(t, "--home", home, "init", "--invite", s.invite)
	r := mustRun(t, "--home", home, "register", name, "--json")
	var reg struct {
		User   string `json:"user"`
		Device uint32 `json:"device"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &reg); err != nil || reg.User != name || reg.Device == 0 {
		t.Fatalf("register %s --json: got %q (%v)", name, r.stdout, err)
	}
	return home
}

// testKeyHex is the MAGPIE_KEY of every child; testUnlocker is the same key
// for SDK calls made in the test process.
const testKeyHex = "0101010101010101010101010101010101010101010101010101010101010101"

var testUnlocker = client.KeyUnlocker([32]byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1})
