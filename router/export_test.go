package router

import (
	"sync"
	"time"
)

// FakeCommitClock is a commit loop clock that moves only when a test moves
// it, and whose CommitDelay waits end only when the test ends them.
type FakeCommitClock struct {
	mu  sync.Mutex
	now time.Time
	// Delays receives every wait the commit loop starts; the loop blocks
	// until the test takes it, so a test knows whether one started.
	Delays chan *FakeDelay
	stop   chan struct{}
}

// FakeDelay is one CommitDelay wait of the commit loop.
type FakeDelay struct {
	D     time.Duration
	fired chan time.Time
}

// Fire ends the wait, as the timer running out would.
func (d *FakeDelay) Fire() { d.fired <- time.Time{} }

// WithCommitClock returns cfg with c as its commit loop's clock.
func WithCommitClock(cfg Config, c *FakeCommitClock) Config {
	cfg.commitClock = c
	return cfg
}

func NewFakeCommitClock() *FakeCommitClock {
	return &FakeCommitClock{now: time.Unix(1_000_000, 0), Delays: make(chan *FakeDelay), stop: make(chan struct{})}
}

// Stop makes every wait from now on end at once, so that a test that
// failed before taking a wait does not leave the commit loop blocked.
func (c *FakeCommitClock) Stop() { close(c.stop) }

// Advance moves the clock forward by d.
func (c *FakeCommitClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *FakeCommitClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *FakeCommitClock) StartDelay(d time.Duration) (<-chan time.Time, func()) {
	fd := &FakeDelay{D: d, fired: make(chan time.Time, 1)}
	select {
	case c.Delays <- fd:
	case <-c.stop:
		fd.Fire()
	}
	return fd.fired, func() {}
}

// Busy reports whether a pump or a commit is pushing to s. A call that
// starts a pump (Attach, Ack, Drain, a commit's offer) marks s busy before
// it returns, and s stays busy until the pump's last push: so once s is
// seen idle after such a call, every push it led to has been made.
func (s *Subscription) Busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// RecheckTicks are the periodic re-read's ticks, sent by a test.
type RecheckTicks struct {
	// Every is the period the router asked its ticker for.
	Every chan time.Duration
	// C is the ticks: the loop re-reads one slot of devices per tick, and
	// takes the next tick only when that read has been started.
	C chan time.Time
}

// WithRecheckTicks returns cfg with ticks as its periodic re-read's.
func WithRecheckTicks(cfg Config, ticks *RecheckTicks) Config {
	cfg.recheckTicker = func(d time.Duration) (<-chan time.Time, func()) {
		ticks.Every <- d
		return ticks.C, func() {}
	}
	return cfg
}
