package link

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFragmentationRoundTrip(t *testing.T) {
	cli, srv := linkPair(t, Config{}, Config{})
	sizes := []int{0, 1, maxFrameBody, maxFrameBody + 1, 200000, 1 << 20, 1<<20 + 64<<10}
	errc := make(chan error, 1)
	go func() {
		for i, n := range sizes {
			if err := cli.WriteMessage(pattern(n, byte(i))); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i, n := range sizes {
		got, err := srv.ReadMessage()
		if err != nil {
			t.Fatalf("size %d: %v", n, err)
		}
		if !bytes.Equal(got, pattern(n, byte(i))) {
			t.Fatalf("size %d: got %d bytes, content differs", n, len(got))
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	// The same messages back as one batch.
	batch := make([][]byte, len(sizes))
	for i, n := range sizes {
		batch[i] = pattern(n, byte(i+50))
	}
	go func() { errc <- srv.WriteMessages(batch) }()
	for i := range sizes {
		got, err := cli.ReadMessage()
		if err != nil || !bytes.Equal(got, batch[i]) {
			t.Fatalf("batch %d: %d bytes, %v", i, len(got), err)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestWriteMessagesSmallBatch(t *testing.T) {
	cli, srv := linkPair(t, Config{}, Config{})
	var batch [][]byte
	for i := range 50 {
		batch = append(batch, pattern(i*10, byte(i)))
	}
	if err := cli.WriteMessages(batch); err != nil {
		t.Fatal(err)
	}
	if err := cli.WriteMessages(nil); err != nil {
		t.Fatal(err)
	}
	for i := range batch {
		got, err := srv.ReadMessage()
		if err != nil || !bytes.Equal(got, batch[i]) {
			t.Fatalf("message %d: %v", i, err)
		}
	}
}

func TestMessageTooLarge(t *testing.T) {
	const max = 100000
	cli, srv := linkPair(t, Config{MaxMessageSize: 2 << 20}, Config{MaxMessageSize: max})

	// Locally, an oversized write is refused without harming the link.
	if err := srv.WriteMessage(make([]byte, max+1)); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("local write: %v", err)
	}

	go cli.WriteMessages([][]byte{make([]byte, max), make([]byte, max+1)})
	if got, err := srv.ReadMessage(); err != nil || len(got) != max {
		t.Fatalf("message at the limit: %d %v", len(got), err)
	}
	if _, err := srv.ReadMessage(); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	// The server closed the link on the offender.
	if _, err := cli.ReadMessage(); err == nil {
		t.Fatal("client still connected")
	}
	if _, err := srv.ReadMessage(); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("sticky error: %v", err)
	}
}

func TestKeepaliveAndIdleTimeout(t *testing.T) {
	t.Run("keepalive keeps link up", func(t *testing.T) {
		t.Parallel()
		idle := 200 * time.Millisecond
		cli, srv := linkPair(t,
			Config{KeepaliveInterval: 40 * time.Millisecond, IdleTimeout: idle},
			Config{IdleTimeout: idle})
		srvMsgs := make(chan error, 1)
		go func() {
			m, err := srv.ReadMessage()
			if err == nil && string(m) != "after idle" {
				err = fmt.Errorf("got %q", m)
			}
			srvMsgs <- err
		}()
		cliMsgs := make(chan error, 1)
		go func() {
			m, err := cli.ReadMessage() // pongs arrive and are swallowed
			if err == nil && string(m) != "reply" {
				err = fmt.Errorf("got %q", m)
			}
			cliMsgs <- err
		}()
		time.Sleep(4 * idle)
		if err := cli.WriteMessage([]byte("after idle")); err != nil {
			t.Fatal(err)
		}
		if err := <-srvMsgs; err != nil {
			t.Fatalf("server: %v", err)
		}
		if err := srv.WriteMessage([]byte("reply")); err != nil {
			t.Fatal(err)
		}
		if err := <-cliMsgs; err != nil {
			t.Fatalf("client: %v", err)
		}
	})
	t.Run("answered pings with a pong timeout", func(t *testing.T) {
		t.Parallel()
		// Pings every 200 ms, each answered well within 100 ms: the link
		// stays up through a second and a half of silence, far past the
		// pong timeout. The pings are further apart than the pong timeout,
		// so each pong must settle its ping: no later ping covers for it.
		cli, srv := linkPair(t,
			Config{KeepaliveInterval: 200 * time.Millisecond, PongTimeout: 100 * time.Millisecond, IdleTimeout: 10 * time.Second},
			Config{})
		go srv.ReadMessage() // answers pings until the link closes
		cliMsgs := make(chan error, 1)
		go func() {
			m, err := cli.ReadMessage()
			if err == nil && string(m) != "reply" {
				err = fmt.Errorf("got %q", m)
			}
			cliMsgs <- err
		}()
		time.Sleep(1500 * time.Millisecond)
		if err := srv.WriteMessage([]byte("reply")); err != nil {
			t.Fatal(err)
		}
		if err := <-cliMsgs; err != nil {
			t.Fatalf("client: %v", err)
		}
	})
	t.Run("unanswered ping", func(t *testing.T) {
		t.Parallel()
		// Nobody reads on the server side, so no pong comes back: the
		// client gives up a pong timeout after its first ping, long before
		// its idle timeout.
		cli, _ := linkPair(t,
			Config{KeepaliveInterval: 50 * time.Millisecond, PongTimeout: 100 * time.Millisecond, IdleTimeout: time.Minute},
			Config{})
		start := time.Now()
		_, err := cli.ReadMessage()
		if !errors.Is(err, ErrIdleTimeout) {
			t.Fatalf("got %v, want ErrIdleTimeout", err)
		}
		if took := time.Since(start); took > 20*time.Second {
			t.Fatalf("gave up after %v; the idle timeout, not the pong timeout, ended the link", took)
		}
		if !strings.Contains(err.Error(), "keepalive") {
			t.Errorf("error %q does not say a keepalive went unanswered", err)
		}
	})
	t.Run("a ping never extends the idle timeout", func(t *testing.T) {
		t.Parallel()
		// The pong timeout (10 s) is longer than the idle timeout: the idle
		// timeout still ends a link whose peer has gone silent.
		cli, _ := linkPair(t,
			Config{KeepaliveInterval: 50 * time.Millisecond, PongTimeout: 10 * time.Second, IdleTimeout: 300 * time.Millisecond},
			Config{})
		start := time.Now()
		_, err := cli.ReadMessage()
		if !errors.Is(err, ErrIdleTimeout) {
			t.Fatalf("got %v, want ErrIdleTimeout", err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("gave up after %v: a ping pushed the idle deadline out to its pong timeout", took)
		}
		if !strings.Contains(err.Error(), "nothing received") {
			t.Errorf("error %q does not name the idle timeout", err)
		}
	})
	t.Run("silent peer", func(t *testing.T) {
		t.Parallel()
		_, srv := linkPair(t, Config{}, Config{IdleTimeout: 150 * time.Millisecond})
		if _, err := srv.ReadMessage(); !errors.Is(err, ErrIdleTimeout) {
			t.Fatalf("got %v", err)
		}
	})
}

// Concurrent writers (and keepalive pings racing them) must never interleave
// frames or reuse nonces. Run with -race.
func TestConcurrentWriters(t *testing.T) {
	cli, srv := linkPair(t, Config{KeepaliveInterval: time.Millisecond}, Config{})
	const writers, perWriter = 8, 100
	mk := func(w, i int) []byte {
		n := (w*131 + i*977) % 70000
		b := make([]byte, 12+n)
		binary.BigEndian.PutUint32(b, uint32(w))
		binary.BigEndian.PutUint32(b[4:], uint32(i))
		copy(b[12:], pattern(n, byte(w+i)))
		binary.BigEndian.PutUint32(b[8:], crc32.ChecksumIEEE(b[12:]))
		return b
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; {
				var err error
				if i%3 == 0 && i+2 < perWriter {
					err = cli.WriteMessages([][]byte{mk(w, i), mk(w, i+1)})
					i += 2
				} else {
					err = cli.WriteMessage(mk(w, i))
					i++
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	next := make([]int, writers)
	for range writers * perWriter {
		m, err := srv.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		w, i := int(binary.BigEndian.Uint32(m)), int(binary.BigEndian.Uint32(m[4:]))
		if w >= writers || i != next[w] || crc32.ChecksumIEEE(m[12:]) != binary.BigEndian.Uint32(m[8:]) {
			t.Fatalf("bad message from writer %d seq %d (want %d)", w, i, next[w])
		}
		next[w]++
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestUnknownFrameType(t *testing.T) {
	cli, srv := linkPair(t, Config{}, Config{})
	if err := cli.writeFrames([][]byte{[]byte("x")}, 9); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.ReadMessage(); !errors.Is(err, ErrInvalidFrame) {
		t.Fatalf("got %v", err)
	}
}

func TestCorruptFrames(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"short length", []byte{0, 5, 1, 2, 3, 4, 5}},
		{"zero length", []byte{0, 0}},
		{"bad tag", append([]byte{0, 20}, make([]byte, 20)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, srv := linkPair(t, Config{}, Config{})
			cli.conn.Write(tc.raw)
			if _, err := srv.ReadMessage(); !errors.Is(err, ErrInvalidFrame) {
				t.Fatalf("got %v", err)
			}
		})
	}
	t.Run("truncated", func(t *testing.T) {
		cli, srv := linkPair(t, Config{}, Config{})
		cli.conn.Write([]byte{0, 100, 1, 2})
		cli.conn.Close()
		if _, err := srv.ReadMessage(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestCleanCloseIsEOF(t *testing.T) {
	cli, srv := linkPair(t, Config{}, Config{})
	cli.Close()
	if _, err := srv.ReadMessage(); err != io.EOF {
		t.Fatalf("got %v", err)
	}
	if err := cli.WriteMessage(nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if _, err := cli.ReadMessage(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
}

// Noise rev. 34 §5.1: n = 2^64-1 is reserved; the session must end before.
func TestNonceExhaustion(t *testing.T) {
	const maxNonce = ^uint64(0) - 1 // flynn/noise MaxNonce
	t.Run("send", func(t *testing.T) {
		cli, srv := linkPair(t, Config{}, Config{})
		cli.tx.SetNonce(maxNonce)
		srv.rx.SetNonce(maxNonce)
		if err := cli.WriteMessage([]byte("last")); err != nil {
			t.Fatal(err)
		}
		if m, err := srv.ReadMessage(); err != nil || string(m) != "last" {
			t.Fatalf("%q %v", m, err)
		}
		if err := cli.WriteMessage([]byte("one too many")); !errors.Is(err, ErrNonceExhausted) {
			t.Fatalf("got %v", err)
		}
		if _, err := srv.ReadMessage(); err == nil {
			t.Fatal("link still open")
		}
	})
	t.Run("receive", func(t *testing.T) {
		cli, srv := linkPair(t, Config{}, Config{})
		cli.tx.SetNonce(maxNonce)
		srv.rx.SetNonce(maxNonce + 1)
		if err := cli.WriteMessage([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.ReadMessage(); !errors.Is(err, ErrNonceExhausted) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestConfigDefaults(t *testing.T) {
	c := Config{HandshakeTimeoutMax: time.Second, MaxHelloSize: 1 << 20}.withDefaults()
	if c.HandshakeTimeoutMin != time.Second || c.WriteTimeout != defaultWriteTimeout ||
		c.MaxMessageSize != defaultMaxMessageSize || c.MaxHelloSize != maxNoiseMsg-ikMsg1Overhead-timestampSize {
		t.Fatalf("%+v", c)
	}
	for range 1000 {
		d := handshakeWindow(time.Second, 2*time.Second)
		if d < time.Second || d > 2*time.Second {
			t.Fatal(d)
		}
	}
	if d := handshakeWindow(time.Second, time.Second); d != time.Second {
		t.Fatal(d)
	}
}

// ReadFrame returns between frames: nil for a keepalive and for each
// fragment but the last, then the message; ReadMessage's loop is built on
// it. A server parks idle connections between frames, so a ping must not
// leave ReadFrame blocked waiting for the next one.
func TestReadFrameReturnsBetweenFrames(t *testing.T) {
	cli, srv := linkPair(t, Config{KeepaliveInterval: 20 * time.Millisecond}, Config{})
	m, err := srv.ReadFrame()
	if err != nil || m != nil {
		t.Fatalf("first frame (a ping): got %q, %v; want nil, nil", m, err)
	}
	// The ping was answered: the client reads the pong without blocking
	// forever (it swallows it and waits for "reply").
	go srv.WriteMessage([]byte("reply"))
	if m, err := cli.ReadMessage(); err != nil || string(m) != "reply" {
		t.Fatalf("client: %q, %v", m, err)
	}

	big := pattern(maxFrameBody*2+10, 7) // three fragments
	errc := make(chan error, 1)
	go func() { errc <- cli.WriteMessage(big) }()
	var frames, nils int
	for {
		m, err := srv.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		frames++
		if m == nil {
			nils++ // a keepalive, or a fragment
			continue
		}
		if !bytes.Equal(m, big) {
			t.Fatalf("reassembled %d bytes, content differs", len(m))
		}
		break
	}
	if nils < 2 {
		t.Errorf("%d frames before the message, want at least 2 (the first fragments)", nils)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// An empty message is a message, not "no message".
	go cli.WriteMessage(nil)
	for {
		m, err := srv.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if m != nil {
			if len(m) != 0 {
				t.Fatalf("got %d bytes, want an empty message", len(m))
			}
			break
		}
	}
}

// Keepalives keep no fixed period: each wait is drawn anew, around the
// interval on average and never outside 3/4 to 5/4 of it.
func TestKeepaliveDelayIsDrawn(t *testing.T) {
	c := &Conn{keepalive: 2 * time.Second}
	seen := map[time.Duration]bool{}
	var sum time.Duration
	const n = 2000
	for range n {
		d := c.keepaliveDelay()
		if d < c.keepalive*3/4 || d > c.keepalive*5/4 {
			t.Fatalf("delay %v outside [%v, %v]", d, c.keepalive*3/4, c.keepalive*5/4)
		}
		seen[d] = true
		sum += d
	}
	if len(seen) < n/2 {
		t.Fatalf("only %d distinct delays in %d", len(seen), n)
	}
	if mean := sum / n; mean < c.keepalive*95/100 || mean > c.keepalive*105/100 {
		t.Fatalf("mean delay %v, want about %v", mean, c.keepalive)
	}
}

// With a pong timeout but no idle timeout, nothing limits a read once the
// ping is answered: the deadline the ping set must not outlive it.
func TestAnsweredPingLeavesNoDeadlineWithoutIdleTimeout(t *testing.T) {
	cli, srv := linkPair(t, Config{PongTimeout: 20 * time.Millisecond}, Config{})
	go srv.ReadMessage() // answers the ping; ends when the link closes
	if !cli.sendControl(framePing) {
		t.Fatal("ping not sent")
	}
	due := cli.pongDue.Load()
	if m, err := cli.ReadFrame(); err != nil || m != nil {
		t.Fatalf("pong: got %q, %v", m, err)
	}
	if err := srv.WriteMessage([]byte("after")); err != nil {
		t.Fatal(err)
	}
	// Let the ping's deadline pass (a read past it fails at once).
	for now := time.Now().UnixNano(); now <= due; now = time.Now().UnixNano() {
		time.Sleep(time.Duration(due - now + 1))
	}
	if m, err := cli.ReadMessage(); err != nil || string(m) != "after" {
		t.Fatalf("read after an answered ping: %q, %v", m, err)
	}
}
