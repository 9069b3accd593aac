package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/magpie-im/magpie/store"
)

// keysFor builds an upload whose byte values say which device they belong
// to, so a test can tell bundles apart.
func keysFor(dev uint32, reg uint32, firstID uint32, n int) store.Keys {
	k := store.Keys{
		IdentityKey:     []byte("identity-of-account"),
		RegistrationID:  reg,
		SignedPreKey:    &store.SignedPreKey{ID: 7, Key: fmt.Appendf(nil, "spk-%d", dev), Signature: []byte("sig")},
		LastResortKyber: &store.SignedPreKey{ID: 9, Key: fmt.Appendf(nil, "kyber-lr-%d", dev), Signature: []byte("sig")},
	}
	for i := range n {
		id := firstID + uint32(i)
		k.PreKeys = append(k.PreKeys, store.PreKey{ID: id, Key: fmt.Appendf(nil, "pk-%d-%d", dev, id)})
		k.KyberPreKeys = append(k.KyberPreKeys, store.SignedPreKey{ID: id, Key: fmt.Appendf(nil, "kpk-%d-%d", dev, id), Signature: []byte("ksig")})
	}
	return k
}

func setKeys(t *testing.T, s store.Store, dev store.DeviceAddr, k store.Keys) store.KeyCounts {
	t.Helper()
	c, err := s.SetKeys(context.Background(), dev, k, 1000)
	if err != nil {
		t.Fatalf("SetKeys(%v): %v", dev, err)
	}
	return c
}

func testKeysAndBundles(t *testing.T, h Harness) {
	s, ctx := h.Store, context.Background()
	users(t, s, 1, "alice", "bob")
	addDevice(t, s, "bob", 50)

	if _, _, err := s.Bundles(ctx, "nobody", nil, true); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Bundles(unknown user) = %v, want ErrNotFound", err)
	}
	if _, _, err := s.Bundles(ctx, "bob", nil, true); !errors.Is(err, store.ErrNoKeys) {
		t.Fatalf("Bundles(user without keys) = %v, want ErrNoKeys", err)
	}
	if _, err := s.SetKeys(ctx, addr("bob", 9), keysFor(9, 1, 1, 1), 1000); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetKeys(unknown device) = %v, want ErrNotFound", err)
	}
	if c := setKeys(t, s, addr("bob", 1), keysFor(1, 111, 1, 2)); c != (store.KeyCounts{PreKeys: 2, KyberPreKeys: 2}) {
		t.Fatalf("counts after upload: %+v", c)
	}
	// Device 2 has no keys yet: it is not in the bundle set.
	id, bs, err := s.Bundles(ctx, "bob", nil, true)
	if err != nil || string(id) != "identity-of-account" || len(bs) != 1 || bs[0].Device != 1 || bs[0].RegistrationID != 111 {
		t.Fatalf("Bundles: %q %+v %v", id, bs, err)
	}
	b := bs[0]
	if string(b.SignedPreKey.Key) != "spk-1" || b.SignedPreKey.ID != 7 || string(b.SignedPreKey.Signature) != "sig" {
		t.Fatalf("signed prekey %+v", b.SignedPreKey)
	}
	if b.PreKey == nil || string(b.PreKey.Key) != "pk-1-1" || string(b.KyberPreKey.Key) != "kpk-1-1" || string(b.KyberPreKey.Signature) != "ksig" {
		t.Fatalf("one-time keys %+v %+v", b.PreKey, b.KyberPreKey)
	}
	// Without one-time keys: the last-resort Kyber key, no EC prekey, and
	// nothing consumed.
	_, bs, err = s.Bundles(ctx, "bob", nil, false)
	if err != nil || len(bs) != 1 || bs[0].PreKey != nil || string(bs[0].KyberPreKey.Key) != "kyber-lr-1" || string(bs[0].SignedPreKey.Key) != "spk-1" {
		t.Fatalf("a bundle without one-time keys: %+v %v", bs, err)
	}
	if c, err := s.KeyCounts(ctx, addr("bob", 1)); err != nil || c != (store.KeyCounts{PreKeys: 1, KyberPreKeys: 1}) {
		t.Fatalf("KeyCounts after a bundle without one-time keys: %+v %v", c, err)
	}
	if _, _, err := s.Bundles(ctx, "bob", []uint32{2}, true); !errors.Is(err, store.ErrNoKeys) {
		t.Fatalf("Bundles(device without keys) = %v, want ErrNoKeys", err)
	}
	setKeys(t, s, addr("bob", 2), keysFor(2, 222, 1, 0))
	_, bs, err = s.Bundles(ctx, "bob", nil, true)
	if err != nil || len(bs) != 2 || bs[1].Device != 2 {
		t.Fatalf("Bundles after device 2 uploads: %+v %v", bs, err)
	}
	// Device 2 has no one-time keys: no EC prekey, and the last-resort Kyber key.
	if bs[1].PreKey != nil || string(bs[1].KyberPreKey.Key) != "kyber-lr-2" || bs[1].KyberPreKey.ID != 9 {
		t.Fatalf("exhausted bundle %+v", bs[1])
	}
	// Device 1 had two of each; this fetch took the second.
	if bs[0].PreKey == nil || bs[0].PreKey.ID != 2 {
		t.Fatalf("second fetch: %+v", bs[0].PreKey)
	}
	if c, err := s.KeyCounts(ctx, addr("bob", 1)); err != nil || c != (store.KeyCounts{}) {
		t.Fatalf("KeyCounts after two fetches: %+v %v", c, err)
	}
	// A new signed prekey replaces the old one; the registration id is kept.
	setKeys(t, s, addr("bob", 1), store.Keys{SignedPreKey: &store.SignedPreKey{ID: 8, Key: []byte("spk-new"), Signature: []byte("s2")}})
	_, bs, _ = s.Bundles(ctx, "bob", []uint32{1}, true)
	if bs[0].SignedPreKey.ID != 8 || string(bs[0].SignedPreKey.Key) != "spk-new" || bs[0].RegistrationID != 111 {
		t.Fatalf("after rotation: %+v", bs[0])
	}
	// The registration id shows on the device.
	u, err := s.User(ctx, "bob")
	if err != nil || u.Devices[0].RegistrationID != 111 || u.Devices[1].RegistrationID != 222 {
		t.Fatalf("User: %+v %v", u, err)
	}
}

