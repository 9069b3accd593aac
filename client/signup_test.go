package client_test

import (
	"testing"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// On a server that asks new accounts for proof of work, Register solves
// the puzzle by itself, tells subscribers it is doing so, and the account
// works end to end.
func TestRegisterSolvesSignupPuzzle(t *testing.T) {
	s := servertest.Start(t, server.Config{SignupPoW: &server.SignupPoW{MinBits: 9, MaxBits: 12}})
	c := open(t, initHome(t, s.Invite, client.Options{}))
	sub := subscribe(t, c)
	if _, err := c.Register(testCtx(t), "alice"); err != nil {
		t.Fatalf("register on a pow server: %v", err)
	}
	ev := waitEvent(t, sub, "EventSignupPuzzle", func(ev client.Event) bool { return ev.Kind == client.EventSignupPuzzle })
	if ev.PuzzleBits != 9 {
		t.Errorf("EventSignupPuzzle of %d bits, want 9", ev.PuzzleBits)
	}
	_, bsub := onlineUser(t, s.Invite, "bob", client.Options{})
	run(t, c)
	send(t, c, "bob", "hi")
	waitMessage(t, bsub, "alice", "hi")
}
