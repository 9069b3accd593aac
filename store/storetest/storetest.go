// Package storetest is a conformance suite for store.Store implementations.
//
// An implementation's test calls Run with a function that opens a fresh,
// empty store for each subtest:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Harness {
//			s := openEmpty(t) // closes itself via t.Cleanup
//			return storetest.Harness{Store: s, Reopen: ...}
//		})
//	}
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/magpie-im/magpie/store"
)

// Store is what the suite drives: a store.Store that can also add a device
// to an existing user (device linking is not in store.Store yet, but the
// suite needs several devices per user to check fan-out).
type Store interface {
	store.Store
	// AddDevice registers key as the user's next device. It returns
	// store.ErrNotFound for an unknown user and store.ErrKeyInUse for a
	// registered key.
	AddDevice(ctx context.Context, user string, key [store.KeySize]byte, now time.Time) (store.Device, error)
}

// Harness is one fresh, empty store under test.
type Harness struct {
	Store Store
	// Reopen, if set, closes Store and opens the same data again, as a
	// restarted server would, and returns the new store. The harness is
	// responsible for eventually closing what it returns. Nil skips the
	// durability tests.
	Reopen func(t *testing.T) Store
}

// Run runs the conformance suite. open is called once per subtest and must
// return a harness around a new, empty store that is closed when t ends
// (closing an already-closed store there must be tolerated).
func Run(t *testing.T, open func(t *testing.T) Harness) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"CreateUserAndLookup", testCreateUser},
		{"DuplicateName", testDuplicateName},
		{"DuplicateKey", testDuplicateKey},
		{"NotFound", testNotFound},
		{"AddDevice", testAddDevice},
		{"FanOut", testFanOut},
		{"DedupAcrossBatches", testDedupAcrossBatches},
		{"DedupWithinBatch", testDedupWithinBatch},
		{"DedupKeyIsSenderDevice", testDedupKey},
		{"UnknownRecipientIsolated", testUnknownRecipient},
		{"QueueLimit", testQueueLimit},
		{"QueueLimitAnyDeviceFull", testQueueLimitAnyDevice},
		{"QueueLimitCountsStoredAndBatch", testQueueLimitStoredAndBatch},
		{"AckCreatesReceipt", testAckReceipt},
		{"AckOtherDeviceIgnored", testAckOtherDevice},
		{"LargeAckOfOtherDeviceOfSameUserIgnored", testLargeAckSameUserOtherDevice},
		{"AckUnknownAndRepeatedSeqs", testAckUnknown},
		{"AckManySeqs", testAckMany},
		{"AcksOfManyDevicesInOneBatch", testAcksOfManyDevices},
		{"ReceiptIgnoresQueueLimit", testReceiptNoLimit},
		{"Pending", testPending},
		{"SeqNeverReused", testSeqNeverReused},
		{"Expire", testExpire},
		{"DedupExpiry", testDedupExpiry},
		{"FailedCommitAppliesNothing", testFailedCommit},
		{"Durability", testDurability},
		{"Concurrent", testConcurrent},
		{"Close", testClose},
		{"KeysAndBundles", testKeysAndBundles},
		{"OneTimePreKeysHandedOutOnce", testPreKeysOnce},
		{"KeyLimit", testKeyLimit},
		{"IdentityConflict", testIdentityConflict},
		{"QueueDepth", testQueueDepth},
		{"PerDevicePayloads", testPerDevice},
		{"PerDeviceMismatch", testPerDeviceMismatch},
		{"GroupSend", testGroupSend},
		{"GroupSendDuplicate", testGroupSendDuplicate},
		{"GroupSendQueueFull", testGroupSendQueueFull},
		{"GroupSendRefused", testGroupSendRefused},
		{"GroupChange", testGroupChange},
		{"GroupChangeNotices", testGroupChangeNotices},
		{"GroupEmptyState", testGroupEmptyState},
		{"GroupAck", testGroupAck},
		{"GroupAckMany", testGroupAckMany},
		{"GroupExpire", testGroupExpire},
		{"GroupBatchOrder", testGroupBatchOrder},
		{"GroupDurability", testGroupDurability},
		{"GroupFailedCommit", testGroupFailedCommit},
		{"SenderShare", testSenderShare},
		{"SenderShareCountsStoredGroupMessages", testSenderShareCountsStoredGroupMessages},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

// t0 has a nanosecond part so that time round-trips are checked exactly.
var t0 = time.Unix(1_700_000_000, 123_456_789)

const day = 24 * time.Hour

func key(n int) [store.KeySize]byte {
	var k [store.KeySize]byte
	k[0], k[1], k[31] = byte(n), byte(n>>8), 0xAA
	return k
}

func cid(n int) [store.ClientIDSize]byte {
	var id [store.ClientIDSize]byte
	id[0], id[1], id[15] = byte(n), byte(n>>8), 0x55
	return id
}

func addr(user string, dev uint32) store.DeviceAddr { return store.DeviceAddr{User: user, Device: dev} }

// users creates each name with one device; keys are distinct across calls
// within one store as long as base differs by more than len(names).
func users(t *testing.T, s Store, base int, names ...string) {
	t.Helper()
	for i, n := range names {
		if _, err := s.CreateUser(context.Background(), n, key(base+i), t0); err != nil {
			t.Fatalf("CreateUser(%q): %v", n, err)
		}
	}
}

func addDevice(t *testing.T, s Store, user string, k int) store.Device {
	t.Helper()
	d, err := s.AddDevice(context.Background(), user, key(k), t0)
	if err != nil {
		t.Fatalf("AddDevice(%q): %v", user, err)
	}
	return d
}

func send(from store.DeviceAddr, id int, to string, payload string, expires time.Time, limit int) *store.Enqueue {
	return &store.Enqueue{
		From:       from,
		ClientID:   cid(id),
		To:         to,
		Payload:    []byte(payload),
		Expires:    expires,
		QueueLimit: limit,
	}
}

