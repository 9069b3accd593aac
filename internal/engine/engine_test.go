package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/engine"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const eventTimeout = 20 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var testKey = client.KeyUnlocker([32]byte{7})

// options prepares a home for inv in a short directory (Unix socket paths
// are short) and returns the engine options for it.
func options(t *testing.T, inv invite.Invite) engine.Options {
	t.Helper()
	home, err := os.MkdirTemp("", "mh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	opts := engine.Options{Client: client.Options{Home: home, Unlocker: testKey}, Version: "test"}
	if err := client.Init(testCtx(t), opts.Client, inv); err != nil {
		t.Fatal(err)
	}
	return opts
}

// user starts an engine for a new home registered as name.
func user(t *testing.T, s *servertest.Server, name string) *engine.Session {
	t.Helper()
	sess, err := engine.Connect(testCtx(t), options(t, s.Invite), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	if sess.Engine == nil {
		t.Fatal("Connect to a fresh home did not start an engine")
	}
	if _, err := sess.Register(testCtx(t), name); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return sess
}

// events subscribes to a session's event stream until the test ends.
func events(t *testing.T, s *engine.Session) <-chan engine.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := s.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// waitFor reads events until one named name satisfies match.
func waitFor[T any](t *testing.T, ch <-chan engine.Event, name string, match func(T) bool) T {
	t.Helper()
	timer := time.NewTimer(eventTimeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("event stream ended waiting for %s", name)
			}
			if ev.Name != name {
				continue
			}
			var v T
			if err := json.Unmarshal(ev.Data, &v); err != nil {
				t.Fatalf("%s event: %v: %s", name, err, ev.Data)
			}
			if match(v) {
				return v
			}
		case <-timer.C:
			t.Fatalf("no matching %s event within %v", name, eventTimeout)
		}
	}
}

func online(t *testing.T, ch <-chan engine.Event) {
	t.Helper()
	waitFor(t, ch, "state", func(st engine.Status) bool { return st.State == "online" })
}

// code is the API error code of err ("" if it is not one).
func code(err error) string {
	var ae *engine.APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// Two engines talk through the API: a text both ways with its receipts,
// a file sent by path that arrives saved and served, history and the
// conversation list.
func TestAPIConversation(t *testing.T) {
	s := servertest.Start(t, server.Config{Blobs: servertest.Blobs(t, blobstore.Options{})})
	alice, bob := user(t, s, "alice"), user(t, s, "bob")
	aev, bev := events(t, alice), events(t, bob)
	online(t, aev)
	online(t, bev)
	ctx := testCtx(t)

	m, err := alice.Send(ctx, engine.SendRequest{To: "bob", Text: "hello bob"})
	if err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, bev, "message", func(m engine.Message) bool { return m.Peer == "alice" })
	if got.Text != "hello bob" || got.ID != m.ID || !got.Unread || got.ComposedAt.IsZero() {
		t.Fatalf("bob got %+v", got)
	}
	waitFor(t, aev, "update", func(u engine.Message) bool { return u.Seq == m.Seq && u.State == "delivered" })
	convs, err := bob.Conversations(ctx)
	if err != nil || len(convs) != 1 || convs[0].Unread != 1 || convs[0].Last.Text != "hello bob" {
		t.Fatalf("bob's conversations = %+v, %v", convs, err)
	}
	if err := bob.MarkRead(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, aev, "update", func(u engine.Message) bool { return u.Seq == m.Seq && u.State == "read" && !u.ReadAt.IsZero() })

	// A file by path: bob's engine saves it; both ends serve it.
	path := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(path, []byte(strings.Repeat("minutes of the meeting\n", 5000)), 0o600); err != nil {
		t.Fatal(err)
	}
	fm, err := alice.SendFile(ctx, "bob", path, "the minutes")
	if err != nil {
		t.Fatal(err)
	}
	if fm.State != "uploading" || fm.Attachment == nil || fm.Attachment.Name != "notes.txt" {
		t.Fatalf("file message = %+v", fm)
	}
	saved := waitFor(t, bev, "update", func(u engine.Message) bool {
		return u.Attachment != nil && u.Attachment.State == "saved"
	})
	data, err := os.ReadFile(saved.Attachment.Path)
	if err != nil || string(data) != strings.Repeat("minutes of the meeting\n", 5000) || saved.Text != "the minutes" {
		t.Fatalf("saved file %s: %d bytes, %v; message %+v", saved.Attachment.Path, len(data), err, saved)
	}
	msgs, more, err := bob.History(ctx, "alice", 0, 10, "")
	if err != nil || more || len(msgs) != 2 || msgs[0].Text != "hello bob" || msgs[1].Attachment == nil {
		t.Fatalf("bob's history = %+v, more %v, %v", msgs, more, err)
	}
	if found, _, err := bob.History(ctx, "alice", 0, 10, "HELLO"); err != nil || len(found) != 1 {
		t.Fatalf("search = %+v, %v", found, err)
	}
}

