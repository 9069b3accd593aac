package link

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flynn/noise"
)

// countConn is a net.Conn that counts the bytes written to it and reads
// nothing.
type countConn struct {
	memConn
	mu sync.Mutex
	n  int
}

func (c *countConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.n += len(p)
	c.mu.Unlock()
	return len(p), nil
}

// wireSize sizes the buffers a message is sealed into: it must be exactly
// what the frames take on the wire. Too small, and a frame is sealed into a
// buffer without room for it; too large, and small messages pin 64 KiB
// buffers.
func TestWireSizeIsBytesOnTheWire(t *testing.T) {
	suite, _ := newSuite()
	var key [32]byte
	cc := &countConn{memConn: memConn{r: bytes.NewReader(nil)}}
	tx := newCipherState(noise.UnsafeNewCipherState(suite, key, 0))
	rx := newCipherState(noise.UnsafeNewCipherState(suite, key, 0))
	c := newConn(cc, tx, rx, [32]byte{}, Config{}.withDefaults())
	defer c.Close()
	for _, n := range []int{0, 1, smallBufSize - hdrSize - 1 - tagSize, smallBufSize, maxFrameBody - 1, maxFrameBody,
		maxFrameBody + 1, 2 * maxFrameBody, 2*maxFrameBody + 1, 200000} {
		before := cc.n
		if err := c.WriteMessage(make([]byte, n)); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if got := cc.n - before; got != wireSize(n) {
			t.Errorf("a %d-byte message took %d bytes on the wire, wireSize says %d", n, got, wireSize(n))
		}
	}
}

// An empty "more" fragment is legal (nothing forbids it and a peer may send
// one); it must not crash the reader or lose the fragments around it.
func TestEmptyFragmentsReassemble(t *testing.T) {
	cli, srv := linkPair(t, Config{}, Config{})
	go func() {
		cli.writeFrames([][]byte{nil}, frameDataMore)
		cli.writeFrames([][]byte{[]byte("ab")}, frameDataMore)
		cli.writeFrames([][]byte{nil}, frameDataMore)
		cli.WriteMessage([]byte("c"))
	}()
	if m, err := srv.ReadMessage(); err != nil || string(m) != "abc" {
		t.Fatalf("got %q, %v; want \"abc\"", m, err)
	}
}

// The replay window is inclusive at both ends: a clock exactly window
// ahead or behind is accepted, one a nanosecond further is not.
func TestReplayWindowIsInclusive(t *testing.T) {
	const w = time.Minute
	c := NewReplayCache(w)
	t0 := time.Now()
	c.now = func() time.Time { return t0 }
	for i, tc := range []struct {
		skew time.Duration
		ok   bool
	}{{-w, true}, {w, true}, {-w - 1, false}, {w + 1, false}} {
		if got := c.fresh(t0.Add(tc.skew), [32]byte{byte(i + 1)}); got != tc.ok {
			t.Errorf("client clock %v off: accepted %v, want %v", tc.skew, got, tc.ok)
		}
	}
}

// A full generation still takes its last key, and then refuses new ones
// (memory stays bounded) until it rotates.
func TestReplayCacheHoldsExactlyMaxEntries(t *testing.T) {
	c := NewReplayCache(time.Minute)
	t0 := time.Now()
	c.now = func() time.Time { return t0 }
	c.rotated = t0 // no rotation during the test
	var k [32]byte
	for i := range maxReplayEntries - 1 {
		k[0], k[1], k[2], k[3] = byte(i), byte(i>>8), byte(i>>16), 0xff
		c.cur[k] = struct{}{}
	}
	if !c.fresh(t0, [32]byte{1}) {
		t.Fatal("the last free entry refused")
	}
	if c.fresh(t0, [32]byte{2}) {
		t.Fatalf("a key beyond the %d-entry limit accepted", maxReplayEntries)
	}
	// A generation lasts 2×window; after that the full one is retired to
	// old and new keys are taken again.
	t1 := t0.Add(2*time.Minute + 1)
	c.now = func() time.Time { return t1 }
	if !c.fresh(t1, [32]byte{2}) {
		t.Fatal("a key refused after the full generation's 2×window had passed")
	}
}

