package server_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/wire"
)

func TestKeyUploadValidation(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	bob := s.Register(t, "bob")
	id := servertest.NewIdentity(t)

	good := servertest.KeysUpload(t, id, 1234, 100, 3)
	counts, err := bob.SetKeys(ctx(t), good)
	if err != nil || counts != (clientconn.KeyCounts{PreKeys: 3, KyberPreKeys: 3}) {
		t.Fatalf("upload: %+v %v", counts, err)
	}
	for name, mutate := range map[string]func(r *wire.SetKeysRequest){
		"bad signed prekey signature":  func(r *wire.SetKeysRequest) { r.SignedPreKey.Signature[5] ^= 1 },
		"bad kyber signature":          func(r *wire.SetKeysRequest) { r.KyberPreKeys[0].Signature[0] ^= 1 },
		"signed by another identity":   func(r *wire.SetKeysRequest) { r.IdentityKey = servertest.NewIdentity(t).Public.Serialize() },
		"signed keys without identity": func(r *wire.SetKeysRequest) { r.IdentityKey = nil },
		"short identity":               func(r *wire.SetKeysRequest) { r.IdentityKey = r.IdentityKey[:10] },
		"wrong key type":               func(r *wire.SetKeysRequest) { r.PreKeys[0].PublicKey[0] = 0x08 },
		"registration id too big":      func(r *wire.SetKeysRequest) { r.RegistrationId = 1 << 20 },
		"truncated kyber key": func(r *wire.SetKeysRequest) {
			r.LastResortKyberPreKey.PublicKey = r.LastResortKyberPreKey.PublicKey[:100]
		},
	} {
		req := proto.Clone(good).(*wire.SetKeysRequest)
		mutate(req)
		if _, err := bob.SetKeys(ctx(t), req); !errors.Is(err, clientconn.ErrBadRequest) {
			t.Errorf("%s: %v, want ErrBadRequest", name, err)
		}
	}
	tooMany := servertest.KeysUpload(t, id, 1234, 1000, 0)
	for i := range wire.MaxKeysPerUpload + 1 {
		tooMany.PreKeys = append(tooMany.PreKeys, &wire.PreKey{Id: uint32(i), PublicKey: good.PreKeys[0].PublicKey})
	}
	if _, err := bob.SetKeys(ctx(t), tooMany); !errors.Is(err, clientconn.ErrTooLarge) {
		t.Errorf("oversized upload: %v", err)
	}
	// Nothing rejected was stored.
	if c := s.Reconnect(t, bob).KeyCounts(); c != (clientconn.KeyCounts{PreKeys: 3, KyberPreKeys: 3}) {
		t.Fatalf("counts in hello: %+v", c)
	}
	// Unregistered devices cannot upload.
	anon := s.Dial(t, servertest.NewKey(t))
	if _, err := anon.SetKeys(ctx(t), good); !errors.Is(err, clientconn.ErrUnauthenticated) {
		t.Fatalf("unregistered upload: %v", err)
	}
}

func TestBundles(t *testing.T) {
	s := servertest.Start(t, server.Config{BundleTargetBurst: 10}) // four fetches of bob
	alice := s.Register(t, "alice")
	bob := s.Register(t, "bob")
	if _, err := alice.GetBundles(ctx(t), "bob", nil); !errors.Is(err, clientconn.ErrNoKeys) {
		t.Fatalf("bundles before upload: %v", err)
	}
	if _, err := alice.GetBundles(ctx(t), "nobody", nil); !errors.Is(err, clientconn.ErrUnknownUser) {
		t.Fatalf("bundles of unknown user: %v", err)
	}
	id := servertest.NewIdentity(t)
	up := servertest.KeysUpload(t, id, 77, 1, 11)
	if _, err := bob.SetKeys(ctx(t), up); err != nil {
		t.Fatal(err)
	}
	b, err := alice.GetBundles(ctx(t), "bob", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.GetIdentityKey(), id.Public.Serialize()) || len(b.GetBundles()) != 1 {
		t.Fatalf("bundle response %v", b)
	}
	db := b.GetBundles()[0]
	if db.GetDevice() != 1 || db.GetRegistrationId() != 77 || !proto.Equal(db.GetSignedPreKey(), up.GetSignedPreKey()) ||
		!proto.Equal(db.GetPreKey(), up.GetPreKeys()[0]) || !proto.Equal(db.GetKyberPreKey(), up.GetKyberPreKeys()[0]) {
		t.Fatalf("bundle %v", db)
	}
	// That fetch left 10: the next one drops bob below the threshold, and
	// bob, online, is told to refill.
	if _, err := alice.GetBundles(ctx(t), "bob", []uint32{1}); err != nil {
		t.Fatal(err)
	}
	for {
		p := servertest.NextPush(t, bob.Conn, wait)
		if p.KeysLow != nil {
			if *p.KeysLow != (clientconn.KeyCounts{PreKeys: 9, KyberPreKeys: 9}) {
				t.Fatalf("keys-low push %+v", p.KeysLow)
			}
			break
		}
	}
	if _, err := alice.GetBundles(ctx(t), "bob", []uint32{5}); !errors.Is(err, clientconn.ErrNoKeys) {
		t.Fatalf("bundle for a device that does not exist: %v", err)
	}
}

