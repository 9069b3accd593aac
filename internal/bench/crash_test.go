package bench

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/store/pebblestore"
)

func TestCrashLedger(t *testing.T) {
	// 0 and 1 write to each other; 2, the odd one out, writes to 0.
	l := newCrashLedger([]int{1, 0, 0}, []int{5, 5, 3})
	for i, n := range []int{5, 4, 3} {
		for k := range n {
			l.sent(i, k)
		}
	}
	for k := range 5 {
		l.acked(0, k)
	}
	l.acked(0, 0) // a second ack (a resend) counts once
	if got := l.pending(); got != 5 {
		t.Fatalf("pending %d after 5 acks and no deliveries, want 5", got)
	}

	steps := []struct {
		to, i, k int
		first    bool
	}{
		{1, 0, 0, true},
		{1, 0, 2, true},
		{1, 0, 1, true},  // after 2: reordered
		{1, 0, 2, false}, // again: redelivered
		{0, 1, 0, true},  // not acknowledged (yet): received all the same
		{0, 2, 1, true},
		{0, 2, 0, true},  // reordered within 2 → 0, whatever 1 → 0 did
		{1, 1, 1, false}, // 1 writes to 0, not to 1: unexpected
		{0, 9, 0, false}, // no such sender: unexpected
		{1, 0, 99, false},
	}
	for _, s := range steps {
		if got := l.delivered(s.to, s.i, s.k); got != s.first {
			t.Errorf("delivered(to %d, %d #%d) = %v, want %v", s.to, s.i, s.k, got, s.first)
		}
	}
	l.resent(2, 0) // 2 #0 came after 2 #1 because it was resent
	l.unexpectedDelivery()
	l.acked(1, 0) // after its delivery: not pending
	l.refused(1, 3)
	if got := l.pending(); got != 2 {
		t.Errorf("pending %d, want 2 (0 #3 and 0 #4)", got)
	}

	got := l.tally(func(i, k int) string { return fmt.Sprintf("%d#%d", i, k) })
	want := crashTally{
		sent: 12, acked: 6, refused: 1, received: 6, ackedReceived: 4, lost: 2,
		redelivered: 1, reordered: 2, reorderedResent: 1, unexpected: 4, lostExamples: []string{"0#3", "0#4"},
	}
	if !equalTally(got, want) {
		t.Errorf("tally\n got %+v\nwant %+v", got, want)
	}

	// Delivering the lost ones settles them.
	l.delivered(1, 0, 4)
	l.delivered(1, 0, 3)
	if got := l.pending(); got != 0 {
		t.Errorf("pending %d after every acked message arrived", got)
	}
	if got := l.tally(func(int, int) string { return "" }); got.lost != 0 || got.reordered != 3 {
		t.Errorf("after the late deliveries: lost %d, reordered %d; want 0 and 3 (#3 came after #4)", got.lost, got.reordered)
	}
}

func equalTally(a, b crashTally) bool {
	return slices.Equal(a.lostExamples, b.lostExamples) &&
		a.sent == b.sent && a.acked == b.acked && a.refused == b.refused && a.received == b.received &&
		a.ackedReceived == b.ackedReceived && a.lost == b.lost && a.redelivered == b.redelivered &&
		a.reordered == b.reordered && a.reorderedResent == b.reorderedResent && a.unexpected == b.unexpected
}

func TestCrashReportText(t *testing.T) {
	r := &CrashReport{
		Clients: 4, Rate: 100, Size: 64, DurationS: 2, KillsPlanned: 1, KillsDone: 1,
		Kills: []KillReport{{AtS: 1, UnackedAtKill: 3, DownS: 0.2, RecoveryS: -1}},
		Sent:  10, Acked: 10, AckedReceived: 9, Lost: 1, LostExamples: []string{"a → b message 7"},
	}
	s := r.Text()
	for _, want := range []string{"acked-and-lost 1", "LOST: a → b message 7", "FAIL: 1 acknowledged", "none"} {
		if !strings.Contains(s, want) {
			t.Errorf("the table does not say %q:\n%s", want, s)
		}
	}
}