func testPreKeysOnce(t *testing.T, h Harness) {
	s, ctx := h.Store, context.Background()
	users(t, s, 1, "bob")
	const n = 40
	setKeys(t, s, addr("bob", 1), keysFor(1, 5, 100, n))
	var mu sync.Mutex
	seen := map[uint32]int{}
	kyber := map[uint32]int{}
	var wg sync.WaitGroup
	for range n + 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, bs, err := s.Bundles(ctx, "bob", nil, true)
			if err != nil {
				t.Errorf("Bundles: %v", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if pk := bs[0].PreKey; pk != nil {
				seen[pk.ID]++
			}
			kyber[bs[0].KyberPreKey.ID]++
		}()
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("%d distinct one-time prekeys handed out, want %d", len(seen), n)
	}
	for id, times := range seen {
		if times != 1 {
			t.Fatalf("one-time prekey %d handed out %d times", id, times)
		}
	}
	// n one-time Kyber keys once each, then the last-resort key (id 9) for the rest.
	if kyber[9] != 10 || len(kyber) != n+1 {
		t.Fatalf("kyber keys handed out: %v", kyber)
	}
}

func testIdentityConflict(t *testing.T, h Harness) {
	s, ctx := h.Store, context.Background()
	users(t, s, 1, "bob")
	addDevice(t, s, "bob", 50)
	setKeys(t, s, addr("bob", 1), keysFor(1, 11, 1, 0))
	// A lone keyed device may replace the account identity (a reinstall).
	other := keysFor(1, 11, 1, 0)
	other.IdentityKey = []byte("another identity")
	setKeys(t, s, addr("bob", 1), other)
	// Once a second device depends on it, it may not.
	second := keysFor(2, 12, 1, 0)
	second.IdentityKey = []byte("another identity")
	setKeys(t, s, addr("bob", 2), second)
	third := keysFor(1, 11, 1, 0) // device 1 back to the first identity
	if _, err := s.SetKeys(ctx, addr("bob", 1), third, 1000); !errors.Is(err, store.ErrIdentityConflict) {
		t.Fatalf("identity replaced under another device: %v", err)
	}
	if id, _, _ := s.Bundles(ctx, "bob", nil, true); string(id) != "another identity" {
		t.Fatalf("identity now %q", id)
	}
}