func TestConcurrentBundleFetchesGetDistinctPreKeys(t *testing.T) {
	s := servertest.Start(t, server.Config{BundleBurst: 1000, BundleTargetBurst: 1000})
	bob := s.Register(t, "bob")
	const n = 30
	if _, err := bob.SetKeys(ctx(t), servertest.KeysUpload(t, servertest.NewIdentity(t), 5, 1, n)); err != nil {
		t.Fatal(err)
	}
	fetchers := make([]*servertest.User, 6)
	for i := range fetchers {
		fetchers[i] = s.Register(t, "fetcher"+string(rune('a'+i)))
	}
	var mu sync.Mutex
	var got []uint32
	var wg sync.WaitGroup
	for _, f := range fetchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n / len(fetchers) {
				b, err := f.GetBundles(ctx(t), "bob", nil)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				got = append(got, b.GetBundles()[0].GetPreKey().GetId())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(got)
	if len(slices.Compact(slices.Clone(got))) != n || got[0] != 1 || got[n-1] != n {
		t.Fatalf("one-time prekeys handed out: %v", got)
	}
}

func TestPerDeviceSend(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	alice := s.Register(t, "alice")
	bob := s.Register(t, "bob")
	key2 := servertest.NewKey(t)
	if _, err := s.Store.AddDevice(ctx(t), "bob", key2.Public, time.Now()); err != nil {
		t.Fatal(err)
	}
	bob2 := s.Dial(t, key2)
	id := servertest.NewIdentity(t)
	if _, err := bob.SetKeys(ctx(t), servertest.KeysUpload(t, id, 11, 1, 0)); err != nil {
		t.Fatal(err)
	}

	// bob2 has no keys yet: a send naming only device 1 is complete.
	one := []clientconn.DevicePayload{{Device: 1, RegistrationID: 11, Payload: []byte("for 1")}}
	if _, err := alice.SendPerDevice(ctx(t), "bob", clientconn.NewMessageID(), false, one); err != nil {
		t.Fatal(err)
	}
	if e := servertest.NextEnvelope(t, bob.Conn, wait); string(e.Payload) != "for 1" {
		t.Fatalf("device 1 got %q", e.Payload)
	}
	// Once bob2 uploads keys, the same list is incomplete.
	if _, err := bob2.SetKeys(ctx(t), servertest.KeysUpload(t, id, 12, 1, 0)); err != nil {
		t.Fatal(err)
	}
	_, err := alice.SendPerDevice(ctx(t), "bob", clientconn.NewMessageID(), false, []clientconn.DevicePayload{
		{Device: 1, RegistrationID: 99, Payload: []byte("x")}, {Device: 3, RegistrationID: 1, Payload: []byte("x")},
	})
	var se *clientconn.ServerError
	if !errors.Is(err, clientconn.ErrMismatchedDevices) || !errors.As(err, &se) || se.Mismatch == nil ||
		!slices.Equal(se.Mismatch.Missing, []uint32{2}) || !slices.Equal(se.Mismatch.Extra, []uint32{3}) || !slices.Equal(se.Mismatch.Stale, []uint32{1}) {
		t.Fatalf("mismatch: %v %+v", err, se)
	}
	both := []clientconn.DevicePayload{{Device: 1, RegistrationID: 11, Payload: []byte("p1")}, {Device: 2, RegistrationID: 12, Payload: []byte("p2")}}
	r, err := alice.SendPerDevice(ctx(t), "bob", clientconn.NewMessageID(), false, both)
	if err != nil || r.Devices != 2 {
		t.Fatalf("corrected send: %+v %v", r, err)
	}
	if e := servertest.NextEnvelope(t, bob.Conn, wait); string(e.Payload) != "p1" {
		t.Fatalf("device 1 got %q", e.Payload)
	}
	if e := servertest.NextEnvelope(t, bob2, wait); string(e.Payload) != "p2" {
		t.Fatalf("device 2 got %q", e.Payload)
	}
	// Ephemeral per-device: each online device gets its own payload.
	n, err := alice.SendPerDevice(ctx(t), "bob", clientconn.NewMessageID(), true, both)
	if err != nil || n.Devices != 2 {
		t.Fatalf("ephemeral per-device: %+v %v", n, err)
	}
	if e := servertest.NextEnvelope(t, bob2, wait); !e.Ephemeral || string(e.Payload) != "p2" {
		t.Fatalf("device 2 ephemeral %+v", e)
	}
	// Sesame sync copy: bob's device 1 writes to its own account, naming
	// only device 2.
	if _, err := bob.SendPerDevice(ctx(t), "bob", clientconn.NewMessageID(), false, both[1:]); err != nil {
		t.Fatalf("sync copy: %v", err)
	}
	// A per-device send to a user without keys is refused clearly.
	carol := s.Register(t, "carol")
	_ = carol
	if _, err := alice.SendPerDevice(ctx(t), "carol", clientconn.NewMessageID(), false, nil); !errors.Is(err, clientconn.ErrNoKeys) {
		t.Fatalf("per-device send to a user without keys: %v", err)
	}
}

// Bundle fetches spend the target's one-time prekeys, so they are budgeted
// per account, not per connection: reconnecting refills nothing. An account
// gets one user's one-time keys a few times and then bundles without them
// (sessions still start, from the last-resort keys); a user's one-time keys
// go to everyone together at a bounded rate; and an account's fetches in
// all are limited (a whole group's worth at once).
func TestBundleFetchLimits(t *testing.T) {
	s := servertest.Start(t, server.Config{
		BundleBurst: 6, BundleRate: 0.001, BundleTargetBurst: 2, BundleTargetRate: 0.001,
		BundleTargetAllBurst: 3, BundleTargetAllRate: 0.001,
	})
	var targets []*servertest.User
	for i := range 3 {
		u := s.Register(t, fmt.Sprintf("target%d", i))
		if _, err := u.SetKeys(ctx(t), servertest.KeysUpload(t, servertest.NewIdentity(t), 5, 1, 10)); err != nil {
			t.Fatal(err)
		}
		targets = append(targets, u)
	}
	// fetch fetches target's bundle from a new connection of user's
	// device and reports whether it carried a one-time prekey.
	fetch := func(user *servertest.User, target string) (oneTime bool, err error) {
		t.Helper()
		b, err := s.Reconnect(t, user).GetBundles(ctx(t), target, nil)
		if err != nil {
			return false, err
		}
		db := b.GetBundles()[0]
		if db.GetSignedPreKey() == nil || db.GetKyberPreKey() == nil {
			t.Fatalf("a bundle without its signed keys: %v", db)
		}
		return db.GetPreKey() != nil, nil
	}
	left := func(u *servertest.User) int {
		return int(s.Reconnect(t, u).KeyCounts().PreKeys)
	}
	f := s.Register(t, "fetcher")
	// One target, each time on a new connection: one-time keys twice, then
	// bundles without them, and target0's supply stops going down.
	for i, want := range []bool{true, true, false, false} {
		if got, err := fetch(f, "target0"); err != nil || got != want {
			t.Fatalf("fetch %d of target0: one-time key %v (%v), want %v", i+1, got, err, want)
		}
	}
	if n := left(targets[0]); n != 8 {
		t.Fatalf("target0 has %d one-time prekeys left, want 8", n)
	}
	// Many accounts: target1's one-time keys go to everyone together at
	// most three times.
	var oneTime int
	for i := range 5 {
		got, err := fetch(s.Register(t, fmt.Sprintf("sybil%d", i)), "target1")
		if err != nil {
			t.Fatal(err)
		}
		if got {
			oneTime++
		}
	}
	if n := left(targets[1]); oneTime != 3 || n != 7 {
		t.Fatalf("five accounts got %d one-time keys of target1 (want 3); it has %d left (want 7)", oneTime, n)
	}
	// The fetcher's budget in all (6, 4 spent) runs out, across
	// connections too.
	for range 2 {
		if _, err := fetch(f, "target2"); err != nil {
			t.Fatal(err)
		}
	}
	_, err := fetch(f, "target2")
	var se *clientconn.ServerError
	if !errors.Is(err, clientconn.ErrRateLimited) || !errors.As(err, &se) || se.RetryAfter <= 0 {
		t.Fatalf("a fetch over the account's budget: %v, want a rate limit with a retry hint", err)
	}
}