func commit(t *testing.T, s store.Store, now time.Time, enqueues []*store.Enqueue, acks []*store.Ack) {
	t.Helper()
	if err := s.Commit(context.Background(), &store.Batch{Now: now, Enqueues: enqueues, Acks: acks}); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

// sendOne commits one enqueue and requires it to be accepted.
func sendOne(t *testing.T, s store.Store, now time.Time, e *store.Enqueue) []store.Message {
	t.Helper()
	commit(t, s, now, []*store.Enqueue{e}, nil)
	if e.Err != nil || e.Duplicate {
		t.Fatalf("enqueue: Err=%v Duplicate=%v, want accepted", e.Err, e.Duplicate)
	}
	return e.Queued
}

func ack(t *testing.T, s store.Store, now time.Time, dev store.DeviceAddr, expires time.Time, seqs ...uint64) []store.Message {
	t.Helper()
	a := &store.Ack{Device: dev, Seqs: seqs, Expires: expires}
	commit(t, s, now, nil, []*store.Ack{a})
	return a.Receipts
}

func pending(t *testing.T, s store.Store, dev store.DeviceAddr, after uint64, limit int, now time.Time) []store.Message {
	t.Helper()
	ms, err := s.Pending(context.Background(), dev, after, limit, now)
	if err != nil {
		t.Fatalf("Pending(%v): %v", dev, err)
	}
	return ms
}

func seqs(ms []store.Message) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return out
}

func diffMessage(got, want store.Message) string {
	switch {
	case got.Seq != want.Seq:
		return fmt.Sprintf("Seq %d, want %d", got.Seq, want.Seq)
	case got.To != want.To:
		return fmt.Sprintf("To %v, want %v", got.To, want.To)
	case got.Kind != want.Kind:
		return fmt.Sprintf("Kind %d, want %d", got.Kind, want.Kind)
	case got.From != want.From:
		return fmt.Sprintf("From %v, want %v", got.From, want.From)
	case got.ClientID != want.ClientID:
		return fmt.Sprintf("ClientID %x, want %x", got.ClientID, want.ClientID)
	case !bytes.Equal(got.Payload, want.Payload):
		return fmt.Sprintf("Payload %q, want %q", got.Payload, want.Payload)
	case !got.Sent.Equal(want.Sent):
		return fmt.Sprintf("Sent %v, want %v", got.Sent, want.Sent)
	case !got.Expires.Equal(want.Expires):
		return fmt.Sprintf("Expires %v, want %v", got.Expires, want.Expires)
	case got.Group != want.Group:
		return fmt.Sprintf("Group %x, want %x", got.Group, want.Group)
	}
	return ""
}

func checkMessages(t *testing.T, what string, got, want []store.Message) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d items (seqs %v), want %d (seqs %v)", what, len(got), seqs(got), len(want), seqs(want))
	}
	for i := range got {
		if d := diffMessage(got[i], want[i]); d != "" {
			t.Errorf("%s[%d]: %s", what, i, d)
		}
	}
}

func checkDevice(t *testing.T, what string, got, want store.Device) {
	t.Helper()
	if got.DeviceAddr != want.DeviceAddr || got.Key != want.Key || !got.Created.Equal(want.Created) {
		t.Errorf("%s = %+v, want %+v", what, got, want)
	}
}

func testCreateUser(t *testing.T, h Harness) {
	ctx := context.Background()
	s := h.Store
	d, err := s.CreateUser(ctx, "alice", key(1), t0)
	if err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	want := store.Device{DeviceAddr: addr("alice", 1), Key: key(1), Created: t0}
	checkDevice(t, "CreateUser", d, want)

	got, err := s.DeviceByKey(ctx, key(1))
	if err != nil {
		t.Fatalf("DeviceByKey: %v", err)
	}
	checkDevice(t, "DeviceByKey", got, want)

	u, err := s.User(ctx, "alice")
	if err != nil {
		t.Fatalf("User: %v", err)
	}
	if u.Name != "alice" || !u.Created.Equal(t0) || len(u.Devices) != 1 {
		t.Fatalf("User = %+v, want alice created %v with 1 device", u, t0)
	}
	checkDevice(t, "User.Devices[0]", u.Devices[0], want)

	// A second user is independent of the first.
	if _, err := s.CreateUser(ctx, "bob", key(2), t0.Add(time.Second)); err != nil {
		t.Fatalf("CreateUser(bob): %v", err)
	}
	b, err := s.DeviceByKey(ctx, key(2))
	if err != nil || b.DeviceAddr != addr("bob", 1) {
		t.Fatalf("DeviceByKey(bob's key) = %+v, %v; want bob/1", b, err)
	}
}

func testDuplicateName(t *testing.T, h Harness) {
	ctx := context.Background()
	s := h.Store
	users(t, s, 1, "alice")
	if _, err := s.CreateUser(ctx, "alice", key(2), t0); !errors.Is(err, store.ErrUserExists) {
		t.Fatalf("CreateUser(existing name) = %v, want ErrUserExists", err)
	}
	// The failed registration must not have left its key behind.
	if _, err := s.DeviceByKey(ctx, key(2)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeviceByKey(key of failed registration) = %v, want ErrNotFound", err)
	}
	if _, err := s.CreateUser(ctx, "carol", key(2), t0); err != nil {
		t.Errorf("CreateUser(carol, key of failed registration): %v", err)
	}
	u, err := s.User(ctx, "alice")
	if err != nil || len(u.Devices) != 1 || u.Devices[0].Key != key(1) {
		t.Errorf("User(alice) = %+v, %v; want unchanged", u, err)
	}
}

