package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The tests of Sesame run it against a fake server and an in-memory store,
// which is enough for this layer; bench's tests run it against a real
// server, through clientconn's Courier.

// txDB is a Transactor over a memKV: a failed fn, or a commit made to fail
// with failCommit, leaves the state as it was.
type txDB struct {
	mu         sync.Mutex
	kv         memKV
	inTx       atomic.Bool
	failCommit error
	// afterTx, if set, is called after each transaction, outside it, with
	// its result.
	afterTx func(error)
}

func (db *txDB) Update(_ context.Context, fn func(KV) error) error {
	db.mu.Lock()
	db.inTx.Store(true)
	before := maps.Clone(db.kv)
	err := fn(db.kv)
	if err == nil {
		err = db.failCommit
	}
	if err != nil {
		clear(db.kv)
		maps.Copy(db.kv, before)
	}
	db.inTx.Store(false)
	db.mu.Unlock()
	if db.afterTx != nil {
		db.afterTx(err)
	}
	return err
}

// snapshot returns a copy of the state.
func (db *txDB) snapshot() memKV {
	db.mu.Lock()
	defer db.mu.Unlock()
	return maps.Clone(db.kv)
}

// fakeDevice is one device of a user the fake server knows: a real e2e
// device, which decrypts what it is sent.
type fakeDevice struct {
	kv memKV
	id *Identity
	up *wire.SetKeysRequest
}

