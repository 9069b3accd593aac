package server_test

import (
	"testing"
	"time"

	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// A connection's handshake is timed by the server's configured clock
// (Config.Now: a cluster's nodes each have their own, roughly the same),
// began before it was done, and carries the client's dial stamp: what
// router.Handshake.Replaces decides a device's current connection by.
func TestHandshakeIsTimedByTheServersClock(t *testing.T) {
	const skew = time.Hour
	s := servertest.Start(t, server.Config{Now: func() time.Time { return time.Now().Add(skew) }})
	before := time.Now().Add(skew)
	c := s.Dial(t, servertest.NewKey(t))
	defer c.Close()
	after := time.Now().Add(skew)
	hs := s.Handshakes()
	if len(hs) != 1 {
		t.Fatalf("%d handshakes recorded, want 1", len(hs))
	}
	h := hs[0]
	if h.Began.After(h.Done) {
		t.Errorf("the handshake began at %v, after it was done at %v", h.Began, h.Done)
	}
	// A millisecond of slack: Began is derived from the monotonic clock.
	if h.Began.Before(before.Add(-time.Millisecond)) || h.Done.After(after) {
		t.Errorf("handshake %v–%v, not within the server's clock's %v–%v", h.Began, h.Done, before, after)
	}
	if h.Attempt == 0 {
		t.Error("the client's dial stamp did not reach the server")
	}
}