func testDuplicateKey(t *testing.T, h Harness) {
	ctx := context.Background()
	s := h.Store
	users(t, s, 1, "alice")
	if _, err := s.CreateUser(ctx, "bob", key(1), t0); !errors.Is(err, store.ErrKeyInUse) {
		t.Fatalf("CreateUser(used key) = %v, want ErrKeyInUse", err)
	}
	if _, err := s.User(ctx, "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("User(bob) after failed registration = %v, want ErrNotFound", err)
	}
	if _, err := s.CreateUser(ctx, "bob", key(2), t0); err != nil {
		t.Errorf("CreateUser(bob, fresh key): %v", err)
	}
}

func testNotFound(t *testing.T, h Harness) {
	ctx := context.Background()
	s := h.Store
	users(t, s, 1, "alice")
	if _, err := s.DeviceByKey(ctx, key(99)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeviceByKey(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := s.User(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("User(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := s.AddDevice(ctx, "nobody", key(98), t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AddDevice(unknown user) = %v, want ErrNotFound", err)
	}
}

func testAddDevice(t *testing.T, h Harness) {
	ctx := context.Background()
	s := h.Store
	users(t, s, 1, "alice", "bob")
	later := t0.Add(time.Hour)
	d, err := s.AddDevice(ctx, "alice", key(10), later)
	if err != nil {
		t.Fatalf("AddDevice: %v", err)
	}
	want2 := store.Device{DeviceAddr: addr("alice", 2), Key: key(10), Created: later}
	checkDevice(t, "AddDevice", d, want2)
	d3 := addDevice(t, s, "alice", 11)
	if d3.Device != 3 {
		t.Errorf("third device id = %d, want 3", d3.Device)
	}
	if _, err := s.AddDevice(ctx, "alice", key(2), t0); !errors.Is(err, store.ErrKeyInUse) {
		t.Errorf("AddDevice(bob's key) = %v, want ErrKeyInUse", err)
	}
	if _, err := s.CreateUser(ctx, "carol", key(10), t0); !errors.Is(err, store.ErrKeyInUse) {
		t.Errorf("CreateUser(alice/2's key) = %v, want ErrKeyInUse", err)
	}
	got, err := s.DeviceByKey(ctx, key(10))
	if err != nil {
		t.Fatalf("DeviceByKey: %v", err)
	}
	checkDevice(t, "DeviceByKey(device 2)", got, want2)

	u, err := s.User(ctx, "alice")
	if err != nil {
		t.Fatalf("User: %v", err)
	}
	var ids []uint32
	for _, d := range u.Devices {
		ids = append(ids, d.Device)
	}
	if !slices.Equal(ids, []uint32{1, 2, 3}) {
		t.Fatalf("User(alice) device ids = %v, want [1 2 3]", ids)
	}
	checkDevice(t, "User.Devices[1]", u.Devices[1], want2)
	if b, err := s.User(ctx, "bob"); err != nil || len(b.Devices) != 1 {
		t.Errorf("User(bob) = %+v, %v; want 1 device", b, err)
	}
}

func testFanOut(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	addDevice(t, s, "bob", 10)
	now := t0.Add(time.Minute)
	exp := now.Add(day)
	e := send(addr("alice", 1), 1, "bob", "hello", exp, 0)
	queued := sendOne(t, s, now, e)
	if !e.Sent.Equal(now) {
		t.Errorf("Sent = %v, want batch.Now %v", e.Sent, now)
	}
	if len(queued) != 2 {
		t.Fatalf("Queued %d copies, want 2 (one per bob device)", len(queued))
	}
	if queued[0].Seq == 0 || queued[1].Seq <= queued[0].Seq {
		t.Errorf("Queued seqs %v, want nonzero and increasing", seqs(queued))
	}
	for i, dev := range []uint32{1, 2} {
		want := store.Message{
			Seq: queued[i].Seq, To: addr("bob", dev), Kind: store.KindMessage, From: addr("alice", 1),
			ClientID: cid(1), Payload: []byte("hello"), Sent: now, Expires: exp,
		}
		checkMessages(t, "Queued", queued[i:i+1], []store.Message{want})
		checkMessages(t, fmt.Sprintf("Pending(bob/%d)", dev), pending(t, s, addr("bob", dev), 0, 10, now), []store.Message{want})
	}
	if got := pending(t, s, addr("alice", 1), 0, 10, now); len(got) != 0 {
		t.Errorf("sender's own queue has %d items, want 0", len(got))
	}
}

func testDedupAcrossBatches(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	first := sendOne(t, s, t0, send(addr("alice", 1), 7, "bob", "one", t0.Add(day), 0))

	later := t0.Add(time.Minute)
	e := send(addr("alice", 1), 7, "bob", "changed", later.Add(day), 0)
	other := send(addr("alice", 1), 8, "bob", "two", later.Add(day), 0)
	commit(t, s, later, []*store.Enqueue{e, other}, nil)
	if e.Err != nil || !e.Duplicate || e.Queued != nil {
		t.Fatalf("resend: Err=%v Duplicate=%v Queued=%v; want duplicate with nothing queued", e.Err, e.Duplicate, e.Queued)
	}
	if !e.Sent.Equal(t0) {
		t.Errorf("resend Sent = %v, want original accept time %v", e.Sent, t0)
	}
	if other.Err != nil || other.Duplicate || len(other.Queued) != 1 {
		t.Errorf("new message in same batch: Err=%v Duplicate=%v Queued=%d", other.Err, other.Duplicate, len(other.Queued))
	}
	got := pending(t, s, addr("bob", 1), 0, 10, later)
	checkMessages(t, "Pending(bob)", got, append(first, other.Queued...))
}

func testDedupWithinBatch(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	a := send(addr("alice", 1), 1, "bob", "x", t0.Add(day), 0)
	b := send(addr("alice", 1), 1, "bob", "x", t0.Add(day), 0)
	commit(t, s, t0, []*store.Enqueue{a, b}, nil)
	if a.Err != nil || a.Duplicate || len(a.Queued) != 1 {
		t.Fatalf("first: Err=%v Duplicate=%v Queued=%d", a.Err, a.Duplicate, len(a.Queued))
	}
	if b.Err != nil || !b.Duplicate || b.Queued != nil || !b.Sent.Equal(t0) {
		t.Fatalf("second: Err=%v Duplicate=%v Queued=%v Sent=%v; want duplicate sent at %v", b.Err, b.Duplicate, b.Queued, b.Sent, t0)
	}
	if got := pending(t, s, addr("bob", 1), 0, 10, t0); len(got) != 1 {
		t.Errorf("bob has %d items, want 1", len(got))
	}
}

// testDedupKey: the key is (From.User, From.Device, ClientID), so the same
// ClientID from another device or another user is a different message, and
// a message that was not accepted does not count.
func testDedupKey(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob", "carol")
	addDevice(t, s, "alice", 10)
	exp := t0.Add(day)
	es := []*store.Enqueue{
		send(addr("alice", 1), 1, "bob", "a1", exp, 0),
		send(addr("alice", 2), 1, "bob", "a2", exp, 0),
		send(addr("carol", 1), 1, "bob", "c1", exp, 0),
		send(addr("alice", 1), 2, "nobody", "lost", exp, 0),
	}
	commit(t, s, t0, es, nil)
	for i, e := range es[:3] {
		if e.Err != nil || e.Duplicate || len(e.Queued) != 1 {
			t.Errorf("enqueue %d: Err=%v Duplicate=%v Queued=%d; want accepted", i, e.Err, e.Duplicate, len(e.Queued))
		}
	}
	if !errors.Is(es[3].Err, store.ErrNotFound) {
		t.Fatalf("enqueue to unknown user: Err=%v, want ErrNotFound", es[3].Err)
	}
	// ClientID 2 failed, so sending it again (now to a real user) is new.
	sendOne(t, s, t0, send(addr("alice", 1), 2, "bob", "found", exp, 0))
	if got := pending(t, s, addr("bob", 1), 0, 10, t0); len(got) != 4 {
		t.Errorf("bob has %d items, want 4", len(got))
	}
}

func testUnknownRecipient(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	exp := t0.Add(day)
	es := []*store.Enqueue{
		send(addr("alice", 1), 1, "bob", "before", exp, 0),
		send(addr("alice", 1), 2, "ghost", "lost", exp, 0),
		send(addr("alice", 1), 3, "bob", "after", exp, 0),
	}
	commit(t, s, t0, es, nil)
	if !errors.Is(es[1].Err, store.ErrNotFound) || es[1].Queued != nil || es[1].Duplicate {
		t.Errorf("unknown recipient: Err=%v Duplicate=%v Queued=%v; want ErrNotFound, nothing queued", es[1].Err, es[1].Duplicate, es[1].Queued)
	}
	for _, i := range []int{0, 2} {
		if es[i].Err != nil || len(es[i].Queued) != 1 {
			t.Errorf("enqueue %d: Err=%v Queued=%d; want accepted", i, es[i].Err, len(es[i].Queued))
		}
	}
	got := pending(t, s, addr("bob", 1), 0, 10, t0)
	checkMessages(t, "Pending(bob)", got, append(slices.Clone(es[0].Queued), es[2].Queued...))
}

// The limit counts what is stored and what the same batch queued before:
// one stored item and two in the batch fill a limit of 3, so the batch's
// third is refused.
func testQueueLimitStoredAndBatch(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	exp := t0.Add(day)
	from := addr("alice", 1)
	sendOne(t, s, t0, send(from, 1, "bob", "1", exp, 3))
	b := []*store.Enqueue{send(from, 2, "bob", "2", exp, 3), send(from, 3, "bob", "3", exp, 3), send(from, 4, "bob", "4", exp, 3)}
	commit(t, s, t0, b, nil)
	if b[0].Err != nil || b[1].Err != nil {
		t.Fatalf("the second and third items at limit 3: %v, %v; want both queued", b[0].Err, b[1].Err)
	}
	if !errors.Is(b[2].Err, store.ErrQueueFull) {
		t.Fatalf("the fourth item at limit 3 (one stored, two earlier in its batch): Err=%v, want ErrQueueFull", b[2].Err)
	}
}

func testQueueLimit(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	exp := t0.Add(day)
	from := addr("alice", 1)
	first := sendOne(t, s, t0, send(from, 1, "bob", "1", exp, 2))
	sendOne(t, s, t0, send(from, 2, "bob", "2", exp, 2))

	full := send(from, 3, "bob", "3", exp, 2)
	fits := send(from, 4, "alice", "to self", exp, 2) // other recipients are unaffected
	commit(t, s, t0, []*store.Enqueue{full, fits}, nil)
	if fits.Err != nil || len(fits.Queued) != 1 {
		t.Errorf("enqueue to alice in the same batch: Err=%v Queued=%d; want accepted", fits.Err, len(fits.Queued))
	}
	if !errors.Is(full.Err, store.ErrQueueFull) || full.Queued != nil || full.Duplicate {
		t.Fatalf("third enqueue at limit 2: Err=%v Duplicate=%v Queued=%v; want ErrQueueFull", full.Err, full.Duplicate, full.Queued)
	}
	if got := pending(t, s, addr("bob", 1), 0, 10, t0); len(got) != 2 {
		t.Fatalf("bob has %d items, want 2", len(got))
	}
	// A resend of an accepted message is still a duplicate, not "full", so
	// the sender can stop retrying.
	dup := send(from, 1, "bob", "1", exp, 2)
	commit(t, s, t0, []*store.Enqueue{dup}, nil)
	if dup.Err != nil || !dup.Duplicate {
		t.Errorf("resend while full: Err=%v Duplicate=%v; want duplicate", dup.Err, dup.Duplicate)
	}
	// A larger (or no) limit admits it: the limit is per enqueue.
	sendOne(t, s, t0, send(from, 5, "bob", "5", exp, 0))
	sendOne(t, s, t0, send(from, 6, "bob", "6", exp, 4))
	four := send(from, 7, "bob", "7", exp, 4)
	commit(t, s, t0, []*store.Enqueue{four}, nil)
	if !errors.Is(four.Err, store.ErrQueueFull) {
		t.Fatalf("fifth enqueue at limit 4: Err=%v, want ErrQueueFull", four.Err)
	}

	// Acking frees exactly the acked space; the refused ClientID was never
	// accepted, so retrying it is not a duplicate.
	ack(t, s, t0, addr("bob", 1), exp, first[0].Seq)
	retry := send(from, 7, "bob", "7", exp, 4)
	commit(t, s, t0, []*store.Enqueue{retry}, nil)
	if retry.Err != nil || retry.Duplicate || len(retry.Queued) != 1 {
		t.Fatalf("retry after ack: Err=%v Duplicate=%v Queued=%d; want accepted", retry.Err, retry.Duplicate, len(retry.Queued))
	}
	again := send(from, 8, "bob", "8", exp, 4)
	commit(t, s, t0, []*store.Enqueue{again}, nil)
	if !errors.Is(again.Err, store.ErrQueueFull) {
		t.Errorf("enqueue after refilling: Err=%v, want ErrQueueFull", again.Err)
	}
}

// testQueueLimitAnyDevice: one full recipient device refuses the whole
// enqueue; the other devices get nothing.
func testQueueLimitAnyDevice(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	addDevice(t, s, "bob", 10)
	exp := t0.Add(day)
	q := sendOne(t, s, t0, send(addr("alice", 1), 1, "bob", "1", exp, 1))
	ack(t, s, t0, addr("bob", 1), exp, q[0].Seq) // bob/1 empty, bob/2 holds 1

	e := send(addr("alice", 1), 2, "bob", "2", exp, 1)
	commit(t, s, t0, []*store.Enqueue{e}, nil)
	if !errors.Is(e.Err, store.ErrQueueFull) || e.Queued != nil {
		t.Fatalf("enqueue with bob/2 full: Err=%v Queued=%v; want ErrQueueFull", e.Err, e.Queued)
	}
	if got := pending(t, s, addr("bob", 1), 0, 10, t0); len(got) != 0 {
		t.Errorf("bob/1 has %d items, want 0: a refused enqueue must queue nothing", len(got))
	}
}

func testAckReceipt(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	addDevice(t, s, "alice", 10)
	addDevice(t, s, "bob", 11)
	exp := t0.Add(day)
	q := sendOne(t, s, t0, send(addr("alice", 1), 1, "bob", "hi", exp, 0))

	now := t0.Add(time.Minute)
	rexp := now.Add(2 * day)
	a := &store.Ack{Device: addr("bob", 1), Seqs: []uint64{q[0].Seq}, Expires: rexp}
	commit(t, s, now, nil, []*store.Ack{a})
	if len(a.Receipts) != 1 {
		t.Fatalf("Receipts = %d, want 1", len(a.Receipts))
	}
	want := store.Message{
		Seq: a.Receipts[0].Seq, To: addr("alice", 1), Kind: store.KindReceipt, From: addr("bob", 1),
		ClientID: cid(1), Sent: now, Expires: rexp,
	}
	checkMessages(t, "Receipts", a.Receipts, []store.Message{want})
	if a.Receipts[0].Seq <= q[1].Seq {
		t.Errorf("receipt seq %d not after earlier seqs %v", a.Receipts[0].Seq, seqs(q))
	}
	checkMessages(t, "Pending(alice/1)", pending(t, s, addr("alice", 1), 0, 10, now), a.Receipts)
	if got := pending(t, s, addr("alice", 2), 0, 10, now); len(got) != 0 {
		t.Errorf("alice/2 (not the sender device) has %d items, want 0", len(got))
	}
	if got := pending(t, s, addr("bob", 1), 0, 10, now); len(got) != 0 {
		t.Errorf("bob/1 still has %d items after ack", len(got))
	}
	// bob/2's copy is independent of bob/1's ack.
	checkMessages(t, "Pending(bob/2)", pending(t, s, addr("bob", 2), 0, 10, now), q[1:])

	// Acking a receipt creates nothing.
	if r := ack(t, s, now, addr("alice", 1), rexp, a.Receipts[0].Seq); len(r) != 0 {
		t.Errorf("acking a receipt created %d receipts, want 0", len(r))
	}
	if got := pending(t, s, addr("alice", 1), 0, 10, now); len(got) != 0 {
		t.Errorf("alice/1 has %d items after acking the receipt, want 0", len(got))
	}
	for _, d := range []store.DeviceAddr{addr("bob", 1), addr("alice", 2)} {
		if got := pending(t, s, d, 0, 10, now); len(got) != 0 {
			t.Errorf("%v has %d items after receipt ack, want 0", d, len(got))
		}
	}
}

// testAckOtherDevice: a device cannot remove (or miscount) another
// device's items.
func testAckOtherDevice(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob", "mallory")
	exp := t0.Add(day)
	q := sendOne(t, s, t0, send(addr("alice", 1), 1, "bob", "1", exp, 1))
	for _, d := range []store.DeviceAddr{addr("mallory", 1), addr("alice", 1), addr("bob", 2)} {
		if r := ack(t, s, t0, d, exp, q[0].Seq); len(r) != 0 {
			t.Errorf("ack by %v of bob's item created %d receipts", d, len(r))
		}
	}
	checkMessages(t, "Pending(bob)", pending(t, s, addr("bob", 1), 0, 10, t0), q)
	if got := pending(t, s, addr("alice", 1), 0, 10, t0); len(got) != 0 {
		t.Errorf("alice has %d items, want 0 (no receipt)", len(got))
	}
	// bob's queue still counts as full at limit 1.
	e := send(addr("alice", 1), 2, "bob", "2", exp, 1)
	commit(t, s, t0, []*store.Enqueue{e}, nil)
	if !errors.Is(e.Err, store.ErrQueueFull) {
		t.Errorf("after foreign acks: Err=%v, want ErrQueueFull (queue length must not drift)", e.Err)
	}
}

func testAckUnknown(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	exp := t0.Add(day)
	q := sendOne(t, s, t0, send(addr("alice", 1), 1, "bob", "1", exp, 1))
	if r := ack(t, s, t0, addr("bob", 1), exp, 0, q[0].Seq+1000, 1<<63, ^uint64(0)); len(r) != 0 {
		t.Errorf("ack of unknown seqs created %d receipts", len(r))
	}
	e := send(addr("alice", 1), 2, "bob", "2", exp, 1)
	commit(t, s, t0, []*store.Enqueue{e}, nil)
	if !errors.Is(e.Err, store.ErrQueueFull) {
		t.Fatalf("after unknown acks: Err=%v, want ErrQueueFull (queue length must not drift)", e.Err)
	}
	// The same seq twice in one ack removes one item and makes one receipt.
	if r := ack(t, s, t0, addr("bob", 1), exp, q[0].Seq, q[0].Seq); len(r) != 1 {
		t.Errorf("ack of repeated seq created %d receipts, want 1", len(r))
	}
	// And the queue length is now exactly 0: one send fits at limit 1, not two.
	sendOne(t, s, t0, send(addr("alice", 1), 3, "bob", "3", exp, 1))
	e = send(addr("alice", 1), 4, "bob", "4", exp, 1)
	commit(t, s, t0, []*store.Enqueue{e}, nil)
	if !errors.Is(e.Err, store.ErrQueueFull) {
		t.Errorf("second send at limit 1: Err=%v, want ErrQueueFull", e.Err)
	}
}

func testReceiptNoLimit(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	exp := t0.Add(day)
	// Fill alice's queue to limit 1, then make bob's ack send her a receipt.
	sendOne(t, s, t0, send(addr("bob", 1), 1, "alice", "fill", exp, 1))
	q := sendOne(t, s, t0, send(addr("alice", 1), 1, "bob", "hi", exp, 1))
	r := ack(t, s, t0, addr("bob", 1), exp, q[0].Seq)
	if len(r) != 1 {
		t.Fatalf("ack created %d receipts, want 1 despite alice's full queue", len(r))
	}
	if got := pending(t, s, addr("alice", 1), 0, 10, t0); len(got) != 2 || got[1].Kind != store.KindReceipt {
		t.Errorf("alice's queue = %d items, want message + receipt", len(got))
	}
}

func testPending(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	from := addr("alice", 1)
	var all []store.Message
	for i := range 6 {
		// Item i expires at t0+i+1 minutes; item 5 never within the test.
		exp := t0.Add(time.Duration(i+1) * time.Minute)
		if i == 5 {
			exp = t0.Add(day)
		}
		all = append(all, sendOne(t, s, t0, send(from, i, "bob", fmt.Sprint(i), exp, 0))...)
	}
	bob := addr("bob", 1)
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatalf("seqs not increasing in commit order: %v", seqs(all))
		}
	}
	checkMessages(t, "all", pending(t, s, bob, 0, 100, t0), all)
	checkMessages(t, "limit 2", pending(t, s, bob, 0, 2, t0), all[:2])
	checkMessages(t, "after 2nd", pending(t, s, bob, all[1].Seq, 100, t0), all[2:])
	checkMessages(t, "after 2nd, limit 3", pending(t, s, bob, all[1].Seq, 3, t0), all[2:5])
	checkMessages(t, "after last", pending(t, s, bob, all[5].Seq, 100, t0), nil)
	// Expires == now is expired; one nanosecond earlier it is not.
	now := t0.Add(2 * time.Minute)
	checkMessages(t, "at expiry of item 1", pending(t, s, bob, 0, 100, now), all[2:])
	checkMessages(t, "just before expiry of item 1", pending(t, s, bob, 0, 100, now.Add(-1)), all[1:])
	checkMessages(t, "expired skipped before limit", pending(t, s, bob, 0, 2, now), all[2:4])
	checkMessages(t, "all but last expired", pending(t, s, bob, 0, 100, t0.Add(time.Hour)), all[5:])
	checkMessages(t, "other device", pending(t, s, addr("bob", 2), 0, 100, t0), nil)
}

