package client_test

import (
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// A recipient whose queue is full holds back only the messages to them:
// the sender's message to someone else goes at once, and the one held says
// whose queue is full.
func TestFullRecipientHoldsBackOnlyTheirMessages(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t, server.Config{QueueLimit: 2, SenderShare: -1}) // one sender fills the queue
	alice, asub := onlineUser(t, s.Invite, "alice", client.Options{})
	newUser(t, s.Invite, "bob", client.Options{}) // offline from now on
	_, csub := onlineUser(t, s.Invite, "carol", client.Options{})
	sent(t, alice, "bob", "one")
	sent(t, alice, "bob", "two")
	held := send(t, alice, "bob", "three") // bob's queue is full
	waitEvent(t, asub, "the third held back", func(ev client.Event) bool {
		return ev.Kind == client.EventUpdate && ev.Message.Seq == held.Seq && ev.Message.Err != ""
	})
	start := time.Now()
	m := sent(t, alice, "carol", "not behind bob")
	waitGroupMessage(t, csub, "alice", "alice", "not behind bob")
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("the message to carol took %v behind bob's full queue", d)
	}
	if m.State == client.StateQueued {
		t.Fatalf("the message to carol: %+v", m)
	}
	h := message(t, alice, held.Seq)
	if h.State != client.StateQueued || !strings.Contains(h.Err, `"bob"`) || strings.Contains(h.Err, "carol") {
		t.Fatalf("the held message: state %s, %q; want queued, naming bob", h.State, h.Err)
	}
}