// Any keepalive interval works, down to a nanosecond: the draw must not
// ask rand.N for an empty range (a panic on the timer goroutine).
func TestKeepaliveDelayTinyInterval(t *testing.T) {
	for k := time.Duration(1); k <= 8; k++ {
		c := &Conn{keepalive: k}
		for range 100 {
			if d := c.keepaliveDelay(); d < k*3/4 || d > k*5/4 {
				t.Fatalf("interval %v: delay %v outside [%v, %v]", k, d, k*3/4, k*5/4)
			}
		}
	}
}

// A peer too busy writing to answer a ping (sendControl skips the pong
// while a write is under way) still shows the path works by the frames it
// sends: a frame read after the ping settles it, so a busy link is not
// taken for a dead one.
func TestFrameReadAfterPingSettlesIt(t *testing.T) {
	cli, srv := linkPair(t, Config{PongTimeout: time.Minute}, Config{})
	// Nobody reads on the server side, so no pong comes back.
	if !cli.sendControl(framePing) {
		t.Fatal("ping not sent")
	}
	if cli.pongDue.Load() == 0 {
		t.Fatal("a ping with a pong timeout made no answer due")
	}
	if err := srv.WriteMessage([]byte("busy")); err != nil {
		t.Fatal(err)
	}
	if m, err := cli.ReadMessage(); err != nil || string(m) != "busy" {
		t.Fatalf("%q %v", m, err)
	}
	if cli.pongDue.Load() != 0 {
		t.Fatal("a data frame read after the ping did not settle it")
	}
}

// Without an idle timeout the reader blocks with no deadline; a ping must
// still pull one in, or an unanswered ping is never noticed.
func TestUnansweredPingWithoutIdleTimeout(t *testing.T) {
	cli, _ := linkPair(t, Config{KeepaliveInterval: 50 * time.Millisecond, PongTimeout: 100 * time.Millisecond}, Config{})
	if err := readError(t, cli); !errors.Is(err, ErrIdleTimeout) {
		t.Fatalf("got %v, want ErrIdleTimeout", err)
	}
}

// readError returns the error that ends cli's next read, failing t if the
// read is still blocked after 30 s (a bound, not a verdict).
func readError(t *testing.T, cli *Conn) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := cli.ReadMessage()
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-time.After(30 * time.Second):
		cli.Close()
		<-errc
		t.Fatal("the read was still blocked after 30 s")
		return nil
	}
}

// MaxHelloSize is capped so that the first message fits one Noise message:
// a hello of exactly the cap makes a 65535-byte first message and
// handshakes; the cap is applied from one byte above it.
func TestLargestHelloFitsOneNoiseMessage(t *testing.T) {
	const limit = maxNoiseMsg - ikMsg1Overhead - timestampSize
	for _, tc := range []struct{ set, want int }{{limit - 1, limit - 1}, {limit, limit}, {limit + 1, limit}} {
		if got := (Config{MaxHelloSize: tc.set}).withDefaults().MaxHelloSize; got != tc.want {
			t.Errorf("MaxHelloSize %d became %d, want %d", tc.set, got, tc.want)
		}
	}

	cfg := Config{MaxHelloSize: 1 << 20}
	ln := listen(t)
	ch := serve(ln, cfg, []byte("welcome"), nil)
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	hello := pattern(limit, 5)
	cli, _, err := Client(raw, testClientKey, testServerKey.Public, hello, cfg)
	if err != nil {
		t.Fatalf("hello of %d bytes: %v", limit, err)
	}
	defer cli.Close()
	res := <-ch
	if res.err != nil {
		t.Fatal(res.err)
	}
	defer res.conn.Close()
	if !bytes.Equal(res.hello, hello) {
		t.Fatalf("server got a %d-byte hello, want %d", len(res.hello), limit)
	}

	a, b := net.Pipe()
	defer b.Close()
	if _, _, err := Client(a, testClientKey, testServerKey.Public, make([]byte, limit+1), cfg); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("hello of %d bytes: got %v, want ErrMessageTooLarge", limit+1, err)
	}
}