func TestCrashKillTimes(t *testing.T) {
	s := time.Second
	for _, c := range []struct {
		o    CrashOptions
		want []time.Duration
	}{
		{CrashOptions{Duration: 6 * s, Kills: 3}, []time.Duration{1500 * time.Millisecond, 3 * s, 4500 * time.Millisecond}},
		{CrashOptions{Duration: 6 * s}, nil},
		{CrashOptions{Duration: 6 * s, KillEvery: 2 * s}, []time.Duration{2 * s, 4 * s}},
		{CrashOptions{Duration: 10 * s, KillEvery: 2 * s, Kills: 2}, []time.Duration{2 * s, 4 * s}},
	} {
		if got := c.o.killTimes(); !slices.Equal(got, c.want) {
			t.Errorf("%+v: kill times %v, want %v", c.o, got, c.want)
		}
	}
}

func TestCrashIDs(t *testing.T) {
	r := &crashRun{nonce: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}}
	i, k, ok := r.parseID(r.msgID(7, 123456))
	if !ok || i != 7 || k != 123456 {
		t.Errorf("parseID(msgID(7, 123456)) = %d, %d, %v", i, k, ok)
	}
	other := &crashRun{nonce: [8]byte{9}}
	if _, _, ok := r.parseID(other.msgID(7, 1)); ok {
		t.Error("an id of another run parsed as ours")
	}
}

func TestCrashErrKind(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	if got := crashErrKind(fmt.Errorf("client: could not reach the server at any address: %w", errors.Join(refused))); got != "connection refused" {
		t.Errorf("refused dial: kind %q", got)
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCrash kills a real server (this test binary, running
// TestCrashServerProcess) twice under chat traffic: nothing acknowledged
// may be lost.
func TestCrash(t *testing.T) {
	addr := freeLoopback(t)
	// The race runtime's 1 s pause at exit would slow every graceful stop.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	var serverLog, progress lockedBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunCrash(ctx, CrashOptions{
		Server:  crashServerArgv(t, addr, 0),
		Clients: 10, Rate: 200, Duration: 3 * time.Second, Size: 256, Kills: 2, Drain: 20 * time.Second,
		ServerLog: &serverLog, Progress: &progress,
	})
	if r != nil {
		t.Logf("\n%s", r.Text())
	}
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatalf("%v\nserver log:\n%s", err, serverLog.String())
	}
	if strings.Contains(serverLog.String(), "DATA RACE") {
		t.Errorf("the server reported a data race:\n%s", serverLog.String())
	}
	if r.KillsDone != 2 || len(r.Kills) != 2 {
		t.Fatalf("%d kills done (%d reported), want 2", r.KillsDone, len(r.Kills))
	}
	if r.Sent == 0 || r.Acked != r.Sent || r.AckedReceived != r.Acked || r.Lost != 0 {
		t.Errorf("sent %d, acked %d, acked and received %d, lost %d: want every message acknowledged and delivered",
			r.Sent, r.Acked, r.AckedReceived, r.Lost)
	}
	if r.Received != r.Sent || r.Unexpected != 0 || r.Refused != 0 {
		t.Errorf("received %d of %d, %d unexpected deliveries, %d refused", r.Received, r.Sent, r.Unexpected, r.Refused)
	}
	if r.Ack.Count != r.Acked || r.Deliver.Count != r.Received {
		t.Errorf("histograms hold %d and %d values, want %d and %d", r.Ack.Count, r.Deliver.Count, r.Acked, r.Received)
	}
	for j, k := range r.Kills {
		if k.DownS <= 0 {
			t.Errorf("kill %d: down for %vs", j+1, k.DownS)
		}
	}
	// Sends go on for a second after the last kill, and whatever was in
	// flight at the kill is resent: the restarted server must answer.
	if last := r.Kills[len(r.Kills)-1]; last.RecoveryS <= 0 || last.RecoveryS < last.DownS {
		t.Errorf("last kill: recovery %vs (down %vs): want an acknowledgement from the restarted server", last.RecoveryS, last.DownS)
	}
	// The clients did reconnect: every one of them, to the server started
	// after the last kill. (One still backing off from a kill when the
	// next comes reconnects once for both.)
	if r.OnLastServer != r.Clients || r.Reconnects < int64(r.Clients) {
		t.Errorf("%d of %d clients on the last server, %d reconnects: want every client reconnected to it", r.OnLastServer, r.Clients, r.Reconnects)
	}
}

