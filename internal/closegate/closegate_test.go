package closegate

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCloseRefusesLaterCalls(t *testing.T) {
	var g Gate
	if !g.Enter() {
		t.Fatal("a new gate refused a call")
	}
	g.Leave()
	if !g.Close() {
		t.Fatal("the first Close did not shut the gate")
	}
	if g.Enter() {
		t.Fatal("a closed gate let a call in")
	}
	if g.Close() {
		t.Fatal("a second Close reported shutting the gate")
	}
}

// Close returns only after the calls in flight have left; Enter cannot
// be answered "open" once Close has returned.
func TestCloseWaitsForCallsInFlight(t *testing.T) {
	var g Gate
	if !g.Enter() {
		t.Fatal("a new gate refused a call")
	}
	closed := make(chan bool)
	go func() { closed <- g.Close() }()
	// Close is blocked on the call in flight; whether it has started to
	// wait yet or not, it must not have returned.
	select {
	case <-closed:
		t.Fatal("Close returned with a call in flight")
	case <-time.After(20 * time.Millisecond):
	}
	g.Leave()
	if !<-closed {
		t.Fatal("Close did not report shutting the gate")
	}
	if g.Enter() {
		t.Fatal("a closed gate let a call in")
	}
}
