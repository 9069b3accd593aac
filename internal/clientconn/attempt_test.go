package clientconn

import (
	"testing"
	"time"
)

// A dial's stamp is the wall clock, but never at or below an earlier
// dial's: a clock stepped back must not make the device's newer
// connection look older than its last one to the server.
func TestDialAttemptOnlyIncreases(t *testing.T) {
	now := time.Now().Add(time.Hour) // ahead of any stamp this process made
	first := dialAttempt(now)
	if first != uint64(now.UnixNano()) {
		t.Fatalf("stamp %d, want the clock %d", first, now.UnixNano())
	}
	back := dialAttempt(now.Add(-time.Minute))
	same := dialAttempt(now.Add(-time.Minute))
	if back <= first || same <= back {
		t.Fatalf("stamps %d, %d, %d after the clock went back: want increasing", first, back, same)
	}
	later := now.Add(time.Second)
	if got := dialAttempt(later); got != uint64(later.UnixNano()) {
		t.Fatalf("stamp %d, want the clock %d once it is past the last stamp", got, later.UnixNano())
	}
}