func testQueueDepth(t *testing.T, h Harness) {
	s, ctx := h.Store, context.Background()
	users(t, s, 1, "alice", "bob")
	addDevice(t, s, "bob", 50)
	if n, err := s.QueueDepth(ctx); err != nil || n != 0 {
		t.Fatalf("empty: %d %v", n, err)
	}
	q := sendOne(t, s, t0, send(addr("alice", 1), 1, "bob", "x", t0.Add(day), 0))
	sendOne(t, s, t0, send(addr("alice", 1), 2, "bob", "y", t0.Add(day), 0))
	if n, _ := s.QueueDepth(ctx); n != 4 {
		t.Fatalf("two sends to two devices: depth %d, want 4", n)
	}
	// An ack removes one item and queues a receipt for alice.
	commit(t, s, t0, nil, []*store.Ack{{Device: q[0].To, Seqs: []uint64{q[0].Seq}, Expires: t0.Add(day)}})
	if n, _ := s.QueueDepth(ctx); n != 4 {
		t.Fatalf("after an ack with a receipt: depth %d, want 4", n)
	}
}

func testKeyLimit(t *testing.T, h Harness) {
	s, ctx := h.Store, context.Background()
	users(t, s, 1, "bob")
	if _, err := s.SetKeys(ctx, addr("bob", 1), keysFor(1, 5, 1, 8), 10); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetKeys(ctx, addr("bob", 1), keysFor(1, 5, 100, 3), 10); !errors.Is(err, store.ErrKeyLimit) {
		t.Fatalf("upload past the limit: %v", err)
	}
	if c, _ := s.KeyCounts(ctx, addr("bob", 1)); c.PreKeys != 8 {
		t.Fatalf("a refused upload stored keys: %+v", c)
	}
	// Re-uploading ids already stored does not count twice.
	if _, err := s.SetKeys(ctx, addr("bob", 1), keysFor(1, 5, 1, 8), 10); err != nil {
		t.Fatalf("idempotent re-upload: %v", err)
	}
}

// perDevice builds a per-device enqueue; payload i is "p<device>".
func perDevice(from store.DeviceAddr, id int, to string, devs map[uint32]uint32) *store.Enqueue {
	e := send(from, id, to, "", t0.Add(day), 0)
	e.Payload = nil
	ids := make([]uint32, 0, len(devs))
	for d := range devs {
		ids = append(ids, d)
	}
	slices.Sort(ids)
	for _, d := range ids {
		e.Devices = append(e.Devices, store.DevicePayload{Device: d, RegistrationID: devs[d], Payload: fmt.Appendf(nil, "p%d", d)})
	}
	return e
}

