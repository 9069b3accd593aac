// Package libsignaloracle runs Signal's own library as a test oracle.
//
// Magpie implements the Signal protocol (PQXDH, the Double Ratchet in
// libsignal's version-4 wire format, XEdDSA, Kyber1024 prekeys, safety
// numbers and Sender Keys for groups) and must stay byte-compatible with
// libsignal. This package starts
// the Node harness in interop/libsignal (which uses the npm package
// @signalapp/libsignal-client, pinned at exactly 0.90.0) as a child process
// and talks to it over newline-delimited JSON on its stdin and stdout.
//
// libsignal is AGPL-3.0. It is never linked into any Go binary: this package
// holds no libsignal code and only exchanges JSON with a separate process.
// It is imported by tests only.
//
// The harness needs its node_modules installed:
//
//	npm ci --prefix interop/libsignal
//
// Without them, [Start] skips the test, or fails it when the environment
// variable MAGPIE_REQUIRE_ORACLE=1 is set (as CI does).
package libsignaloracle

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// PinnedVersion is the exact libsignal-client version the harness must run.
const PinnedVersion = "0.90.0"

// Message types, as libsignal's CiphertextMessageType numbers them.
const (
	TypeWhisper = 2 // a SignalMessage
	TypePreKey  = 3 // a PreKeySignalMessage
)

// Safety-number parameters that Signal uses.
const (
	FingerprintIterations = 5200
	FingerprintVersion    = 2
)

// callTimeout bounds one request: PQXDH and Kyber key generation take
// milliseconds, so a response this late means the harness is stuck.
const callTimeout = 30 * time.Second

const installHint = "npm ci --prefix interop/libsignal"

// Oracle is a running harness. Its methods are safe for concurrent use, but
// the harness handles one request at a time.
type Oracle struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *os.File
	out    *bufio.Reader
	stderr *limitedBuffer
	done   chan struct{} // closed once the child has been reaped

	mu     sync.Mutex
	nextID uint64
	broken error
}

// Start starts the harness for one test and stops it in t.Cleanup. It skips
// the test when Node or the harness's node_modules is missing, unless
// MAGPIE_REQUIRE_ORACLE=1, in which case it fails it.
func Start(t testing.TB) *Oracle {
	t.Helper()
	dir, err := harnessDir()
	if err != nil {
		t.Fatalf("libsignaloracle: %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable(t, "node is not on PATH (Node 20 or later is needed)")
	}
	if err := checkInstalled(dir); err != nil {
		unavailable(t, err.Error())
	}

	cmd := exec.Command(node, "harness.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NODE_NO_WARNINGS=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("libsignaloracle: %v", err)
	}
	// An os.Pipe, rather than cmd.StdoutPipe, so reads can have deadlines.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatalf("libsignaloracle: %v", err)
	}
	cmd.Stdout = w
	stderr := &limitedBuffer{max: 64 << 10}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		t.Fatalf("libsignaloracle: starting harness: %v", err)
	}
	w.Close()

	o := &Oracle{
		t:      t,
		cmd:    cmd,
		stdin:  stdin,
		stdout: r,
		out:    bufio.NewReaderSize(r, 64<<10),
		stderr: stderr,
		done:   make(chan struct{}),
	}
	go func() {
		cmd.Wait()
		close(o.done)
	}()
	t.Cleanup(o.stop)
	return o
}

// stop closes the harness's stdin (it exits on EOF) and kills it if it has
// not exited within a few seconds. It returns only once the child is reaped.
func (o *Oracle) stop() {
	o.stdin.Close()
	select {
	case <-o.done:
	case <-time.After(5 * time.Second):
		o.cmd.Process.Kill()
		<-o.done
	}
	o.stdout.Close()
}

func unavailable(t testing.TB, why string) {
	t.Helper()
	msg := fmt.Sprintf("libsignal oracle unavailable: %s; install it with: %s", why, installHint)
	if os.Getenv("MAGPIE_REQUIRE_ORACLE") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// harnessDir finds interop/libsignal by walking up from the working
// directory to the module root (the directory holding go.mod).
func harnessDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "interop", "libsignal"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// checkInstalled checks that the harness and exactly the pinned libsignal
// version are installed.
func checkInstalled(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "harness.mjs")); err != nil {
		return fmt.Errorf("harness missing: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "node_modules", "@signalapp", "libsignal-client", "package.json"))
	if err != nil {
		return errors.New("node_modules of interop/libsignal is not installed")
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(data, &pkg); err != nil {
		return fmt.Errorf("reading installed libsignal-client version: %v", err)
	}
	if pkg.Version != PinnedVersion {
		return fmt.Errorf("installed libsignal-client is %q, want %q", pkg.Version, PinnedVersion)
	}
	return nil
}

// Error is a failure that libsignal reported for a request.
type Error struct {
	Cmd     string
	Kind    string // libsignal's error name, such as "InvalidMessage" or "DuplicatedMessage"
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("libsignal %s: %s: %s", e.Cmd, e.Kind, e.Message)
}

// call sends one request and decodes the response into out. A failure that
// libsignal reports comes back as *Error; a broken harness fails the test.
func (o *Oracle) call(cmd string, args map[string]any, out any) error {
	o.t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.broken != nil {
		o.t.Fatalf("libsignaloracle: harness unusable: %v", o.broken)
	}
	o.nextID++
	id := o.nextID
	req := map[string]any{"id": id, "cmd": cmd}
	for k, v := range args {
		req[k] = v
	}
	line, err := json.Marshal(req)
	if err != nil {
		o.t.Fatalf("libsignaloracle: encoding %s: %v", cmd, err)
	}
	if _, err := o.stdin.Write(append(line, '\n')); err != nil {
		o.fail(fmt.Errorf("writing %s: %w", cmd, err))
	}
	o.stdout.SetReadDeadline(time.Now().Add(callTimeout))
	resp, err := o.out.ReadBytes('\n')
	if err != nil {
		o.fail(fmt.Errorf("reading the response to %s: %w", cmd, err))
	}
	var head struct {
		ID    uint64 `json:"id"`
		OK    bool   `json:"ok"`
		Error string `json:"error"`
		Kind  string `json:"kind"`
	}
	if err := json.Unmarshal(resp, &head); err != nil {
		o.fail(fmt.Errorf("decoding the response to %s: %w", cmd, err))
	}
	if head.ID != id {
		o.fail(fmt.Errorf("response id %d, want %d", head.ID, id))
	}
	if !head.OK {
		return &Error{Cmd: cmd, Kind: head.Kind, Message: head.Error}
	}
	if out != nil {
		if err := json.Unmarshal(resp, out); err != nil {
			o.fail(fmt.Errorf("decoding the response to %s: %w", cmd, err))
		}
	}
	return nil
}

// fail marks the harness unusable and fails the test, showing its stderr
// (which never holds keys: the harness writes none there).
func (o *Oracle) fail(err error) {
	o.t.Helper()
	o.broken = err
	o.t.Fatalf("libsignaloracle: %v\nharness stderr:\n%s", err, o.stderr.String())
}

// must is call for requests that only a broken harness or a test bug can
// make fail.
func (o *Oracle) must(cmd string, args map[string]any, out any) {
	o.t.Helper()
	if err := o.call(cmd, args, out); err != nil {
		o.t.Fatal(err)
	}
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
