package client

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/magpie-im/magpie/internal/vault"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/link"
)

// A home made by an earlier development build (schema 3: tables of
// settings and messages, values sealed under their row's labels) opens in
// this one with its account, key, history and outbox intact, and the old
// tables gone.
func TestLegacyHomeIsConverted(t *testing.T) {
	ctx := context.Background()
	home := filepath.Join(t.TempDir(), "home")
	key := [32]byte{9}
	v, h, err := vault.NewFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := h.MarshalBinary()
	dk, err := link.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	inv := invite.Invite{ServerKey: [32]byte{1}, Addrs: []string{"127.0.0.1:7443"}}

	db, err := sql.Open("sqlite", "file:"+filepath.Join(mustMkdir(t, home), StoreFileName))
	if err != nil {
		t.Fatal(err)
	}
	label := func(out bool, peer string, dev uint32, id byte) string {
		return fmt.Sprintf("msg/%t/%s/%d/%x", out, peer, dev, []byte{id, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	}
	id := func(b byte) []byte { return append([]byte{b}, make([]byte, 15)...) }
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`CREATE TABLE settings (key TEXT PRIMARY KEY, value BLOB NOT NULL) STRICT`, nil},
		{`CREATE TABLE kv (ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (ns, key)) STRICT, WITHOUT ROWID`, nil},
		{`CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, outgoing INTEGER NOT NULL, peer TEXT NOT NULL,
			peer_device INTEGER NOT NULL, client_id BLOB NOT NULL, body BLOB NOT NULL, content BLOB NOT NULL DEFAULT x'',
			created INTEGER NOT NULL, server_time INTEGER NOT NULL DEFAULT 0, delivered INTEGER NOT NULL DEFAULT 0) STRICT`, nil},
		{`INSERT INTO settings VALUES ('vault_header', ?), ('invite', ?), ('username', ?), ('device_id', ?), ('device_private_key', ?)`,
			[]any{hb, []byte(inv.String()), []byte("alice"), []byte("3"), v.Seal([]byte("settings/device_private_key"), dk.Private[:])}},
		{`INSERT INTO kv VALUES ('e2e.self', 'identity', ?)`, []any{v.Seal([]byte("kv/e2e.self/identity"), []byte(`{"x":1}`))}},
		{`INSERT INTO messages (outgoing, peer, peer_device, client_id, body, created, server_time, delivered) VALUES
			(0, 'bob', 1, ?, ?, 1000, 1000, 0), (1, 'bob', 0, ?, ?, 2000, 2001, 2500), (1, 'bob', 0, ?, ?, 3000, 0, 0)`,
			[]any{id(1), v.Seal([]byte(label(false, "bob", 1, 1)), []byte("hi alice")),
				id(2), v.Seal([]byte(label(true, "bob", 0, 2)), []byte("hi bob")),
				id(3), v.Seal([]byte(label(true, "bob", 0, 3)), []byte("still queued"))}},
		{`PRAGMA user_version = 3`, nil},
	} {
		if _, err := db.Exec(q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	db.Close()

	c, err := Open(ctx, Options{Home: home, Unlocker: KeyUnlocker(key)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if me, ok := c.Account(); !ok || me != (DeviceAddr{"alice", 3}) || c.PublicKey() != dk.Public || c.Invite().String() != inv.String() {
		t.Fatalf("account %+v %v, key %x, invite %s", me, ok, c.PublicKey(), c.Invite())
	}
	msgs, _, err := c.History(ctx, "bob", HistoryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		text  string
		state MessageState
	}{{"hi alice", StateReceived}, {"hi bob", StateDelivered}, {"still queued", StateQueued}}
	if len(msgs) != len(want) {
		t.Fatalf("history: %+v", msgs)
	}
	for i, w := range want {
		if msgs[i].Text != w.text || msgs[i].State != w.state || msgs[i].Unread {
			t.Errorf("message %d = %+v, want %q %s (read)", i, msgs[i], w.text, w.state)
		}
	}
	if out, err := c.Outbox(ctx); err != nil || len(out) != 1 || out[0].Text != "still queued" {
		t.Errorf("outbox = %+v, %v", out, err)
	}
	var ident []byte
	c.view(ctx, func(t sealedTx) error { ident, err = t.Get("e2e.self", "identity"); return err })
	if string(ident) != `{"x":1}` {
		t.Errorf("the end-to-end state did not survive: %q", ident)
	}
	// Opened again: nothing converted twice.
	c.Close()
	c2, err := Open(ctx, Options{Home: home, Unlocker: KeyUnlocker(key)})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if msgs, _, _ := c2.History(ctx, "bob", HistoryQuery{}); len(msgs) != 3 {
		t.Errorf("after a second open: %d messages", len(msgs))
	}
}

func mustMkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}