func testPerDevice(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	addDevice(t, s, "bob", 50)
	addDevice(t, s, "alice", 60)
	setKeys(t, s, addr("bob", 1), keysFor(1, 11, 1, 0))
	setKeys(t, s, addr("bob", 2), keysFor(2, 12, 1, 0))
	setKeys(t, s, addr("alice", 1), keysFor(1, 21, 1, 0))
	setKeys(t, s, addr("alice", 2), keysFor(2, 22, 1, 0))

	q := sendOne(t, s, t0, perDevice(addr("alice", 1), 1, "bob", map[uint32]uint32{1: 11, 2: 12}))
	if len(q) != 2 || string(q[0].Payload) != "p1" || string(q[1].Payload) != "p2" || q[1].To != addr("bob", 2) {
		t.Fatalf("queued %+v", q)
	}
	for d, want := range map[uint32]string{1: "p1", 2: "p2"} {
		got := pending(t, s, addr("bob", d), 0, 10, t0)
		if len(got) != 1 || string(got[0].Payload) != want {
			t.Fatalf("bob device %d has %+v", d, got)
		}
	}
	// To one's own account: every other device, never the sender's.
	q = sendOne(t, s, t0, perDevice(addr("alice", 1), 2, "alice", map[uint32]uint32{2: 22}))
	if len(q) != 1 || q[0].To != addr("alice", 2) {
		t.Fatalf("sync copy queued %+v", q)
	}
	e := perDevice(addr("alice", 1), 3, "alice", map[uint32]uint32{1: 21, 2: 22})
	commit(t, s, t0, []*store.Enqueue{e}, nil)
	var mm *store.MismatchError
	if !errors.As(e.Err, &mm) || !slices.Equal(mm.Extra, []uint32{1}) {
		t.Fatalf("copy to the sending device itself: %v", e.Err)
	}
}

func testPerDeviceMismatch(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	addDevice(t, s, "bob", 50)
	addDevice(t, s, "bob", 51) // device 3 never uploads keys: not expected
	setKeys(t, s, addr("bob", 1), keysFor(1, 11, 1, 0))
	setKeys(t, s, addr("bob", 2), keysFor(2, 12, 1, 0))
	from := addr("alice", 1)

	for name, tc := range map[string]struct {
		devs                  map[uint32]uint32
		missing, extra, stale []uint32
	}{
		"missing": {devs: map[uint32]uint32{1: 11}, missing: []uint32{2}},
		"extra":   {devs: map[uint32]uint32{1: 11, 2: 12, 3: 1, 4: 1}, extra: []uint32{3, 4}},
		"stale":   {devs: map[uint32]uint32{1: 11, 2: 99}, stale: []uint32{2}},
		"all":     {devs: map[uint32]uint32{2: 99, 7: 1}, missing: []uint32{1}, extra: []uint32{7}, stale: []uint32{2}},
	} {
		e := perDevice(from, 10, "bob", tc.devs)
		ok := send(from, 11, "bob", "broadcast", t0.Add(day), 0) // same batch, unaffected
		commit(t, s, t0, []*store.Enqueue{e, ok}, nil)
		var mm *store.MismatchError
		if !errors.Is(e.Err, store.ErrMismatchedDevices) || !errors.As(e.Err, &mm) {
			t.Fatalf("%s: Err = %v, want a MismatchError", name, e.Err)
		}
		if !slices.Equal(mm.Missing, tc.missing) || !slices.Equal(mm.Extra, tc.extra) || !slices.Equal(mm.Stale, tc.stale) {
			t.Fatalf("%s: %+v, want missing %v extra %v stale %v", name, mm, tc.missing, tc.extra, tc.stale)
		}
		if e.Queued != nil || ok.Err != nil {
			t.Fatalf("%s: mismatch queued %v; other enqueue err %v", name, e.Queued, ok.Err)
		}
		// A refused send leaves no dedup record: the retry is accepted.
		commit(t, s, t0, nil, []*store.Ack{{Device: addr("bob", 1), Seqs: seqs(ok.Queued)}})
	}
	retry := perDevice(from, 10, "bob", map[uint32]uint32{1: 11, 2: 12})
	if q := sendOne(t, s, t0, retry); len(q) != 2 {
		t.Fatalf("corrected retry queued %d", len(q))
	}
	// A user none of whose devices has keys cannot be written to per device.
	users(t, s, 100, "carol")
	e := perDevice(from, 12, "carol", nil)
	e.Devices = []store.DevicePayload{} // empty, not nil: still per-device mode
	commit(t, s, t0, []*store.Enqueue{e}, nil)
	if !errors.Is(e.Err, store.ErrNoKeys) {
		t.Fatalf("per-device send to a user without keys: %v", e.Err)
	}
}