// The server's handshake deadline is drawn per connection, so the moment
// it closes a probe is not a fixed period a censor could match: the draws
// differ and average the middle of the window.
func TestHandshakeWindowIsDrawn(t *testing.T) {
	const lo, hi, n = time.Second, 2 * time.Second, 1000
	seen := map[time.Duration]bool{}
	var sum time.Duration
	for range n {
		d := handshakeWindow(lo, hi)
		if d < lo || d > hi {
			t.Fatalf("window %v outside [%v, %v]", d, lo, hi)
		}
		seen[d] = true
		sum += d
	}
	if len(seen) < n/2 {
		t.Fatalf("only %d distinct windows in %d draws", len(seen), n)
	}
	if mean := sum / n; mean < 1450*time.Millisecond || mean > 1550*time.Millisecond {
		t.Fatalf("mean window %v, want about 1.5 s", mean)
	}
}

// deadlineConn records the deadlines set on a net.Conn.
type deadlineConn struct {
	net.Conn
	mu          sync.Mutex
	write, read []time.Time
}

func (d *deadlineConn) SetReadDeadline(t time.Time) error {
	d.mu.Lock()
	d.read = append(d.read, t)
	d.mu.Unlock()
	return d.Conn.SetReadDeadline(t)
}

func (d *deadlineConn) SetWriteDeadline(t time.Time) error {
	d.mu.Lock()
	d.write = append(d.write, t)
	d.mu.Unlock()
	return d.Conn.SetWriteDeadline(t)
}

// Each write is bounded by WriteTimeout (30 s when not set), and the
// deadline is cleared once the write is done: left armed, its timer would
// wake every quiet connection WriteTimeout after its last write.
func TestWriteDeadlineIsSetThenCleared(t *testing.T) {
	for _, tc := range []struct{ set, want time.Duration }{{time.Hour, time.Hour}, {0, 30 * time.Second}} {
		var dc *deadlineConn
		cli, srv := wrappedPair(t, Config{WriteTimeout: tc.set}, Config{}, func(raw net.Conn) net.Conn {
			dc = &deadlineConn{Conn: raw}
			return dc
		})
		dc.mu.Lock()
		dc.write = nil
		dc.mu.Unlock()
		start := time.Now()
		if err := cli.WriteMessage([]byte("x")); err != nil {
			t.Fatal(err)
		}
		end := time.Now()
		if m, err := srv.ReadMessage(); err != nil || string(m) != "x" {
			t.Fatalf("%q %v", m, err)
		}
		dc.mu.Lock()
		got := dc.write
		dc.mu.Unlock()
		if len(got) != 2 || got[0].Before(start.Add(tc.want)) || got[0].After(end.Add(tc.want)) || !got[1].IsZero() {
			t.Fatalf("WriteTimeout %v: write deadlines %v, want one %v ahead, then none", tc.set, got, tc.want)
		}
	}
}

// A read that begins after an unanswered ping takes the earlier of the
// ping's and the idle deadline, never the later one, and its failure says
// which one expired.
func TestReadAfterUnansweredPingKeepsTheEarlierDeadline(t *testing.T) {
	for _, tc := range []struct {
		name        string
		idle, pong  time.Duration
		wantInError string
	}{
		{"pong due first, no idle timeout", 0, 100 * time.Millisecond, "keepalive"},
		{"idle timeout first", 300 * time.Millisecond, time.Hour, "nothing received"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Nobody reads on the server side, so no pong comes back.
			cli, _ := linkPair(t, Config{IdleTimeout: tc.idle, PongTimeout: tc.pong}, Config{})
			if !cli.sendControl(framePing) {
				t.Fatal("ping not sent")
			}
			if err := readError(t, cli); !errors.Is(err, ErrIdleTimeout) || !strings.Contains(err.Error(), tc.wantInError) {
				t.Fatalf("got %v, want ErrIdleTimeout saying %q", err, tc.wantInError)
			}
		})
	}
}

