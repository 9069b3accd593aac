package client_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/store"
)

// TestNoReadableDataOnServer runs a conversation, leaves some of it queued,
// then reads every file of the server's data directory: no plaintext and no
// private key of either client may be there.
func TestNoReadableDataOnServer(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice := newUser(t, s.Invite, "alice", client.Options{})
	bob := newUser(t, s.Invite, "bob", client.Options{})
	asub, bsub := subscribe(t, alice), subscribe(t, bob)
	runOnline(t, alice)
	stopBob := runOnline(t, bob)

	var plain []string
	for i := range 5 {
		a := fmt.Sprintf("alice-secret-%d: the ledger is under the floor", i)
		b := fmt.Sprintf("bob-secret-%d: the boat leaves at dawn", i)
		plain = append(plain, a, b)
		send(t, alice, "bob", a)
		waitMessage(t, bsub, "alice", a)
		send(t, bob, "alice", b)
		waitMessage(t, asub, "bob", b)
	}
	// Some messages stay queued (bob is offline) while we look.
	stopBob()
	for i := range 3 {
		q := fmt.Sprintf("queued-secret-%d: not yet delivered", i)
		plain = append(plain, q)
		waitState(t, asub, send(t, alice, "bob", q).Seq, client.StateSent)
	}
	var secrets [][]byte
	for _, c := range []*client.Client{alice, bob} {
		ks, err := client.SecretsForTest(testCtx(t), c)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, ks...)
	}
	if len(secrets) < 10 {
		t.Fatalf("only %d private keys found to look for", len(secrets))
	}
	scan := func(when string) {
		var files []string
		err := filepath.WalkDir(s.Dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				files = append(files, path)
			}
			return err
		})
		if err != nil || len(files) == 0 {
			t.Fatalf("server files %v %v", files, err)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, text := range plain {
				if bytes.Contains(data, []byte(text)) || bytes.Contains(data, []byte(text[:14])) {
					t.Fatalf("%s (%s) contains plaintext %q", filepath.Base(f), when, text)
				}
			}
			for _, k := range secrets {
				if bytes.Contains(data, k) {
					t.Fatalf("%s (%s) contains a client's private key", filepath.Base(f), when)
				}
			}
		}
	}
	scan("running: databases, logs and shared memory")
	s.Stop()
	scan("stopped: checkpointed and flushed databases")

	// And the queued ciphertext is there: the scan looked at real data.
	st := s.ReopenStore(t)
	msgs, err := st.Pending(testCtx(t), store.DeviceAddr{User: "bob", Device: 1}, 0, 100, time.Now())
	var queued int
	for _, m := range msgs {
		if m.Kind == store.KindMessage && len(m.Payload) > 0 {
			queued++
		}
	}
	if err != nil || queued != 3 {
		t.Fatalf("queued for bob: %d messages of %d items (%v)", queued, len(msgs), err)
	}
}

