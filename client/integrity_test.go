package client_test

import (
	"crypto/rand"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/internal/vault"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/server"
)

// storeDB opens a home's store beside the client (SQLite allows it).
func storeDB(t *testing.T, home string) *sql.DB {
	t.Helper()
	// The client may be writing too (its engine runs): wait for its lock.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(home, client.StoreFileName)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// damage flips one byte of a stored value; at picks it from the length.
func damage(t *testing.T, db *sql.DB, ns, key string, at func(int) int) {
	t.Helper()
	var v []byte
	if err := db.QueryRow(`SELECT value FROM kv WHERE ns = ? AND key = ?`, ns, key).Scan(&v); err != nil {
		t.Fatalf("%s/%s: %v", ns, key, err)
	}
	v[at(len(v))] ^= 0x40
	if _, err := db.Exec(`UPDATE kv SET value = ? WHERE ns = ? AND key = ?`, v, ns, key); err != nil {
		t.Fatal(err)
	}
}

// A server with the wrong key in the invite is silent (probe resistance,
// with the production window of 10 to 30 s): the client says so within a
// few seconds, and does not say it of a refused connection.
func TestWrongServerKeyReported(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t, server.Config{Link: link.Config{HandshakeTimeoutMin: 10 * time.Second, HandshakeTimeoutMax: 30 * time.Second}})
	var key [32]byte
	rand.Read(key[:])
	c := open(t, initHome(t, invite.Invite{ServerKey: key, Addrs: []string{s.Addr}}, client.Options{}))
	start := time.Now()
	_, err := c.Register(testCtx(t), "mallory")
	if !errors.Is(err, client.ErrServerKey) || !errors.Is(err, client.ErrNoAnswer) || !errors.Is(err, client.ErrOffline) {
		t.Fatalf("register with a wrong server key: %v", err)
	}
	if d := time.Since(start); d > 7*time.Second {
		t.Errorf("reported after %v", d)
	}

	r := open(t, initHome(t, invite.Invite{ServerKey: key, Addrs: []string{closedAddr(t)}}, client.Options{}))
	if _, err := r.Register(testCtx(t), "nobody"); err == nil || errors.Is(err, client.ErrNoAnswer) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("register where nothing listens: %v", err)
	}
	// The right key still gets an answer at once.
	newUser(t, s.Invite, "alice", client.Options{})
}

