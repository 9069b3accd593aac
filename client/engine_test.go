package client_test

import (
	"testing"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/server"
)

func servertestConfig() server.Config { return server.Config{} }

// A text goes queued → sent → delivered → read, each step tied to the
// message, and arrives once with the time it was written.
func TestConversationWithReceipts(t *testing.T) {
	s := startServer(t)
	alice := newUser(t, s.Invite, "alice", client.Options{})
	bob := newUser(t, s.Invite, "bob", client.Options{})
	asub, bsub := alice.Subscribe(), bob.Subscribe()
	defer asub.Close()
	defer bsub.Close()
	runOnline(t, alice)
	runOnline(t, bob)

	m, err := alice.Send(testCtx(t), "bob", "see you at 6")
	if err != nil {
		t.Fatal(err)
	}
	if m.State != client.StateQueued || m.Peer != "bob" || !m.Outgoing {
		t.Fatalf("queued message = %+v", m)
	}
	got := waitMessage(t, bsub, "alice", "see you at 6")
	if got.ID != m.ID || !got.Composed.Equal(m.Composed) || !got.Unread {
		t.Fatalf("bob got %+v, want id %v composed %v, unread", got, m.ID, m.Composed)
	}
	waitState(t, asub, m.Seq, client.StateDelivered)
	if n, err := bob.MarkRead(testCtx(t), "alice"); err != nil || n != 1 {
		t.Fatalf("MarkRead = %d, %v", n, err)
	}
	read := waitState(t, asub, m.Seq, client.StateRead)
	if read.Read.IsZero() || read.ServerTime.IsZero() {
		t.Fatalf("read message = %+v", read)
	}
	convs, err := bob.Conversations(testCtx(t))
	if err != nil || len(convs) != 1 || convs[0].Peer != "alice" || convs[0].Unread != 0 || convs[0].Last.Text != "see you at 6" {
		t.Fatalf("bob's conversations = %+v, %v", convs, err)
	}
}
