package client

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/magpie-im/magpie/content"
	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// Only this account's own devices may say "I sent this" (a transcript): a
// transcript from another user is shown as unreadable and never enters the
// history as a message this user sent. The same message from one's own
// other device is accepted (so the check is what refuses the forgery).
func TestTranscriptOnlyFromOwnDevices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := servertest.Start(t, server.Config{})
	newDevice := func(name string) *Client {
		c := openNew(t, ctx, s, name)
		if _, err := c.Register(ctx, name); err != nil {
			t.Fatal(err)
		}
		return c
	}
	alice, mallory := newDevice("alice"), newDevice("mallory")
	forged, err := content.EncodeSent("carol", NewMessageID(), &content.Content{Body: &content.Content_Text{Text: &content.Text{Body: "I owe mallory 1000"}}})
	if err != nil {
		t.Fatal(err)
	}
	sendContent(t, ctx, mallory, "alice", forged)
	if err := alice.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if msgs, _, _ := alice.History(ctx, "carol", HistoryQuery{}); len(msgs) != 0 {
		t.Fatalf("a transcript from mallory entered alice's history as hers: %+v", msgs)
	}
	msgs, _, err := alice.History(ctx, "mallory", HistoryQuery{})
	if err != nil || len(msgs) != 1 || msgs[0].State != StateUnreadable {
		t.Fatalf("alice's history with mallory = %+v, %v; want one unreadable message", msgs, err)
	}

	// The same, sent by alice's first device to her second (as Sesame's
	// transcripts go): accepted as a message she sent to carol.
	alice2 := newDevice2(t, ctx, s, alice)
	sendContent(t, ctx, alice, "alice", forged)
	if err := alice2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if msgs, _, _ := alice2.History(ctx, "carol", HistoryQuery{}); len(msgs) != 1 || !msgs[0].Outgoing || msgs[0].Text != "I owe mallory 1000" {
		t.Fatalf("alice's own transcript on her second device: %+v", msgs)
	}
}

// sendContent sends any content, end to end, as c would send a message.
func sendContent(t *testing.T, ctx context.Context, c *Client, to string, payload []byte) {
	t.Helper()
	err := c.withConn(ctx, func(conn *clientconn.Conn) error {
		ses, err := c.sesame(ctx, conn)
		if err != nil {
			return err
		}
		_, err = ses.Send(ctx, to, NewMessageID(), payload, false)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// newDevice2 links a second device to primary's account, as device linking
// will: the same identity key, a new device key added to the account.
func newDevice2(t *testing.T, ctx context.Context, s *servertest.Server, primary *Client) *Client {
	t.Helper()
	c := openNew(t, ctx, s, "second")
	id, err := primary.identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.update(ctx, func(t sealedTx) error { _, err := e2e.ImportIdentity(t, id.Key, rand.Reader); return err }); err != nil {
		t.Fatal(err)
	}
	me, _ := primary.Account()
	if _, err := s.Store.AddDevice(ctx, me.User, c.PublicKey(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Lookup(ctx, me.User); err != nil { // adopts the account, uploads keys
		t.Fatal(err)
	}
	return c
}

// openNew opens a client in a new home for s (closed when the test ends).
func openNew(t *testing.T, ctx context.Context, s *servertest.Server, name string) *Client {
	t.Helper()
	opts := Options{Home: filepath.Join(t.TempDir(), name), Unlocker: KeyUnlocker([32]byte{4})}
	if err := Init(ctx, opts, s.Invite); err != nil {
		t.Fatal(err)
	}
	c, err := Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
