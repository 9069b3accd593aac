package client

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/magpie-im/magpie/invite"
)

// benchClient is a registered-looking client in a temporary home whose
// conversation with "bob" holds n messages (written straight into its
// store, in one transaction), for benchmarks of reading the history.
func benchClient(b *testing.B, n int) *Client {
	b.Helper()
	ctx := context.Background()
	opts := Options{Home: filepath.Join(b.TempDir(), "home"), Unlocker: KeyUnlocker([32]byte{5})}
	if err := Init(ctx, opts, invite.Invite{Addrs: []string{"127.0.0.1:1"}}); err != nil {
		b.Fatal(err)
	}
	c, err := Open(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	err = c.update(ctx, func(t sealedTx) error {
		for i := range n {
			r := &msgRecord{ID: NewMessageID().slice(), Peer: "bob", Outgoing: i%2 == 0, Device: 1, State: StateReceived,
				Text: fmt.Sprintf("message %d: %s", i, "the quick brown fox jumps over the lazy dog"), Composed: int64(i), Stored: int64(i)}
			if r.Outgoing {
				r.State = StateRead
			}
			if err := addMessage(t, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func (id MessageID) slice() []byte { return id[:] }

// BenchmarkHistoryNewestPage reads what a conversation view shows first:
// the newest 50 of 10,000 messages.
func BenchmarkHistoryNewestPage(b *testing.B) {
	c := benchClient(b, 10_000)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		msgs, more, err := c.History(ctx, "bob", HistoryQuery{Limit: 50})
		if err != nil || len(msgs) != 50 || !more {
			b.Fatalf("History = %d, %v, %v", len(msgs), more, err)
		}
	}
}

// BenchmarkHistorySearch searches all 10,000 messages of a conversation
// for text that one in a hundred has.
func BenchmarkHistorySearch(b *testing.B) {
	c := benchClient(b, 10_000)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		msgs, _, err := c.History(ctx, "bob", HistoryQuery{Limit: 500, Search: "MESSAGE 99"})
		if err != nil || len(msgs) == 0 {
			b.Fatalf("History = %d, %v", len(msgs), err)
		}
	}
}

// BenchmarkConversations lists the conversations (one here, whose last
// message and read mark are read).
func BenchmarkConversations(b *testing.B) {
	c := benchClient(b, 10_000)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if cs, err := c.Conversations(ctx); err != nil || len(cs) != 1 {
			b.Fatalf("Conversations = %v, %v", cs, err)
		}
	}
}