func testSeqNeverReused(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	exp := t0.Add(day)
	q := sendOne(t, s, t0, send(addr("alice", 1), 1, "bob", "1", exp, 0))
	ack(t, s, t0, addr("bob", 1), exp, q[0].Seq)
	r := pending(t, s, addr("alice", 1), 0, 10, t0) // the receipt
	ack(t, s, t0, addr("alice", 1), exp, seqs(r)...)
	q2 := sendOne(t, s, t0, send(addr("alice", 1), 2, "bob", "2", exp, 0))
	if q2[0].Seq <= r[0].Seq {
		t.Errorf("seq %d after acking everything up to %d: seqs must keep increasing", q2[0].Seq, r[0].Seq)
	}
}

func testExpire(t *testing.T, h Harness) {
	ctx := context.Background()
	s := h.Store
	users(t, s, 1, "alice", "bob")
	addDevice(t, s, "bob", 10)
	short, long := t0.Add(time.Minute), t0.Add(day)
	sendOne(t, s, t0, send(addr("alice", 1), 1, "bob", "short", short, 2))
	keep := sendOne(t, s, t0, send(addr("alice", 1), 2, "bob", "long", long, 2))
	// A receipt that expires early too.
	q := sendOne(t, s, t0, send(addr("bob", 1), 1, "alice", "to alice", long, 0))
	ack(t, s, t0, addr("alice", 1), short, q[0].Seq)

	if n, err := s.Expire(ctx, short.Add(-1)); err != nil || n != 0 {
		t.Fatalf("Expire before anything expired = %d, %v; want 0", n, err)
	}
	n, err := s.Expire(ctx, short)
	if err != nil {
		t.Fatalf("Expire: %v", err)
	}
	if n != 3 { // two copies of "short" and the receipt
		t.Errorf("Expire removed %d items, want 3", n)
	}
	checkMessages(t, "bob/1 after Expire (read at t0)", pending(t, s, addr("bob", 1), 0, 10, t0), keep[:1])
	checkMessages(t, "bob/2 after Expire (read at t0)", pending(t, s, addr("bob", 2), 0, 10, t0), keep[1:])
	checkMessages(t, "bob's receipts", pending(t, s, addr("bob", 1), keep[0].Seq, 10, t0), nil)
	if n, err := s.Expire(ctx, short); err != nil || n != 0 {
		t.Errorf("second Expire = %d, %v; want 0", n, err)
	}
	// Counters followed the deletions: at limit 2 there is room for one more.
	sendOne(t, s, short, send(addr("alice", 1), 3, "bob", "3", long, 2))
	e := send(addr("alice", 1), 4, "bob", "4", long, 2)
	commit(t, s, short, []*store.Enqueue{e}, nil)
	if !errors.Is(e.Err, store.ErrQueueFull) {
		t.Errorf("after expiry and one send at limit 2: Err=%v, want ErrQueueFull", e.Err)
	}
}