// The frames of a batch are sealed one after another into pooled chunks;
// a frame goes into the last chunk only if the whole of it (header, type,
// body and tag) fits, else into a new one. Batches whose second frame
// misses the end of the first chunk by a few bytes either way must arrive
// intact.
func TestBatchFramesAroundAChunkEnd(t *testing.T) {
	cli, srv := linkPair(t, Config{}, Config{})
	const a = 40000
	frame := hdrSize + 1 + tagSize
	errc := make(chan error, 1)
	var batches [][][]byte
	for gap := -40; gap <= 40; gap++ {
		// Room left in the first (largeBufSize) chunk after the first
		// frame, minus what the second frame needs, is gap.
		b := largeBufSize - (a + frame) - frame - gap
		batches = append(batches, [][]byte{pattern(a, byte(gap)), pattern(b, byte(gap+1))})
	}
	go func() {
		for _, batch := range batches {
			if err := cli.WriteMessages(batch); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i, batch := range batches {
		for j, want := range batch {
			m, err := srv.ReadMessage()
			if err != nil || !bytes.Equal(m, want) {
				t.Fatalf("gap %d, message %d: %d bytes, %v", i-40, j, len(m), err)
			}
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// NewReplayCache(0), as the server makes it, takes DefaultReplayWindow:
// a client clock a minute off is accepted, one three minutes off is not.
func TestReplayCacheZeroWindowIsTheDefault(t *testing.T) {
	c := NewReplayCache(0)
	t0 := time.Now()
	c.now = func() time.Time { return t0 }
	if !c.fresh(t0.Add(-time.Minute), [32]byte{1}) || !c.fresh(t0.Add(time.Minute), [32]byte{2}) {
		t.Fatal("a clock a minute off refused")
	}
	if c.fresh(t0.Add(-3*time.Minute), [32]byte{3}) || c.fresh(t0.Add(3*time.Minute), [32]byte{4}) {
		t.Fatal("a clock three minutes off accepted")
	}
}

// An unanswered ping stays unanswered: a second ping must not move the
// answer's due time, nor the reader's deadline, later.
func TestSecondPingKeepsTheFirstPingsDeadline(t *testing.T) {
	var dc *deadlineConn
	// Nobody reads on the server side, so no pong comes back.
	cli, _ := wrappedPair(t, Config{PongTimeout: time.Hour}, Config{}, func(raw net.Conn) net.Conn {
		dc = &deadlineConn{Conn: raw}
		return dc
	})
	if !cli.sendControl(framePing) {
		t.Fatal("first ping not sent")
	}
	due := cli.pongDue.Load()
	// Let the clock move past the first ping, so the second one's due
	// time would be later.
	for time.Now().UnixNano() <= due-int64(time.Hour) {
		time.Sleep(time.Microsecond)
	}
	if !cli.sendControl(framePing) {
		t.Fatal("second ping not sent")
	}
	if got := cli.pongDue.Load(); got != due {
		t.Fatalf("answer due at %d after the second ping, want the first's %d", got, due)
	}
	dc.mu.Lock()
	defer dc.mu.Unlock()
	for _, d := range dc.read {
		if d.UnixNano() > due {
			t.Fatalf("read deadlines %v: one is later than the first ping's answer (%v)", dc.read, time.Unix(0, due))
		}
	}
}

// A keepalive that fires while a writer holds the write side sends no
// ping, but re-arms itself, so that pings do not stop.
func TestBusyKeepaliveRearms(t *testing.T) {
	cli, _ := linkPair(t, Config{KeepaliveInterval: time.Hour}, Config{})
	ka := cli.ka.Load()
	ka.Stop() // as if it had just fired
	cli.wmu.Lock()
	cli.sendKeepalive()
	cli.wmu.Unlock()
	if !ka.Stop() {
		t.Fatal("a keepalive that found the writer busy did not re-arm its timer")
	}
}

// hungUpConn is a transport whose peer has gone: every Read fails with EOF.
type hungUpConn struct {
	memConn
	reads int
}

func (h *hungUpConn) Read([]byte) (int, error) { h.reads++; return 0, io.EOF }

// A probe that hangs up is still drained until its deadline (closing
// earlier would tell when it left), but by polling for a local close every
// drainPoll, not by spinning on a dead connection: a server must not burn
// a core per hung-up probe.
func TestDrainAfterHangupPolls(t *testing.T) {
	c := &hungUpConn{}
	const window = 500 * time.Millisecond
	drain(c, time.Now().Add(window))
	// One read per drainPoll (200 ms; sleeps only ever run long): a
	// handful. A drain that spins makes thousands.
	if c.reads > 50 {
		t.Fatalf("%d reads of a hung-up connection in %v: the drain spins", c.reads, window)
	}
}