// linkDevice adds a second device to an account: a fresh client home
// whose device key the server is told about directly (device linking
// itself is not part of the protocol yet). Its first connection adopts the
// account and uploads its keys.
func linkDevice(t *testing.T, s *servertest.Server, user string, primary *client.Client) *client.Client {
	t.Helper()
	c := open(t, initHome(t, s.Invite, client.Options{}))
	if err := client.ShareIdentityForTest(testCtx(t), primary, c); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store.AddDevice(testCtx(t), user, c.PublicKey(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Lookup(testCtx(t), user); err != nil {
		t.Fatal(err)
	}
	if d, ok := c.Account(); !ok || d.User != user || d.Device != 2 {
		t.Fatalf("the linked device adopted %+v", d)
	}
	return c
}

// Each device of the recipient gets a message, and the sender's other
// devices a transcript of it, so the conversation is whole on each.
func TestSesameMultiDevice(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice1 := newUser(t, s.Invite, "alice", client.Options{})
	bob1 := newUser(t, s.Invite, "bob", client.Options{})
	// A first message sets up sessions with bob's one device.
	send(t, alice1, "bob", "before")
	syncOK(t, alice1)
	bob2 := linkDevice(t, s, "bob", bob1)
	alice2 := linkDevice(t, s, "alice", alice1)
	subs := map[string]*client.Subscription{}
	for name, c := range map[string]*client.Client{"alice1": alice1, "alice2": alice2, "bob1": bob1, "bob2": bob2} {
		subs[name] = subscribe(t, c)
	}

	// alice1's sessions know one device of bob: the server says two, and
	// alice1 reconciles before the send goes through.
	m := send(t, alice1, "bob", "to both of you")
	syncOK(t, alice1)
	if got := message(t, alice1, m.Seq); got.State != client.StateSent {
		t.Fatalf("send to two devices: %s %s", got.State, got.Err)
	}
	for _, name := range []string{"bob1", "bob2"} {
		syncOK(t, map[string]*client.Client{"bob1": bob1, "bob2": bob2}[name])
		if got := incoming(drain(subs[name])); len(got) == 0 || got[len(got)-1] != "to both of you" {
			t.Fatalf("%s got %q", name, got)
		}
	}
	// alice's other device gets a transcript of what alice1 sent.
	syncOK(t, alice2)
	found := false
	for _, ev := range drain(subs["alice2"]) {
		found = found || ev.Kind == client.EventMessage && ev.Message.Outgoing && ev.Message.Peer == "bob" && ev.Message.Text == "to both of you"
	}
	if h := history(t, alice2, "bob"); !found || len(h) == 0 || !h[len(h)-1].Outgoing || h[len(h)-1].Text != "to both of you" || h[len(h)-1].ID != m.ID {
		t.Fatalf("alice2's transcript: event %v, history %+v", found, h)
	}

	// bob2 answers; both alice devices read it, and bob1 sees the answer.
	send(t, bob2, "alice", "from my laptop")
	syncOK(t, bob2)
	for _, c := range []struct {
		name string
		c    *client.Client
		out  bool
	}{{"alice1", alice1, false}, {"alice2", alice2, false}, {"bob1", bob1, true}} {
		syncOK(t, c.c)
		msgs := history(t, c.c, map[bool]string{false: "bob", true: "alice"}[c.out])
		if last := msgs[len(msgs)-1]; last.Text != "from my laptop" || last.Outgoing != c.out {
			t.Fatalf("%s's last message: %+v", c.name, last)
		}
	}
}

// Safety numbers match at both ends and differ between contacts. When the
// server swaps in new keys, an unverified contact's change is announced and
// sending goes on; a verified contact's is refused until verified again.
func TestSafetyNumbersAndKeyChanges(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice := newUser(t, s.Invite, "alice", client.Options{})
	bob := newUser(t, s.Invite, "bob", client.Options{})
	carol := newUser(t, s.Invite, "carol", client.Options{})
	asub := subscribe(t, alice)

	ab, err := alice.SafetyNumber(testCtx(t), "bob")
	if err != nil {
		t.Fatal(err)
	}
	ba, err := bob.SafetyNumber(testCtx(t), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(ab.Digits) != 60 || ab.Digits != ba.Digits || ab.Verified {
		t.Fatalf("safety numbers %+v vs %+v", ab, ba)
	}
	if ac, err := alice.SafetyNumber(testCtx(t), "carol"); err != nil || ac.Digits == ab.Digits {
		t.Fatalf("two contacts share a safety number (%v)", err)
	}
	wrong := string('0'+(ba.Digits[0]-'0'+1)%10) + ba.Digits[1:] // one digit off
	if err := alice.MarkVerified(testCtx(t), "bob", client.Verification{Digits: wrong}); !errors.Is(err, client.ErrMismatch) {
		t.Fatalf("MarkVerified with wrong digits: %v", err)
	}
	if err := alice.MarkVerified(testCtx(t), "bob", client.Verification{Scanned: ba.Scannable}); err != nil {
		t.Fatal(err)
	}
	runOnline(t, alice)
	for _, to := range []string{"bob", "carol"} {
		waitState(t, asub, send(t, alice, to, "hi "+to).Seq, client.StateSent)
	}

	// The server (or an attacker who took it over) swaps in new keys for
	// bob and carol: a new identity and registration id.
	for _, victim := range []*client.Client{bob, carol} {
		conn := s.Dial(t, client.DeviceKeyForTest(victim))
		if _, err := conn.SetKeys(testCtx(t), servertest.KeysUpload(t, servertest.NewIdentity(t), 4321, 500, 5)); err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}

	// carol is not verified: the send goes on (to the new keys), with a
	// warning first.
	m := send(t, alice, "carol", "still there?")
	waitEvent(t, asub, "carol's key change", func(ev client.Event) bool {
		return ev.Kind == client.EventIdentityChanged && ev.Peer == "carol"
	})
	waitState(t, asub, m.Seq, client.StateSent)

	// bob is verified: refused, and refused again, until re-verified.
	m = send(t, alice, "bob", "still there?")
	if got := waitState(t, asub, m.Seq, client.StateFailed); got.ErrCode != "identity_changed" {
		t.Fatalf("send to a verified contact with a new key: %+v", got)
	}
	if _, err := alice.Send(testCtx(t), "bob", "still there?"); !errors.Is(err, client.ErrIdentityChanged) {
		t.Fatalf("second send to a verified contact with a new key: %v", err)
	}
	if convs, _ := alice.Conversations(testCtx(t)); !slices.ContainsFunc(convs, func(c client.Conversation) bool { return c.Peer == "bob" && c.IdentityChanged }) {
		t.Fatalf("conversations do not show bob's change: %+v", convs)
	}
	sn, err := alice.SafetyNumber(testCtx(t), "bob")
	if err != nil || !sn.Changed || sn.Verified || sn.Digits == ab.Digits {
		t.Fatalf("changed safety number: %+v %v", sn, err)
	}
	if err := alice.MarkVerified(testCtx(t), "bob", client.Verification{}); err != nil {
		t.Fatal(err)
	}
	waitState(t, asub, send(t, alice, "bob", "verified again").Seq, client.StateSent)
}

// One-time prekeys are refilled when they run low, and the signed prekey
// is rotated after a week; conversations go on across both.
func TestPrekeyRefillAndRotation(t *testing.T) {
	t.Parallel()
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	s := servertest.Start(t, server.Config{BundleBurst: 1000, BundleTargetBurst: 1000})
	bob := newUser(t, s.Invite, "bob", client.Options{Now: clock})
	counts := func() (int, int) {
		conn := s.Dial(t, client.DeviceKeyForTest(bob))
		defer conn.Close()
		c := conn.KeyCounts()
		return c.PreKeys, c.KyberPreKeys
	}
	if ec, kyber := counts(); ec != 100 || kyber != 100 {
		t.Fatalf("after register: %d, %d one-time prekeys", ec, kyber)
	}
	fetcher := s.Register(t, "fetcher")
	first, err := fetcher.GetBundles(testCtx(t), "bob", nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 79 {
		if _, err := fetcher.GetBundles(testCtx(t), "bob", nil); err != nil {
			t.Fatal(err)
		}
	}
	// 20 left: bob's next connection refills to 100.
	syncOK(t, bob)
	if ec, kyber := counts(); ec != 100 || kyber != 100 {
		t.Fatalf("after refill: %d, %d", ec, kyber)
	}
	// A week later the signed and last-resort prekeys are replaced.
	skew.Store(int64(8 * 24 * time.Hour))
	syncOK(t, bob)
	later, err := fetcher.GetBundles(testCtx(t), "bob", nil)
	if err != nil {
		t.Fatal(err)
	}
	if later.GetBundles()[0].GetSignedPreKey().GetId() == first.GetBundles()[0].GetSignedPreKey().GetId() {
		t.Fatal("signed prekey not rotated after a week")
	}
	// A conversation started after the rotation works.
	alice := newUser(t, s.Invite, "alice", client.Options{})
	send(t, alice, "bob", "after rotation")
	syncOK(t, alice)
	bsub := subscribe(t, bob)
	syncOK(t, bob)
	if got := incoming(drain(bsub)); !slices.Equal(got, []string{"after rotation"}) {
		t.Fatalf("bob after rotation: %q", got)
	}
}