func testDedupExpiry(t *testing.T, h Harness) {
	ctx := context.Background()
	s := h.Store
	users(t, s, 1, "alice", "bob")
	exp := t0.Add(time.Hour)
	sendOne(t, s, t0, send(addr("alice", 1), 1, "bob", "1", exp, 0))
	sendOne(t, s, t0, send(addr("alice", 1), 2, "bob", "2", exp, 0))

	// Expire before the records expire keeps them.
	if _, err := s.Expire(ctx, exp.Add(-1)); err != nil {
		t.Fatalf("Expire: %v", err)
	}
	e := send(addr("alice", 1), 1, "bob", "1", exp.Add(time.Hour), 0)
	commit(t, s, exp.Add(-1), []*store.Enqueue{e}, nil)
	if !e.Duplicate {
		t.Fatalf("resend before expiry: Duplicate=false, want true")
	}

	// Deduplication lasts until Expires even if Expire has not run yet...
	e = send(addr("alice", 1), 1, "bob", "1 again", exp.Add(time.Hour), 0)
	commit(t, s, exp, []*store.Enqueue{e}, nil)
	if e.Err != nil || e.Duplicate || len(e.Queued) != 1 || !e.Sent.Equal(exp) {
		t.Fatalf("resend at expiry: Err=%v Duplicate=%v Queued=%d Sent=%v; want accepted at %v", e.Err, e.Duplicate, len(e.Queued), e.Sent, exp)
	}
	// ...and after Expire has removed the record.
	if _, err := s.Expire(ctx, exp); err != nil {
		t.Fatalf("Expire: %v", err)
	}
	e = send(addr("alice", 1), 2, "bob", "2 again", exp.Add(time.Hour), 0)
	commit(t, s, exp, []*store.Enqueue{e}, nil)
	if e.Err != nil || e.Duplicate || len(e.Queued) != 1 {
		t.Fatalf("resend after Expire: Err=%v Duplicate=%v Queued=%d; want accepted", e.Err, e.Duplicate, len(e.Queued))
	}
	// The re-accepted message is deduplicated again from now on.
	e = send(addr("alice", 1), 2, "bob", "2 again", exp.Add(time.Hour), 0)
	commit(t, s, exp, []*store.Enqueue{e}, nil)
	if !e.Duplicate {
		t.Errorf("second resend after Expire: Duplicate=false, want true")
	}
}

