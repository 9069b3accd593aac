package client_test

import (
	"testing"
	"time"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/server"
)

// The path both engines use is black-holed in the middle of a
// conversation: they notice (alice's send stalls, bob's pings go
// unanswered), move to another endpoint, and the next message arrives
// within the failover time.
func TestFailoverWhenThePathIsBlackHoledMidConversation(t *testing.T) {
	s, pub := publishingServer(t, server.Config{})
	second := s.AddListener(t)
	front := newProxy(t, s.Addr)
	pub.set(t, tcp(front.Addr(), 0), tcp(second, 5))
	inv := pub.invite(t, s, front.Addr())
	alice := newUser(t, inv, "alice", client.Options{})
	bob := newUser(t, inv, "bob", client.Options{Dial: client.DialOptions{
		Link: link.Config{KeepaliveInterval: time.Second, IdleTimeout: 2500 * time.Millisecond}}})
	bsub := subscribe(t, bob)
	runOnline(t, alice)
	runOnline(t, bob)
	send(t, alice, "bob", "before")
	waitMessage(t, bsub, "alice", "before")

	front.hole.Store(true)
	cutAt := time.Now()
	send(t, alice, "bob", "during")
	waitMessage(t, bsub, "alice", "during")
	took := time.Since(cutAt)
	t.Logf("message through another endpoint %v after the path was black-holed", took.Round(10*time.Millisecond))
	if took > 5*time.Second {
		t.Fatalf("failover took %v, want within 5 s", took)
	}
}