func newFakeDevice(t *testing.T, ik curve.KeyPair) *fakeDevice {
	t.Helper()
	d := &fakeDevice{kv: memKV{}}
	var err error
	if d.id, err = ImportIdentity(d.kv, ik, rand.Reader); err != nil {
		t.Fatal(err)
	}
	if d.up, err = KeysToUpload(d.kv, d.id, 0, 0, time.Now(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	return d
}

type fakeUser struct {
	ik      curve.KeyPair
	devices map[uint32]*fakeDevice
}

type delivery struct {
	to       string
	payloads []DevicePayload
}

// fakeServer is a Courier that answers as the server does: bundles of the
// devices asked for, and a per-device send accepted only if it names
// exactly the recipient's devices with their registration ids.
type fakeServer struct {
	t *testing.T
	// db, if set, is checked not to be in a transaction when the server
	// is called.
	db        *txDB
	onBundles func() // if set, called first in each Bundles
	withhold  uint32 // a device whose bundle Bundles never returns

	mu        sync.Mutex
	users     map[string]*fakeUser
	fetched   [][]uint32 // the devices asked for by each Bundles call
	attempts  int        // Deliver calls
	delivered []delivery // accepted sends
}

var fakeServerTime = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func (f *fakeServer) checkNoTx(op string) {
	if f.db != nil && f.db.inTx.Load() {
		f.t.Errorf("%s called inside a transaction", op)
	}
}

func (f *fakeServer) Bundles(_ context.Context, user string, devices []uint32) (*wire.GetBundlesResponse, error) {
	f.checkNoTx("Bundles")
	if f.onBundles != nil {
		f.onBundles()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetched = append(f.fetched, slices.Clone(devices))
	u := f.users[user]
	if u == nil {
		return nil, errors.New("fake server: no such user")
	}
	if devices == nil {
		devices = slices.Sorted(maps.Keys(u.devices))
	}
	resp := &wire.GetBundlesResponse{Username: user, IdentityKey: u.ik.Public.Serialize()}
	for _, d := range devices {
		if dev := u.devices[d]; dev != nil && d != f.withhold {
			resp.Bundles = append(resp.Bundles, &wire.DeviceBundle{
				Device: d, RegistrationId: dev.id.RegistrationID,
				SignedPreKey: dev.up.GetSignedPreKey(), KyberPreKey: dev.up.GetLastResortKyberPreKey(),
			})
		}
	}
	return resp, nil
}

func (f *fakeServer) Deliver(_ context.Context, to string, _ [16]byte, _ bool, payloads []DevicePayload) (Delivery, error) {
	f.checkNoTx("Deliver")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts++
	if f.attempts > 20 {
		return Delivery{}, errors.New("fake server: too many attempts")
	}
	u := f.users[to]
	var m DeviceMismatch
	named := map[uint32]bool{}
	for _, p := range payloads {
		named[p.Device] = true
		if dev := u.devices[p.Device]; dev == nil {
			m.Extra = append(m.Extra, p.Device)
		} else if dev.id.RegistrationID != p.RegistrationID {
			m.Stale = append(m.Stale, p.Device)
		}
	}
	for _, d := range slices.Sorted(maps.Keys(u.devices)) {
		if !named[d] {
			m.Missing = append(m.Missing, d)
		}
	}
	if m.Missing != nil || m.Extra != nil || m.Stale != nil {
		return Delivery{}, fmt.Errorf("fake server: %w", &m) // wrapped: Sesame must use errors.As
	}
	f.delivered = append(f.delivered, delivery{to: to, payloads: payloads})
	return Delivery{ServerTime: fakeServerTime, Devices: len(payloads)}, nil
}

// fixture is alice's device, sending with Sesame through a fake server.
type fixture struct {
	db      *txDB
	server  *fakeServer
	alice   *Sesame
	changed []string // OnIdentityChange calls
}

func newFixture(t *testing.T) *fixture {
	kv, self := newDevice(t)
	f := &fixture{db: &txDB{kv: kv}}
	f.server = &fakeServer{t: t, db: f.db, users: map[string]*fakeUser{"alice": {devices: map[uint32]*fakeDevice{}}}}
	f.alice = &Sesame{
		User: "alice", Self: self, DB: f.db, Server: f.server, Random: rand.Reader,
		OnIdentityChange: func(user string) { f.changed = append(f.changed, user) },
	}
	return f
}

// addUser makes user known to the server with the given devices, sharing
// one identity key.
func (f *fixture) addUser(t *testing.T, name string, devices ...uint32) *fakeUser {
	t.Helper()
	ik, err := curve.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u := &fakeUser{ik: ik, devices: map[uint32]*fakeDevice{}}
	for _, d := range devices {
		u.devices[d] = newFakeDevice(t, ik)
	}
	f.server.users[name] = u
	return u
}

// reregister replaces device d of u with a new one (same identity key, new
// registration id and prekeys).
func reregister(t *testing.T, u *fakeUser, d uint32) {
	t.Helper()
	old := u.devices[d].id.RegistrationID
	for u.devices[d].id.RegistrationID == old {
		u.devices[d] = newFakeDevice(t, u.ik)
	}
}

// newKeyFor records a new identity key for user in alice's store, as a
// lookup or a message would, and then marks it verified if asked. For a
// verified contact the new key is recorded as pending.
func (f *fixture) newKeyFor(t *testing.T, user string, verify bool) curve.PublicKey {
	t.Helper()
	k, err := curve.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckIdentity(f.db.kv, user, k.Public); err != nil && !errors.Is(err, ErrIdentityChanged) {
		t.Fatal(err)
	}
	if verify {
		if err := MarkVerified(f.db.kv, user); err != nil {
			t.Fatal(err)
		}
	}
	return k.Public
}

func (f *fixture) send(t *testing.T, to, text string) (Delivery, error) {
	t.Helper()
	return f.alice.Send(t.Context(), to, [16]byte{1}, []byte(text), false)
}

// expectDelivered checks that the last accepted send went to exactly
// devices of u, in that order, with their registration ids, and that each
// device decrypts its payload to text.
func expectDelivered(t *testing.T, f *fixture, u *fakeUser, text string, devices ...uint32) {
	t.Helper()
	if len(f.server.delivered) == 0 {
		t.Fatal("nothing delivered")
	}
	ps := f.server.delivered[len(f.server.delivered)-1].payloads
	var got []uint32
	for _, p := range ps {
		got = append(got, p.Device)
	}
	if !slices.Equal(got, devices) {
		t.Fatalf("delivered to devices %v, want %v in that order", got, devices)
	}
	for _, p := range ps {
		dev := u.devices[p.Device]
		if p.RegistrationID != dev.id.RegistrationID {
			t.Errorf("device %d: registration id %d, want %d", p.Device, p.RegistrationID, dev.id.RegistrationID)
		}
		d, err := Decrypt(dev.kv, dev.id, "alice", 1, p.Payload)
		if err != nil || string(d.Plaintext) != text {
			t.Errorf("device %d decrypted %q, %v; want %q", p.Device, d.Plaintext, err, text)
		}
	}
}

func sessionsWith(t *testing.T, f *fixture, user string) map[uint32]uint32 {
	t.Helper()
	devs, err := SessionDevices(f.db.snapshot(), user)
	if err != nil {
		t.Fatal(err)
	}
	return devs
}

func TestSesameFirstSendStartsASessionWithEveryDevice(t *testing.T) {
	f := newFixture(t)
	bob := f.addUser(t, "bob", 5, 1, 8, 2, 3)
	for i := range 3 {
		text := fmt.Sprintf("message %d", i)
		res, err := f.send(t, "bob", text)
		if err != nil {
			t.Fatal(err)
		}
		if want := (Delivery{ServerTime: fakeServerTime, Devices: 5}); res != want {
			t.Errorf("send %d returned %+v, want the server's %+v", i, res, want)
		}
		expectDelivered(t, f, bob, text, 1, 2, 3, 5, 8)
	}
	// One fetch, of all devices; the later sends use the sessions.
	if len(f.server.fetched) != 1 || f.server.fetched[0] != nil {
		t.Errorf("bundles fetched %v, want once for all devices", f.server.fetched)
	}
	if f.server.attempts != 3 {
		t.Errorf("%d deliveries tried for 3 sends", f.server.attempts)
	}
}

func TestSesameMismatchDropsRemovedAndReregisteredDevicesAndStartsNewOnes(t *testing.T) {
	f := newFixture(t)
	bob := f.addUser(t, "bob", 1, 2, 3)
	if _, err := f.send(t, "bob", "before"); err != nil {
		t.Fatal(err)
	}
	// Device 2 is registered again, 3 is removed, 4 is added.
	reregister(t, bob, 2)
	delete(bob.devices, 3)
	bob.devices[4] = newFakeDevice(t, bob.ik)

	if _, err := f.send(t, "bob", "after"); err != nil {
		t.Fatal(err)
	}
	expectDelivered(t, f, bob, "after", 1, 2, 4)
	if f.server.attempts != 3 {
		t.Errorf("%d deliveries tried, want 1 and then 2 (a mismatch, then the retry)", f.server.attempts)
	}
	// Bundles for the new and the re-registered device only, in one fetch.
	if len(f.server.fetched) != 2 || !slices.Equal(slices.Sorted(slices.Values(f.server.fetched[1])), []uint32{2, 4}) {
		t.Errorf("bundles fetched %v, want all and then [2 4]", f.server.fetched)
	}
	want := map[uint32]uint32{1: bob.devices[1].id.RegistrationID, 2: bob.devices[2].id.RegistrationID, 4: bob.devices[4].id.RegistrationID}
	if got := sessionsWith(t, f, "bob"); !maps.Equal(got, want) {
		t.Errorf("sessions with bob's devices (device: registration id) %v, want %v", got, want)
	}
}

func TestSesameGivesUpOnAMismatchThatPersists(t *testing.T) {
	f := newFixture(t)
	f.addUser(t, "bob", 1, 2)
	f.server.withhold = 2 // the server wants device 2 but never hands out its bundle
	_, err := f.send(t, "bob", "hello")
	var m *DeviceMismatch
	if !errors.As(err, &m) || !slices.Equal(m.Missing, []uint32{2}) {
		t.Fatalf("got %v, want the server's mismatch for device 2", err)
	}
	// The first round starts the sessions; each later one tries to deliver
	// and reconciles.
	if len(f.server.fetched) != maxRounds || f.server.attempts != maxRounds {
		t.Errorf("%d fetches and %d deliveries tried, want %d of each", len(f.server.fetched), f.server.attempts, maxRounds)
	}
}

func TestSesameRefusesAVerifiedContactWithAPendingKey(t *testing.T) {
	f := newFixture(t)
	f.addUser(t, "bob", 1)
	if _, err := f.send(t, "bob", "before"); err != nil {
		t.Fatal(err)
	}
	// Verified, and then a new key seen (as in a message from bob).
	if err := MarkVerified(f.db.kv, "bob"); err != nil {
		t.Fatal(err)
	}
	k := f.newKeyFor(t, "bob", false)
	if c, _ := LoadContact(f.db.kv, "bob"); c == nil || c.Pending == nil || *c.Pending != k {
		t.Fatalf("the new key was not recorded as pending: %+v", c)
	}
	before := f.db.snapshot()
	attempts, fetches := f.server.attempts, len(f.server.fetched)

	_, err := f.send(t, "bob", "after")
	if !errors.Is(err, ErrIdentityChanged) || !strings.Contains(err.Error(), "bob") {
		t.Fatalf("got %v, want ErrIdentityChanged naming bob", err)
	}
	if f.server.attempts != attempts || len(f.server.fetched) != fetches {
		t.Error("the server was called for a refused send")
	}
	if !maps.EqualFunc(before, f.db.snapshot(), bytes.Equal) {
		t.Error("a refused send changed the state (a session step)")
	}
}

func TestSesameRefusesAVerifiedContactWhoseBundleHasANewKey(t *testing.T) {
	f := newFixture(t)
	bob := f.addUser(t, "bob", 1)
	// Alice verified another key for bob; the server now hands out bob's
	// current one.
	old := f.newKeyFor(t, "bob", true)
	_, err := f.send(t, "bob", "hello")
	if !errors.Is(err, ErrIdentityChanged) {
		t.Fatalf("got %v, want ErrIdentityChanged", err)
	}
	if f.server.attempts != 0 {
		t.Error("a send to a verified contact whose key changed reached the server")
	}
	// The new key is kept for the user to compare, and no session uses it.
	c, err := LoadContact(f.db.snapshot(), "bob")
	if err != nil || c.Identity != old || c.Pending == nil || *c.Pending != bob.ik.Public {
		t.Errorf("contact after the refusal: %+v, %v; want the verified key and the new one pending", c, err)
	}
	if devs := sessionsWith(t, f, "bob"); len(devs) != 0 {
		t.Errorf("sessions started with the unverified key: %v", devs)
	}
	if len(f.changed) != 0 {
		t.Errorf("OnIdentityChange called for a refused send: %v", f.changed)
	}
}

func TestSesameWarnsOfAnUnverifiedContactsNewKeyAndSends(t *testing.T) {
	f := newFixture(t)
	bob := f.addUser(t, "bob", 1)
	f.newKeyFor(t, "bob", false) // another key than the server's, unverified
	if _, err := f.send(t, "bob", "hello"); err != nil {
		t.Fatal(err)
	}
	expectDelivered(t, f, bob, "hello", 1)
	if !slices.Equal(f.changed, []string{"bob"}) {
		t.Errorf("OnIdentityChange calls %v, want one for bob", f.changed)
	}
	if c, _ := LoadContact(f.db.snapshot(), "bob"); c == nil || c.Identity != bob.ik.Public || c.Pending != nil {
		t.Errorf("contact %+v: want the new key trusted", c)
	}
}

func TestSesameSendsToOwnAccountWithNoOtherDevices(t *testing.T) {
	f := newFixture(t)
	if _, err := f.send(t, "alice", "a transcript"); err != nil {
		t.Fatal(err)
	}
	if len(f.server.delivered) != 1 || len(f.server.delivered[0].payloads) != 0 || len(f.server.fetched) != 0 {
		t.Errorf("delivered %v, fetched %v; want one send to no devices and no fetch", f.server.delivered, f.server.fetched)
	}
}

func TestSesameFailedTransactionIsNotDelivered(t *testing.T) {
	f := newFixture(t)
	f.addUser(t, "bob", 1)
	if _, err := f.send(t, "bob", "before"); err != nil {
		t.Fatal(err)
	}
	errDisk := errors.New("disk full")
	f.db.failCommit = errDisk
	before := f.db.snapshot()
	if _, err := f.send(t, "bob", "lost"); !errors.Is(err, errDisk) {
		t.Fatalf("got %v, want the transaction's error", err)
	}
	if f.server.attempts != 1 {
		t.Error("a ciphertext whose session step was not saved was delivered")
	}
	if !maps.EqualFunc(before, f.db.snapshot(), bytes.Equal) {
		t.Error("the failed transaction changed the state")
	}
}

// wait waits for ch, failing the test if that takes 10 s.
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("waited 10 s for %s", what)
	}
}

// Concurrent first sends to a user share one fetch of bundles: the server
// rate-limits fetches, and each spends one-time prekeys.
func TestSesameConcurrentFirstSendsFetchBundlesOnce(t *testing.T) {
	t.Run("overlapping", func(t *testing.T) {
		f := newFixture(t)
		f.server.db = nil // the other send's transactions run while one fetches
		bob := f.addUser(t, "bob", 1, 2)
		fetching, release := make(chan struct{}, 4), make(chan struct{})
		f.server.onBundles = func() {
			fetching <- struct{}{}
			<-release
		}
		noSession := make(chan struct{}, 4)
		f.db.afterTx = func(err error) {
			if errors.Is(err, errNoSessions) {
				noSession <- struct{}{}
			}
		}
		errs := make(chan error, 2)
		for i, text := range []string{"one", "two"} {
			go func() {
				_, err := f.alice.Send(t.Context(), "bob", [16]byte{byte(i)}, []byte(text), false)
				errs <- err
			}()
			wait(t, noSession, "a send to find no session")
			if i == 0 {
				wait(t, fetching, "the first send to fetch bundles")
			}
		}
		// The second send must wait for the first's fetch, not make its
		// own. (A send that did would do so at once; 100 ms is plenty.)
		select {
		case <-fetching:
			t.Error("a second fetch of bundles while the first was under way")
		case <-time.After(100 * time.Millisecond):
		}
		close(release)
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if len(f.server.fetched) != 1 || len(f.server.delivered) != 2 {
			t.Errorf("%d fetches and %d deliveries, want 1 and 2", len(f.server.fetched), len(f.server.delivered))
		}
		for _, d := range f.server.delivered {
			if len(d.payloads) != len(bob.devices) {
				t.Errorf("a send went to %d of bob's %d devices", len(d.payloads), len(bob.devices))
			}
		}
	})
	t.Run("one after the other", func(t *testing.T) {
		// The second send found no session, but the first has started
		// them by the time the second would start its own.
		f := newFixture(t)
		bob := f.addUser(t, "bob", 1)
		var held atomic.Bool
		stalled, resume := make(chan struct{}), make(chan struct{})
		f.db.afterTx = func(err error) {
			if errors.Is(err, errNoSessions) && held.CompareAndSwap(false, true) {
				close(stalled)
				<-resume
			}
		}
		errs := make(chan error, 1)
		go func() {
			_, err := f.alice.Send(t.Context(), "bob", [16]byte{1}, []byte("two"), false)
			errs <- err
		}()
		wait(t, stalled, "the second send to find no session")
		if _, err := f.send(t, "bob", "one"); err != nil {
			t.Error(err)
		}
		close(resume)
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		expectDelivered(t, f, bob, "two", 1)
		if len(f.server.fetched) != 1 {
			t.Errorf("bundles fetched %d times, want once", len(f.server.fetched))
		}
	})
}
