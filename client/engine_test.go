package client_test

import (
	"testing"
	"time"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/store"
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

// A running engine's Sync waits for what was queued after its connection
// opened: the server's first "drained" report covered only the backlog at
// connect time. The message is put back in bob's queue behind the router's
// back, so nothing pushes it unless Sync asks.
func TestSyncOnRunningEngineReceivesWhatWasQueuedSinceConnect(t *testing.T) {
	s := startServer(t)
	alice := newUser(t, s.Invite, "alice", client.Options{})
	bob := newUser(t, s.Invite, "bob", client.Options{})
	send(t, alice, "bob", "queued behind the router's back")
	syncOK(t, alice)
	now := time.Now()
	msgs := pending(t, s, "bob", now)
	if len(msgs) != 1 {
		t.Fatalf("bob's queue holds %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	bobDev := store.DeviceAddr{User: "bob", Device: 1}
	if err := s.Store.Commit(testCtx(t), &store.Batch{Now: now, Acks: []*store.Ack{{Device: bobDev, Seqs: []uint64{m.Seq}, Expires: now.Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}

	runOnline(t, bob)
	syncOK(t, bob) // the connection's first report is in
	again := &store.Enqueue{From: m.From, ClientID: [store.ClientIDSize]byte{0xee}, To: "bob", Payload: m.Payload, Expires: now.Add(time.Hour)}
	if err := s.Store.Commit(testCtx(t), &store.Batch{Now: now, Enqueues: []*store.Enqueue{again}}); err != nil || again.Err != nil {
		t.Fatal(err, again.Err)
	}
	syncOK(t, bob)
	hist, _, err := bob.History(testCtx(t), "alice", client.HistoryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 1 || hist[0].Text != "queued behind the router's back" {
		t.Fatalf("after Sync bob's history with alice is %v, want the queued message", hist)
	}
}