func testFailedCommit(t *testing.T, h Harness) {
	s := h.Store
	users(t, s, 1, "alice", "bob")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e := send(addr("alice", 1), 1, "bob", "x", t0.Add(day), 0)
	if err := s.Commit(ctx, &store.Batch{Now: t0, Enqueues: []*store.Enqueue{e}}); err == nil {
		t.Fatal("Commit with a cancelled context succeeded")
	}
	if got := pending(t, s, addr("bob", 1), 0, 10, t0); len(got) != 0 {
		t.Fatalf("failed Commit queued %d items", len(got))
	}
	// Nothing was recorded for deduplication either.
	sendOne(t, s, t0, send(addr("alice", 1), 1, "bob", "x", t0.Add(day), 0))
}

func testDurability(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("harness has no Reopen")
	}
	ctx := context.Background()
	s := h.Store
	users(t, s, 1, "alice", "bob")
	addDevice(t, s, "bob", 10)
	exp := t0.Add(day)
	q := sendOne(t, s, t0, send(addr("alice", 1), 1, "bob", "kept", exp, 2))
	gone := sendOne(t, s, t0, send(addr("alice", 1), 2, "bob", "acked", exp, 2))
	ack(t, s, t0, addr("bob", 1), exp, gone[0].Seq)
	ack(t, s, t0, addr("bob", 2), exp, gone[1].Seq)
	receipts := pending(t, s, addr("alice", 1), 0, 10, t0)

	s = h.Reopen(t)
	u, err := s.User(ctx, "bob")
	if err != nil || len(u.Devices) != 2 || !u.Created.Equal(t0) {
		t.Fatalf("User(bob) after reopen = %+v, %v", u, err)
	}
	if d, err := s.DeviceByKey(ctx, key(10)); err != nil || d.DeviceAddr != addr("bob", 2) {
		t.Errorf("DeviceByKey after reopen = %+v, %v", d, err)
	}
	checkMessages(t, "bob/1", pending(t, s, addr("bob", 1), 0, 10, t0), q[:1])
	checkMessages(t, "bob/2", pending(t, s, addr("bob", 2), 0, 10, t0), q[1:])
	checkMessages(t, "alice receipts", pending(t, s, addr("alice", 1), 0, 10, t0), receipts)
	if len(receipts) != 2 {
		t.Errorf("alice had %d receipts, want 2", len(receipts))
	}
	dup := send(addr("alice", 1), 1, "bob", "kept", exp, 2)
	commit(t, s, t0, []*store.Enqueue{dup}, nil)
	if !dup.Duplicate || !dup.Sent.Equal(t0) {
		t.Errorf("resend after reopen: Duplicate=%v Sent=%v; want duplicate of send at %v", dup.Duplicate, dup.Sent, t0)
	}
	// Queue lengths survived: one more fits at limit 2, then full.
	next := sendOne(t, s, t0, send(addr("alice", 1), 3, "bob", "3", exp, 2))
	if next[0].Seq <= receipts[len(receipts)-1].Seq {
		t.Errorf("seq after reopen %d not greater than %d", next[0].Seq, receipts[len(receipts)-1].Seq)
	}
	full := send(addr("alice", 1), 4, "bob", "4", exp, 2)
	commit(t, s, t0, []*store.Enqueue{full}, nil)
	if !errors.Is(full.Err, store.ErrQueueFull) {
		t.Errorf("after reopen at limit 2: Err=%v, want ErrQueueFull", full.Err)
	}
}

