package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/invite"
)

// One process may hold at most 20,000 open files on the machines this
// tool was built for; past PerProcess connections, hold spreads them over
// worker processes, each its own copy of the tool (magpie bench
// hold-worker), so the limit applies to each.
const PerProcess = 15000

// holdWorkers returns how many processes a hold of n connections needs.
func holdWorkers(n, asked int) int {
	if asked > 0 {
		return asked
	}
	return (n + PerProcess - 1) / PerProcess
}

// The worker protocol, over the worker's stdin and stdout, one line each:
//
//	worker → parent  "connected N"   all N connections are up
//	parent → worker  (closes stdin)  time to stop
//	worker → parent  {"dropped":D}   connections that ended on their own
//
// Anything else the worker writes goes to its stderr.

// HoldWorkerOptions are what the parent tells one worker.
type HoldWorkerOptions struct {
	Keys             string // the keys file
	From, Count      int    // this worker's range of keys
	SetupConcurrency int
	Keepalive        time.Duration // 0: the client's default
	Transport        string        // "": the invite's endpoints in order
}

// RunHoldWorker is a worker's side: connect its range of users, say so,
// hold until stdin closes, then report.
func RunHoldWorker(ctx context.Context, inv invite.Invite, o HoldWorkerOptions, stdin io.Reader, stdout io.Writer) error {
	keys, err := readKeys(o.Keys)
	if err != nil {
		return err
	}
	if o.From < 0 || o.Count <= 0 || o.From+o.Count > len(keys) {
		return fmt.Errorf("bench hold-worker: keys %d to %d out of range (%s has %d)", o.From, o.From+o.Count, o.Keys, len(keys))
	}
	conns, err := connectAll(ctx, inv, o.Transport, keys[o.From:o.From+o.Count], o.SetupConcurrency, o.Keepalive)
	if err != nil {
		return fmt.Errorf("bench hold-worker: %w", err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var dropped atomic.Int64
	watchDrops(conns, &dropped)
	fmt.Fprintf(stdout, "connected %d\n", len(conns))
	io.Copy(io.Discard, stdin) // until the parent closes it
	return json.NewEncoder(stdout).Encode(map[string]int64{"dropped": dropped.Load()})
}

// watchDrops counts connections that end other than by Close.
func watchDrops(conns []*clientconn.Conn, dropped *atomic.Int64) {
	for _, c := range conns {
		go func(c *clientconn.Conn) {
			for range c.Pushes() { // nothing but the drained marker is expected
			}
			if !errors.Is(c.Err(), clientconn.ErrClosed) {
				dropped.Add(1)
			}
		}(c)
	}
}

// holdWorker is a running worker process.
type holdWorker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// startHoldWorkers starts one worker per range of keys and waits until all
// have connected. argv is the worker command without its flags.
func startHoldWorkers(ctx context.Context, argv []string, inv invite.Invite, o HoldOptions, workers int) ([]*holdWorker, error) {
	n, progress := o.Connections, o.Progress
	var ws []*holdWorker
	fail := func(err error) ([]*holdWorker, error) {
		stopHoldWorkers(ws)
		return nil, err
	}
	per := (n + workers - 1) / workers
	for from := 0; from < n; from += per {
		count := min(per, n-from)
		args := append(append([]string(nil), argv[1:]...),
			"--invite", inv.String(), "--keys", o.Keys,
			"--from", strconv.Itoa(from), "--count", strconv.Itoa(count),
			"--setup-concurrency", strconv.Itoa(max(1, o.SetupConcurrency/workers)),
			"--keepalive", o.Keepalive.String(), "--transport", o.Transport)
		cmd := exec.CommandContext(ctx, argv[0], args...)
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return fail(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return fail(err)
		}
		if err := cmd.Start(); err != nil {
			return fail(fmt.Errorf("starting a worker process: %w", err))
		}
		ws = append(ws, &holdWorker{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)})
	}
	for i, w := range ws {
		line, err := w.out.ReadString('\n')
		if !strings.HasPrefix(line, "connected ") {
			return fail(fmt.Errorf("worker %d did not connect (%q, %v); its errors are above", i+1, strings.TrimSpace(line), err))
		}
		if progress != nil {
			fmt.Fprintf(progress, "worker %d: %s", i+1, line)
		}
	}
	return ws, nil
}

// stopHoldWorkers closes the workers' stdin and returns the connections
// they saw drop.
func stopHoldWorkers(ws []*holdWorker) (dropped int64, err error) {
	for _, w := range ws {
		w.stdin.Close()
	}
	for i, w := range ws {
		var r struct {
			Dropped int64 `json:"dropped"`
		}
		line, rerr := w.out.ReadString('\n')
		if jerr := json.Unmarshal([]byte(line), &r); jerr != nil && err == nil {
			err = fmt.Errorf("worker %d: no report (%v %v)", i+1, rerr, jerr)
		}
		dropped += r.Dropped
		done := make(chan error, 1)
		go func() { done <- w.cmd.Wait() }()
		select {
		case werr := <-done:
			if werr != nil && err == nil {
				err = fmt.Errorf("worker %d: %w", i+1, werr)
			}
		case <-time.After(30 * time.Second):
			w.cmd.Process.Kill()
			<-done
		}
	}
	return dropped, err
}