// A damaged vault header is reported as corrupted, not as a wrong key; a
// home from before the header's checksum opens and gets one.
func TestVaultHeaderDamageIsCorruption(t *testing.T) {
	t.Parallel()
	inv := invite.Invite{ServerKey: [32]byte{7}, Addrs: []string{"127.0.0.1:1"}}
	for _, at := range []func(int) int{
		func(n int) int { return n - 1 }, // the check value
		func(n int) int { return 0 },     // the magic
		func(n int) int { return 5 },     // the mode
	} {
		opts := initHome(t, inv, client.Options{})
		damage(t, storeDB(t, opts.Home), "meta", "vault", at)
		_, err := client.Open(testCtx(t), opts)
		if !errors.Is(err, client.ErrVaultCorrupt) || !errors.Is(err, client.ErrCorrupt) || errors.Is(err, vault.ErrWrongKey) {
			t.Fatalf("Open with a damaged header: %v", err)
		}
	}

	// A home without the checksum (made before it) opens, and a wrong key
	// is still a wrong key.
	opts := initHome(t, inv, client.Options{})
	db := storeDB(t, opts.Home)
	if _, err := db.Exec(`DELETE FROM kv WHERE ns = 'meta' AND key = 'vault.sum'`); err != nil {
		t.Fatal(err)
	}
	wrong := opts
	wrong.Unlocker = client.KeyUnlocker([32]byte{9})
	if _, err := client.Open(testCtx(t), wrong); !errors.Is(err, vault.ErrWrongKey) || errors.Is(err, client.ErrCorrupt) {
		t.Fatalf("wrong key on a home without the checksum: %v", err)
	}
	c, err := client.Open(testCtx(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	var n int
	db.QueryRow(`SELECT count(*) FROM kv WHERE ns = 'meta' AND key = 'vault.sum'`).Scan(&n)
	if n != 1 {
		t.Fatal("the checksum was not added on open")
	}
	// A damaged checksum beside a good header: the right key opens it.
	damage(t, db, "meta", "vault.sum", func(int) int { return 0 })
	if c, err := client.Open(testCtx(t), opts); err != nil {
		t.Fatalf("a damaged checksum locks the home out: %v", err)
	} else {
		c.Close()
	}
	if _, err := client.Open(testCtx(t), wrong); !errors.Is(err, vault.ErrWrongKey) {
		t.Fatalf("wrong key after the checksum was mended: %v", err)
	}
}

// The invite is stored sealed like the rest of the state: not in clear,
// and an edit of it is caught on open.
func TestStoredInviteIsSealed(t *testing.T) {
	t.Parallel()
	inv := invite.Invite{ServerKey: [32]byte{7}, Addrs: []string{"192.0.2.77:7443"}}
	opts := initHome(t, inv, client.Options{})
	db := storeDB(t, opts.Home)
	var v []byte
	if err := db.QueryRow(`SELECT value FROM kv WHERE ns = 'settings' AND key = 'invite'`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(v), "192.0.2.77") || strings.Contains(string(v), invite.Scheme) {
		t.Fatalf("the invite is stored in clear: %q", v)
	}
	damage(t, db, "settings", "invite", func(n int) int { return n / 2 })
	if _, err := client.Open(testCtx(t), opts); !errors.Is(err, client.ErrCorrupt) {
		t.Fatalf("Open with an edited invite: %v", err)
	}
}

// An invite whose endpoint list does not verify is refused by Init, with
// a sentinel callers can branch on.
func TestInitRefusesTamperedEndpointList(t *testing.T) {
	t.Parallel()
	for _, list := range [][]byte{{0x0a, 0x02, 0x08, 0x01, 0x12, 0x01, 0x00}, {0xff, 0xff}} {
		inv := invite.Invite{ServerKey: [32]byte{7}, Addrs: []string{"127.0.0.1:1"}, Endpoints: list}
		err := client.Init(testCtx(t), client.Options{Home: t.TempDir(), Unlocker: testKey}, inv)
		if !errors.Is(err, client.ErrInviteTampered) || !strings.Contains(err.Error(), "new invite") {
			t.Fatalf("Init with a list %x: %v", list, err)
		}
	}
}

// One unreadable message record is reported in its place and skipped:
// the rest of the history, the conversation list and MarkRead still work.
func TestDamagedHistoryRecordIsSkipped(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice, bob, _, bsub := onlinePair(t, s.Invite)
	for _, text := range []string{"one", "two", "three"} {
		send(t, alice, "bob", text)
	}
	waitMessage(t, bsub, "alice", "three")
	msgs := history(t, bob, "alice")
	if len(msgs) != 3 {
		t.Fatalf("history %q", texts(msgs))
	}
	db := storeDB(t, bob.Home())
	var key string
	if err := db.QueryRow(`SELECT key FROM kv WHERE ns = 'msg' AND key LIKE 'alice/%' ORDER BY key LIMIT 1 OFFSET 1`).Scan(&key); err != nil {
		t.Fatal(err)
	}
	damage(t, db, "msg", key, func(n int) int { return n / 2 })

	got, _, err := bob.History(testCtx(t), "alice", client.HistoryQuery{})
	if err != nil || len(got) != 3 || got[0].Text != "one" || got[2].Text != "three" {
		t.Fatalf("history with a damaged record: %+v %v", got, err)
	}
	if d := got[1]; d.State != client.StateUnreadable || d.ErrCode != client.ErrCodeDamaged || d.Seq != msgs[1].Seq || d.Text != "" {
		t.Fatalf("the damaged record's placeholder: %+v", d)
	}
	if got, _, err := bob.History(testCtx(t), "alice", client.HistoryQuery{Search: "e"}); err != nil || len(got) != 2 {
		t.Fatalf("search past a damaged record: %q %v", texts(got), err)
	}
	if _, err := bob.MarkRead(testCtx(t), "alice"); err != nil {
		t.Fatalf("MarkRead past a damaged record: %v", err)
	}
	if _, err := bob.Conversations(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	// The newest record damaged: the conversation list says so in its place.
	if err := db.QueryRow(`SELECT key FROM kv WHERE ns = 'msg' AND key LIKE 'alice/%' ORDER BY key DESC LIMIT 1`).Scan(&key); err != nil {
		t.Fatal(err)
	}
	damage(t, db, "msg", key, func(n int) int { return n / 2 })
	convs, err := bob.Conversations(testCtx(t))
	if err != nil || len(convs) != 1 || convs[0].Last == nil || convs[0].Last.ErrCode != client.ErrCodeDamaged {
		t.Fatalf("conversations with a damaged last message: %+v %v", convs, err)
	}
}
