package clientconn

import (
	"testing"
	"time"
)

// movedSince reads the bytes moved since a time from the samples: from the
// last one at or before it, or the oldest kept (which counts more, never
// less), and a sample taken within sampleEvery of the last replaces it.
func TestPaceMovedSince(t *testing.T) {
	var p pace
	t0 := time.Unix(1000, 0)
	if got := p.movedSince(t0, 500); got != 500 {
		t.Fatalf("no samples: %d, want all 500", got)
	}
	for i := range 10 {
		p.record(t0.Add(time.Duration(i)*time.Second), int64(i*1000))
	}
	p.record(t0.Add(9*time.Second+sampleEvery/2), 9500) // replaces the last
	if p.n != 10 {
		t.Fatalf("%d samples, want 10", p.n)
	}
	for _, c := range []struct {
		since time.Duration
		want  int64
	}{
		{-time.Second, 10000},           // before every sample: from the oldest
		{0, 10000},                      // the first sample
		{2500 * time.Millisecond, 8000}, // from the sample at 2 s
		{9 * time.Second, 500},          // from the last, which moved on to 9500
	} {
		if got := p.movedSince(t0.Add(c.since), 10000); got != c.want {
			t.Errorf("moved since %v: %d, want %d", c.since, got, c.want)
		}
	}
	// The ring forgets the oldest: then it counts from the oldest kept.
	for i := range paceSamples {
		p.record(t0.Add(time.Hour+time.Duration(i)*time.Second), 20000+int64(i))
	}
	if got := p.movedSince(t0, 30000); got != 10000 {
		t.Fatalf("since before the ring: %d, want 10000 (from the oldest kept)", got)
	}
}

// slow: work that waited past the stall timeout on a path that moved less
// than slowestLink meanwhile; not before the timeout, not on a path that
// moved more.
func TestPaceSlow(t *testing.T) {
	var p pace
	t0 := time.Unix(1000, 0)
	p.record(t0, 0)
	stall := 3 * time.Second
	now := t0.Add(4 * time.Second)
	if !p.slow(now, t0, stall, 4*slowestLink-1) {
		t.Error("4 s waited, less than 8 KiB/s moved: not slow")
	}
	if p.slow(now, t0, stall, 4*slowestLink) {
		t.Error("4 s waited, 8 KiB/s moved: slow")
	}
	if p.slow(t0.Add(2*time.Second), t0, stall, 0) {
		t.Error("2 s waited, under the stall timeout: slow")
	}
}

// Requests back to back keep the busy time running; a pause longer than
// busyGap starts it again. A push of a message stored before the
// connection came up is never late.
func TestPaceRequestsAndPushes(t *testing.T) {
	c := &Conn{stall: 3 * time.Second, connected: time.Now()}
	if err := c.requestStarts(); err != nil {
		t.Fatal(err)
	}
	first := c.pace.busySince
	c.requestEnds()
	if err := c.requestStarts(); err != nil {
		t.Fatal(err)
	}
	if c.pace.busySince != first {
		t.Fatal("a request right after another restarted the busy time")
	}
	c.requestEnds()
	c.pace.busySince = time.Now().Add(-4 * time.Second) // as if busy for 4 s
	if err := c.requestStarts(); err != ErrTooSlow {
		t.Fatalf("busy 4 s with nothing moved: %v, want ErrTooSlow", err)
	}
	c.requestEnds()
	c.pace.idleSince = time.Now().Add(-time.Second)
	if err := c.requestStarts(); err != nil {
		t.Fatalf("after a second's pause: %v", err)
	}
	c.requestEnds()

	c.connected = time.Now().Add(-time.Minute)
	if err := c.pushArrived(c.connected.Add(-10 * time.Second)); err != nil {
		t.Fatalf("a push of a message stored before the connection: %v", err)
	}
	if err := c.pushArrived(time.Now().Add(-time.Second)); err != nil {
		t.Fatalf("a push a second late: %v", err)
	}
	if err := c.pushArrived(time.Now().Add(-5 * time.Second)); err != ErrTooSlow {
		t.Fatalf("a push 5 s late, nothing moved: %v, want ErrTooSlow", err)
	}
}