// crashServerArgv is the command that runs TestCrashServerProcess; with
// dieAfter > 0 the server exits by itself (status 3) after that long.
func crashServerArgv(t *testing.T, addr string, dieAfter time.Duration) []string {
	return []string{os.Args[0], "-test.run=^TestCrashServerProcess$", "--", "crash-server", t.TempDir(), addr, dieAfter.String()}
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestCrashAborts: a server that dies by itself ends the run with an error
// that says so, and an interrupted run stops at once; either way the run
// returns its partial report and leaves no goroutine (TestMain checks).
func TestCrashAborts(t *testing.T) {
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	opts := func(argv []string) CrashOptions {
		return CrashOptions{Server: argv, Clients: 4, Rate: 100, Duration: 20 * time.Second, Size: 64, Drain: 20 * time.Second}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	r, err := RunCrash(ctx, opts(crashServerArgv(t, freeLoopback(t), time.Second)))
	if err == nil || !strings.Contains(err.Error(), "exited by itself") || !strings.Contains(err.Error(), "dying as asked") {
		t.Errorf("a server that died by itself: err %v", err)
	}
	if r == nil || r.Sent == 0 || r.Aborted == "" || !strings.Contains(r.Text(), "ABORTED") {
		t.Errorf("no partial report marked as aborted: %+v", r)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v to notice", d)
	}

	ctx2, cancel2 := context.WithCancel(ctx)
	time.AfterFunc(2*time.Second, cancel2)
	start = time.Now()
	r, err = RunCrash(ctx2, opts(crashServerArgv(t, freeLoopback(t), 0)))
	if !errors.Is(err, context.Canceled) || r == nil {
		t.Errorf("interrupted: err %v, report %v", err, r)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v to stop", d)
	}

	if _, err := RunCrash(ctx, opts([]string{filepath.Join(t.TempDir(), "no-such-server")})); err == nil {
		t.Error("a server command that does not exist: no error")
	}
}

// TestCrashServerProcess is not a test: it is the server TestCrash kills,
// run as a child process of the test binary with "crash-server DIR ADDR
// DIE-AFTER" after --. Like magpie serve, it keeps its key and store in DIR
// and prints its invite; SIGTERM stops it gracefully.
func TestCrashServerProcess(t *testing.T) {
	args := flag.Args()
	if len(args) != 4 || args[0] != "crash-server" {
		t.Skip("the server process of TestCrash")
	}
	dir, addr := args[1], args[2]
	dieAfter, err := time.ParseDuration(args[3])
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	die := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		die(err) // "address already in use" makes RunCrash try again
	}
	defer ln.Close()
	key, err := server.LoadOrCreateKey(filepath.Join(dir, "server.key"))
	if err != nil {
		die(err)
	}
	st, err := pebblestore.Open(dir, pebblestore.Options{}) // the server's default store
	if err != nil {
		die(err)
	}
	srv, err := server.New(server.Config{Key: key, Store: st})
	if err != nil {
		die(err)
	}
	fmt.Println(invite.Invite{ServerKey: key.Public, Addrs: []string{addr}}.String())
	go srv.Serve(ln)
	if dieAfter > 0 {
		time.AfterFunc(dieAfter, func() {
			fmt.Fprintln(os.Stderr, "dying as asked")
			os.Exit(3)
		})
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if err := st.Close(); err != nil {
		die(err)
	}
	// Straight out: this process is no test run, and its goroutines are
	// not the leak check's business.
	os.Exit(0)
}