// The API answers bad requests with stable codes, and refuses to confirm
// a safety number that was never shown.
func TestAPIErrors(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := user(t, s, "alice")
	user(t, s, "bob")
	ctx := testCtx(t)
	online(t, events(t, alice))
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"empty text", second(alice.Send(ctx, engine.SendRequest{To: "bob", Text: "  \n"})), engine.CodeEmptyMessage},
		{"long text", second(alice.Send(ctx, engine.SendRequest{To: "bob", Text: strings.Repeat("x", 65<<10)})), engine.CodeTooLarge},
		{"bad name", second(alice.Send(ctx, engine.SendRequest{To: "1x", Text: "hi"})), engine.CodeBadRequest},
		{"bad id", second(alice.Send(ctx, engine.SendRequest{To: "bob", Text: "hi", ID: "zz"})), engine.CodeBadRequest},
		{"unknown user", second(alice.Contact(ctx, "nobody")), engine.CodeUnknownUser},
		{"no such message", second(alice.Message(ctx, 999, 0)), engine.CodeNotFound},
		{"confirm unseen", alice.Verify(ctx, "bob", engine.Verify{}), engine.CodeNotShown},
		{"wrong digits", alice.Verify(ctx, "bob", engine.Verify{Digits: strings.Repeat("1", 60)}), engine.CodeMismatch},
	} {
		if got := code(c.err); got != c.want {
			t.Errorf("%s: error %v (code %q), want code %q", c.name, c.err, got, c.want)
		}
	}
	// Once shown, typed digits must match, and a plain confirm works.
	sn, err := alice.Safety(ctx, "bob")
	if err != nil || len(sn.Digits) != 60 || sn.Status != "unverified" {
		t.Fatalf("Safety = %+v, %v", sn, err)
	}
	if err := alice.Verify(ctx, "bob", engine.Verify{Digits: strings.Repeat("1", 60)}); code(err) != engine.CodeMismatch {
		t.Errorf("wrong digits after showing: %v, want mismatch", err)
	}
	if err := alice.Verify(ctx, "bob", engine.Verify{}); err != nil {
		t.Errorf("confirm after showing: %v", err)
	}
	if sn, err := alice.Safety(ctx, "bob"); err != nil || sn.Status != "verified" {
		t.Errorf("after confirming: %+v, %v", sn, err)
	}
}

func second[T any](_ T, err error) error { return err }

// A second command on the same home uses the running engine: it never
// opens another connection (which would supersede the engine's), and the
// engine stays online throughout.
func TestSecondCommandSharesTheEngine(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := user(t, s, "alice")
	user(t, s, "bob")
	aev := events(t, alice)
	online(t, aev)
	ctx := testCtx(t)
	opts := engine.Options{Client: client.Options{Home: alice.Engine.Client().Home(), Unlocker: testKey}}
	for i := range 5 {
		other, err := engine.Connect(ctx, opts, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if other.Engine != nil {
			t.Fatal("a second Connect started a second engine for the home")
		}
		if _, err := other.Contact(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		if _, err := other.Send(ctx, engine.SendRequest{To: "bob", Text: "ping " + string(rune('a'+i))}); err != nil {
			t.Fatal(err)
		}
		other.Close()
	}
	// No state change at all: the engine stayed online.
	select {
	case ev := <-aev:
		for ev.Name != "state" {
			select {
			case ev = <-aev:
			case <-time.After(200 * time.Millisecond):
				return
			}
		}
		t.Fatalf("the engine changed state while other commands ran: %s", ev.Data)
	case <-time.After(200 * time.Millisecond):
	}
}

// When the process running the engine stops, a command that followed it
// takes over: the next Connect starts the engine in its own process.
func TestTakeOverWhenTheEngineStops(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := user(t, s, "alice")
	home := alice.Engine.Client().Home()
	opts := engine.Options{Client: client.Options{Home: home, Unlocker: testKey}}
	follower, err := engine.Connect(testCtx(t), opts, time.Second)
	if err != nil || follower.Engine != nil {
		t.Fatalf("follower: %+v, %v", follower, err)
	}
	ch := events(t, follower)
	online(t, ch)
	alice.Close()
	for range ch {
	}
	follower.Close()
	next, err := engine.Connect(testCtx(t), opts, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if next.Engine == nil {
		t.Fatal("after the engine stopped, Connect did not start one here")
	}
	online(t, events(t, next))
}

// The socket is private to the user, and a home with a long path gets one
// under the temporary directory; an engine that died leaves a socket file
// that the next one replaces.
func TestSocketIsPrivate(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := user(t, s, "alice")
	path, err := engine.SocketPath(alice.Engine.Client().Home())
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s: %v, mode %v", path, err, fi.Mode())
	}
	long := filepath.Join(t.TempDir(), strings.Repeat("x", 120))
	lp, err := engine.SocketPath(long)
	if err != nil || len(lp) >= 100 || !strings.HasPrefix(lp, os.TempDir()) {
		t.Fatalf("socket path for a long home: %q, %v", lp, err)
	}
	// The web app's API refuses what only the magpie command may do.
	url, err := alice.App(testCtx(t))
	if err != nil || !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("App = %q, %v", url, err)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
