package client_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
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
	s := servertest.Start(t, server.Config{})
	alice := newClient(t, s.Invite, client.Options{})
	bob := newClient(t, s.Invite, client.Options{})
	register(t, alice, "alice")
	register(t, bob, "bob")

	var plain []string
	for i := range 5 {
		a := fmt.Sprintf("alice-secret-%d: the ledger is under the floor", i)
		b := fmt.Sprintf("bob-secret-%d: the boat leaves at dawn", i)
		plain = append(plain, a, b)
		if _, err := alice.SendText(testCtx(t), "bob", a); err != nil {
			t.Fatal(err)
		}
		if evs, err := collect(t, bob); err != nil || len(texts(evs)) != 1 {
			t.Fatalf("bob: %v %+v", err, evs)
		}
		if _, err := bob.SendText(testCtx(t), "alice", b); err != nil {
			t.Fatal(err)
		}
		if evs, err := collect(t, alice); err != nil || len(texts(evs)) != 1 {
			t.Fatalf("alice: %v %+v", err, evs)
		}
	}
	// Some messages stay queued (bob is offline) while we look.
	for i := range 3 {
		q := fmt.Sprintf("queued-secret-%d: not yet delivered", i)
		plain = append(plain, q)
		if _, err := alice.SendText(testCtx(t), "bob", q); err != nil {
			t.Fatal(err)
		}
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
		files, err := filepath.Glob(filepath.Join(s.Dir, "*"))
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
	scan("running: database, WAL and shared memory")
	s.Stop()
	scan("stopped: checkpointed database")

	// And the queued ciphertext is there: the scan looked at real data.
	st := s.ReopenStore(t)
	msgs, err := st.Pending(testCtx(t), storeAddr("bob", 1), 0, 100, time.Now())
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
// itself is not part of the protocol yet).
func linkDevice(t *testing.T, s *servertest.Server, user string, primary *client.Client) *client.Client {
	t.Helper()
	c := newClient(t, s.Invite, client.Options{})
	if err := client.ShareIdentityForTest(testCtx(t), primary, c); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store.AddDevice(testCtx(t), user, c.PublicKey(), time.Now()); err != nil {
		t.Fatal(err)
	}
	// The first connection adopts the account and uploads keys.
	if _, err := client.KeyCountsForTest(testCtx(t), c); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(testCtx(t), func(client.Event) {}); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSesameMultiDevice(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice1 := newClient(t, s.Invite, client.Options{})
	register(t, alice1, "alice")
	bob1 := newClient(t, s.Invite, client.Options{})
	register(t, bob1, "bob")
	// A first message sets up sessions with bob's one device.
	if _, err := alice1.SendText(testCtx(t), "bob", "before"); err != nil {
		t.Fatal(err)
	}
	bob2 := linkDevice(t, s, "bob", bob1)
	alice2 := linkDevice(t, s, "alice", alice1)

	// alice1's sessions know one device of bob: the server says two, and
	// alice1 reconciles before the send goes through.
	sent, err := alice1.SendText(testCtx(t), "bob", "to both of you")
	if err != nil || sent.Devices != 2 {
		t.Fatalf("send to two devices: %+v %v", sent, err)
	}
	for name, c := range map[string]*client.Client{"bob1": bob1, "bob2": bob2} {
		evs, err := collect(t, c)
		if got := texts(evs); err != nil || len(got) == 0 || got[len(got)-1] != "alice:to both of you" {
			t.Fatalf("%s got %v (%v)", name, got, err)
		}
	}
	// alice's other device gets a transcript of what alice1 sent.
	evs, err := collect(t, alice2)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range evs {
		if ev.Kind == client.EventSentElsewhere && ev.Text == "to both of you" && ev.Peer.User == "bob" {
			found = true
		}
	}
	if !found {
		t.Fatalf("alice2 got no transcript: %+v", evs)
	}
	hist, _ := alice2.History(testCtx(t), "bob", 10)
	if len(hist) == 0 || !hist[len(hist)-1].Outgoing || hist[len(hist)-1].Body != "to both of you" {
		t.Fatalf("alice2's history: %+v", hist)
	}
	// bob2 answers; both alice devices read it.
	if _, err := bob2.SendText(testCtx(t), "alice", "from my laptop"); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*client.Client{"alice1": alice1, "alice2": alice2} {
		evs, err := collect(t, c)
		got := texts(evs)
		if err != nil || len(got) != 1 || got[0] != "alice:from my laptop" && got[0] != "bob:from my laptop" {
			t.Fatalf("%s got %v (%v)", name, got, err)
		}
	}
}

func TestSafetyNumbersAndKeyChanges(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	var mu sync.Mutex
	var warned []string
	alice := newClient(t, s.Invite, client.Options{OnIdentityChange: func(u string) {
		mu.Lock()
		warned = append(warned, u)
		mu.Unlock()
	}})
	register(t, alice, "alice")
	bob := newClient(t, s.Invite, client.Options{})
	register(t, bob, "bob")
	carol := newClient(t, s.Invite, client.Options{})
	register(t, carol, "carol")

	ab, err := alice.SafetyNumber(testCtx(t), "bob")
	if err != nil {
		t.Fatal(err)
	}
	ba, err := bob.SafetyNumber(testCtx(t), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(ab.Digits) != 60 || ab.Digits != ba.Digits {
		t.Fatalf("safety numbers differ: %q vs %q", ab.Digits, ba.Digits)
	}
	if ac, _ := alice.SafetyNumber(testCtx(t), "carol"); ac.Digits == ab.Digits {
		t.Fatal("two contacts share a safety number")
	}
	if err := alice.MarkVerified(testCtx(t), "bob"); err != nil {
		t.Fatal(err)
	}
	for _, to := range []string{"bob", "carol"} {
		if _, err := alice.SendText(testCtx(t), to, "hi "+to); err != nil {
			t.Fatal(err)
		}
	}

	// The server (or an attacker who took it over) swaps in new keys for
	// bob and carol: a new identity and registration id.
	for _, name := range []string{"bob", "carol"} {
		var victim *client.Client = bob
		if name == "carol" {
			victim = carol
		}
		conn, err := victim.Dial(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.SetKeys(testCtx(t), servertest.KeysUpload(t, servertest.NewIdentity(t), 4321, 500, 5)); err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}

	// carol is not verified: the send goes on (to the new keys), with a
	// warning first.
	if _, err := alice.SendText(testCtx(t), "carol", "still there?"); err != nil {
		t.Fatalf("send to unverified contact with a new key: %v", err)
	}
	mu.Lock()
	if len(warned) != 1 || warned[0] != "carol" {
		t.Fatalf("warnings: %v", warned)
	}
	mu.Unlock()

	// bob is verified: refused, and refused again, until re-verified.
	for range 2 {
		if _, err := alice.SendText(testCtx(t), "bob", "still there?"); !errors.Is(err, client.ErrIdentityChanged) {
			t.Fatalf("send to a verified contact with a new key: %v", err)
		}
	}
	sn, err := alice.SafetyNumber(testCtx(t), "bob")
	if err != nil || sn.Contact.Pending == nil || sn.Digits == ab.Digits {
		t.Fatalf("changed safety number: %+v %v", sn, err)
	}
	if err := alice.MarkVerified(testCtx(t), "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendText(testCtx(t), "bob", "verified again"); err != nil {
		t.Fatalf("after re-verifying: %v", err)
	}
}

func TestPrekeyRefillAndRotation(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := servertest.Start(t, server.Config{BundleBurst: 1000})
	bob := newClient(t, s.Invite, client.Options{Now: clock})
	register(t, bob, "bob")
	if c, err := client.KeyCountsForTest(testCtx(t), bob); err != nil || c.PreKeys != 100 || c.KyberPreKeys != 100 {
		t.Fatalf("after register: %+v %v", c, err)
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
	if err := bob.Sync(testCtx(t), func(client.Event) {}); err != nil {
		t.Fatal(err)
	}
	if c, _ := client.KeyCountsForTest(testCtx(t), bob); c.PreKeys != 100 || c.KyberPreKeys != 100 {
		t.Fatalf("after refill: %+v", c)
	}
	// A week later the signed and last-resort prekeys are replaced.
	mu.Lock()
	now = now.Add(8 * 24 * time.Hour)
	mu.Unlock()
	if err := bob.Sync(testCtx(t), func(client.Event) {}); err != nil {
		t.Fatal(err)
	}
	later, err := fetcher.GetBundles(testCtx(t), "bob", nil)
	if err != nil {
		t.Fatal(err)
	}
	if later.GetBundles()[0].GetSignedPreKey().GetId() == first.GetBundles()[0].GetSignedPreKey().GetId() {
		t.Fatal("signed prekey not rotated after a week")
	}
	// Messages sent to the old signed prekey still decrypt: a session
	// started from the first bundle's keys would use it. Here: a normal
	// conversation keeps working across the rotation.
	alice := newClient(t, s.Invite, client.Options{})
	register(t, alice, "alice")
	if _, err := alice.SendText(testCtx(t), "bob", "after rotation"); err != nil {
		t.Fatal(err)
	}
	if evs, err := collect(t, bob); err != nil || len(texts(evs)) != 1 {
		t.Fatalf("bob after rotation: %+v %v", evs, err)
	}
}

func storeAddr(user string, dev uint32) store.DeviceAddr {
	return store.DeviceAddr{User: user, Device: dev}
}