// testConcurrent runs Commits and reads from several goroutines; run it
// with -race. Each writer's messages must appear in its commit order.
func testConcurrent(t *testing.T, h Harness) {
	const (
		writers = 4
		batches = 8
		perBat  = 3
	)
	ctx := context.Background()
	s := h.Store
	users(t, s, 1, "bob")
	addDevice(t, s, "bob", 100)
	for w := range writers {
		users(t, s, 10+w, fmt.Sprint("w", w))
	}
	exp := t0.Add(day)

	var (
		wg      sync.WaitGroup
		done    = make(chan struct{})
		errs    = make(chan error, writers+2)
		readers sync.WaitGroup
	)
	for r := range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			dev := addr("bob", uint32(r+1))
			for {
				select {
				case <-done:
					return
				default:
				}
				ms, err := s.Pending(ctx, dev, 0, 1000, t0)
				if err != nil {
					errs <- fmt.Errorf("pending: %w", err)
					return
				}
				for i := 1; i < len(ms); i++ {
					if ms[i].Seq <= ms[i-1].Seq {
						errs <- fmt.Errorf("pending items out of order: seqs %v", seqs(ms))
						return
					}
				}
				if _, err := s.User(ctx, "bob"); err != nil {
					errs <- fmt.Errorf("user: %w", err)
					return
				}
			}
		}()
	}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := addr(fmt.Sprint("w", w), 1)
			for b := range batches {
				var es []*store.Enqueue
				for i := range perBat {
					es = append(es, send(from, b*perBat+i, "bob", fmt.Sprint(b*perBat+i), exp, 0))
				}
				if err := s.Commit(ctx, &store.Batch{Now: t0, Enqueues: es}); err != nil {
					errs <- fmt.Errorf("writer %d: Commit: %w", w, err)
					return
				}
				for _, e := range es {
					if e.Err != nil || e.Duplicate || len(e.Queued) != 2 {
						errs <- fmt.Errorf("writer %d: Err=%v Duplicate=%v Queued=%d", w, e.Err, e.Duplicate, len(e.Queued))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for dev := uint32(1); dev <= 2; dev++ {
		ms := pending(t, s, addr("bob", dev), 0, 1000, t0)
		if len(ms) != writers*batches*perBat {
			t.Fatalf("bob/%d has %d items, want %d", dev, len(ms), writers*batches*perBat)
		}
		next := map[string]int{}
		for i, m := range ms {
			if i > 0 && m.Seq <= ms[i-1].Seq {
				t.Fatalf("bob/%d: seqs out of order at %d", dev, i)
			}
			if want := fmt.Sprint(next[m.From.User]); string(m.Payload) != want {
				t.Fatalf("bob/%d: from %s got payload %q, want %q (commit order lost)", dev, m.From.User, m.Payload, want)
			}
			next[m.From.User]++
		}
	}
}

func testClose(t *testing.T, h Harness) {
	ctx := context.Background()
	s := h.Store
	users(t, s, 1, "alice")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checks := map[string]error{}
	_, checks["CreateUser"] = s.CreateUser(ctx, "bob", key(2), t0)
	_, checks["AddDevice"] = s.AddDevice(ctx, "alice", key(3), t0)
	_, checks["DeviceByKey"] = s.DeviceByKey(ctx, key(1))
	_, checks["User"] = s.User(ctx, "alice")
	checks["Commit"] = s.Commit(ctx, &store.Batch{Now: t0, Enqueues: []*store.Enqueue{send(addr("alice", 1), 1, "alice", "x", t0.Add(day), 0)}})
	_, checks["Pending"] = s.Pending(ctx, addr("alice", 1), 0, 10, t0)
	_, checks["Expire"] = s.Expire(ctx, t0)
	for name, err := range checks {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	_ = s.Close() // must not panic; its result is not specified
}
