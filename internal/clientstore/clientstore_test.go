package clientstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/magpie-im/magpie/internal/vault"
)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "home"), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	v, _, err := vault.NewFromKey([32]byte{9})
	if err != nil {
		t.Fatal(err)
	}
	s.SetSealer(v)
	return s
}

func TestSecretsSealedAtRest(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "home")
	s, err := Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Locked: secrets can be neither written nor read.
	if err := s.AddOutgoing(ctx, "bob", [16]byte{1}, "x", time.Now()); !errors.Is(err, ErrLocked) {
		t.Fatalf("locked store wrote a body: %v", err)
	}
	if err := s.KV(ctx).Put("ns", "k", []byte("v")); !errors.Is(err, ErrLocked) {
		t.Fatalf("locked store wrote a secret: %v", err)
	}
	v, _, _ := vault.NewFromKey([32]byte{7})
	s.SetSealer(v)
	const secretText = "meet at the north gate at nine"
	const secretKey = "PRIVATE-KEY-MATERIAL-0123456789"
	if err := s.AddOutgoing(ctx, "bob", [16]byte{1}, secretText, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddIncoming(ctx, Message{Peer: "bob", PeerDevice: 1, ID: [16]byte{2}, Body: secretText + " ok", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.KV(ctx).Put("e2e.self", "identity", []byte(secretKey)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSecretSetting(ctx, SettingDeviceKey, []byte(secretKey)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.KV(ctx).Get("e2e.self", "identity"); err != nil || string(got) != secretKey {
		t.Fatalf("KV round trip: %q %v", got, err)
	}
	if h, err := s.History(ctx, "", 10); err != nil || len(h) != 2 || h[0].Body != secretText {
		t.Fatalf("history: %+v %v", h, err)
	}
	s.Close()
	// Neither the database nor its WAL holds the plaintext or the key.
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte(secretText)) || bytes.Contains(b, []byte(secretKey)) {
			t.Fatalf("%s holds a secret in clear", f)
		}
	}
	// The wrong key cannot read it back.
	s, err = Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wrong, _, _ := vault.NewFromKey([32]byte{8})
	s.SetSealer(wrong)
	if _, err := s.History(ctx, "", 10); err == nil {
		t.Fatal("history decrypted under the wrong key")
	}
}

func TestOpenWithoutCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nothing")
	if _, err := Open(dir, false); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("Open(create=false) = %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Open(create=false) created the directory")
	}
	s, err := Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, FileName): 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: mode %v (%v), want %v", path, fi.Mode().Perm(), err, want)
		}
	}
}

func TestSettings(t *testing.T) {
	s, ctx := open(t), context.Background()
	if v, err := s.Get(ctx, "k"); v != nil || err != nil {
		t.Fatalf("unset: %q %v", v, err)
	}
	s.Set(ctx, "k", []byte("1"))
	s.Set(ctx, "k", []byte("2"))
	if v, _ := s.Get(ctx, "k"); string(v) != "2" {
		t.Fatalf("got %q", v)
	}
}

func TestOutboxLifecycle(t *testing.T) {
	s, ctx := open(t), context.Background()
	now := time.UnixMilli(1_700_000_000_000)
	ids := [][16]byte{{1}, {2}, {3}}
	for i, id := range ids {
		if err := s.AddOutgoing(ctx, "bob", id, "m"+string(rune('0'+i)), now); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddOutgoing(ctx, "bob", ids[0], "again", now); err == nil {
		t.Fatal("same outgoing id stored twice")
	}
	s.MarkSent(ctx, ids[1], now.Add(time.Second))
	s.Drop(ctx, ids[2])
	out, err := s.Outbox(ctx)
	if err != nil || len(out) != 1 || out[0].ID != ids[0] {
		t.Fatalf("outbox: %+v %v", out, err)
	}
	// Drop never removes a message the server has acknowledged.
	s.Drop(ctx, ids[1])
	if ok, err := s.MarkDelivered(ctx, ids[1], now.Add(2*time.Second)); !ok || err != nil {
		t.Fatalf("MarkDelivered: %v %v", ok, err)
	}
	s.MarkDelivered(ctx, ids[1], now.Add(5*time.Second)) // first receipt wins
	h, _ := s.History(ctx, "bob", 10)
	if len(h) != 2 || !h[1].Delivered.Equal(now.Add(2*time.Second)) {
		t.Fatalf("history: %+v", h)
	}
	if ok, _ := s.MarkDelivered(ctx, [16]byte{9}, now); ok {
		t.Fatal("receipt for an unknown message matched")
	}
}

func TestIncomingDedup(t *testing.T) {
	s, ctx := open(t), context.Background()
	m := Message{Peer: "alice", PeerDevice: 1, ID: [16]byte{7}, Body: "hi", Created: time.Now(), ServerTime: time.Now()}
	for i, want := range []bool{true, false} {
		fresh, err := s.AddIncoming(ctx, m)
		if err != nil || fresh != want {
			t.Fatalf("AddIncoming #%d = %v, %v; want %v", i, fresh, err, want)
		}
	}
	// The same id from another device, or another user, is another message.
	m.PeerDevice = 2
	if fresh, _ := s.AddIncoming(ctx, m); !fresh {
		t.Fatal("other device's message taken for a duplicate")
	}
	m.Peer = "carol"
	if fresh, _ := s.AddIncoming(ctx, m); !fresh {
		t.Fatal("other user's message taken for a duplicate")
	}
	if h, _ := s.History(ctx, "", 10); len(h) != 3 {
		t.Fatalf("history has %d", len(h))
	}
}
