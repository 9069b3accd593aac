package e2e

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/e2e/senderkey"
	"github.com/magpie-im/magpie/internal/libsignaloracle"
)

// member is a device with a 1:1 session from alice, the group sender.
type member struct {
	name string
	kv   memKV
	id   *Identity
}

// groupFixture is alice and the members she has sessions with.
type groupFixture struct {
	akv memKV
	aid *Identity
}

func (g *groupFixture) addMember(t *testing.T, name string) *member {
	t.Helper()
	kv, id := newDevice(t)
	up, err := KeysToUpload(kv, id, 0, 0, time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := StartSessions(g.akv, g.aid, bundleFrom(name, id, up, true), rand.Reader); err != nil {
		t.Fatal(err)
	}
	return &member{name: name, kv: kv, id: id}
}

// distribute sends alice's distribution message for id to m over their 1:1
// session, as a client does, and has m process it.
func (g *groupFixture) distribute(t *testing.T, id senderkey.DistributionID, m *member) {
	t.Helper()
	skdm, err := SenderKeyDistribution(g.akv, id, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	env, err := Encrypt(g.akv, g.aid, m.name, 1, skdm, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decrypt(m.kv, m.id, "alice", 1, env)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ProcessSenderKeyDistribution(m.kv, "alice", 1, d.Plaintext)
	if err != nil || got != id {
		t.Fatalf("%s processing alice's distribution message: %s, %v", m.name, got, err)
	}
}

func (g *groupFixture) send(t *testing.T, id senderkey.DistributionID, text string) []byte {
	t.Helper()
	b, err := GroupEncrypt(g.akv, id, []byte(text), rand.Reader)
	if err != nil {
		t.Fatalf("alice encrypting %q: %v", text, err)
	}
	return b
}

func (m *member) read(t *testing.T, id senderkey.DistributionID, msg []byte, want string) {
	t.Helper()
	d, err := GroupDecrypt(m.kv, "alice", 1, msg)
	if err != nil || string(d.Plaintext) != want || d.DistributionID != id {
		t.Fatalf("%s decrypting %q: %q (distribution %s), %v", m.name, want, d.Plaintext, d.DistributionID, err)
	}
}

// refuse checks that m cannot decrypt msg, with want, and that its KV did
// not change.
func (m *member) refuse(t *testing.T, msg []byte, want error) {
	t.Helper()
	before := maps.Clone(m.kv)
	if d, err := GroupDecrypt(m.kv, "alice", 1, msg); !errors.Is(err, want) {
		t.Fatalf("%s given a message it must refuse: %q, %v; want %v", m.name, d.Plaintext, err, want)
	}
	if !maps.EqualFunc(before, m.kv, bytes.Equal) {
		t.Fatalf("%s's refused message changed its state", m.name)
	}
}

func TestGroupSenderKeys(t *testing.T) {
	akv, aid := newDevice(t)
	g := &groupFixture{akv: akv, aid: aid}
	bob, carol := g.addMember(t, "bob"), g.addMember(t, "carol")
	id, err := NewDistributionID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := GroupEncrypt(akv, id, []byte("x"), rand.Reader); !errors.Is(err, senderkey.ErrNoSenderKey) {
		t.Fatalf("GroupEncrypt before any distribution: %v", err)
	}

	g.distribute(t, id, bob)
	var msgs [][]byte
	for i := range 5 {
		msgs = append(msgs, g.send(t, id, fmt.Sprint("m", i)))
	}
	for _, i := range []int{0, 3, 1, 4} {
		bob.read(t, id, msgs[i], fmt.Sprint("m", i))
	}
	bob.refuse(t, msgs[3], senderkey.ErrDuplicateMessage)
	bad := bytes.Clone(msgs[2])
	bad[len(bad)-1] ^= 1
	bob.refuse(t, bad, senderkey.ErrInvalidSignature)
	bob.refuse(t, msgs[2][:40], senderkey.ErrInvalidMessage)
	bob.read(t, id, msgs[2], "m2")
	// The chain is per device: the same message from alice's device 2
	// has no chain.
	if _, err := GroupDecrypt(bob.kv, "alice", 2, msgs[0]); !errors.Is(err, senderkey.ErrNoSenderKey) {
		t.Fatalf("from another device: %v", err)
	}
	// carol has no distribution yet; given it later, she reads only what
	// follows.
	carol.refuse(t, msgs[0], senderkey.ErrNoSenderKey)
	g.distribute(t, id, carol)
	carol.refuse(t, msgs[4], senderkey.ErrDuplicateMessage)
	both := g.send(t, id, "to both")
	bob.read(t, id, both, "to both")
	carol.read(t, id, both, "to both")
	if keys, err := bob.kv.Keys(nsSenderKey, id.String()+"/"); err != nil || len(keys) != 1 || keys[0] != id.String()+"/alice/1" {
		t.Fatalf("bob's sender key records: %v, %v", keys, err)
	}

	// carol leaves: alice rotates (same distribution id), and distributes
	// the new chain to bob only. carol cannot read what follows; bob
	// still reads what was sent before.
	held := g.send(t, id, "before the rotation")
	if err := ForgetSenderKey(akv, id); err != nil {
		t.Fatal(err)
	}
	g.distribute(t, id, bob)
	after := g.send(t, id, "after the rotation")
	bob.read(t, id, after, "after the rotation")
	carol.refuse(t, after, senderkey.ErrNoSenderKey)
	bob.read(t, id, held, "before the rotation")
	carol.read(t, id, held, "before the rotation")

	// A new distribution id is a separate chain.
	id2, err := NewDistributionID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g.distribute(t, id2, bob)
	bob.read(t, id2, g.send(t, id2, "new id"), "new id")
	carol.refuse(t, g.send(t, id2, "new id"), senderkey.ErrNoSenderKey)

	// A stored record that does not decode is an error, not a fresh start.
	bob.kv.Put(nsSenderKey, id2.String()+"/alice/1", []byte{0xff})
	if _, err := GroupDecrypt(bob.kv, "alice", 1, g.send(t, id2, "x")); !errors.Is(err, senderkey.ErrInvalidRecord) {
		t.Fatalf("corrupt record: %v", err)
	}
	if _, err := ProcessSenderKeyDistribution(bob.kv, "alice", 1, []byte("not a distribution message")); !errors.Is(err, senderkey.ErrInvalidMessage) {
		t.Fatalf("garbage distribution message: %v", err)
	}
	akv.Put(nsOwnSenderKey, id2.String(), []byte{0xff})
	if _, err := GroupEncrypt(akv, id2, []byte("x"), rand.Reader); !errors.Is(err, senderkey.ErrInvalidRecord) {
		t.Fatalf("corrupt own record: %v", err)
	}
	if _, err := SenderKeyDistribution(akv, id2, rand.Reader); !errors.Is(err, senderkey.ErrInvalidRecord) {
		t.Fatalf("corrupt own record: %v", err)
	}
}

// The e2e API against libsignal: a Magpie device and a libsignal client in
// one group, each sending to the other. It skips without the oracle unless
// MAGPIE_REQUIRE_ORACLE=1.
func TestGroupInteropLibsignal(t *testing.T) {
	o := libsignaloracle.Start(t)
	lib := o.NewParty("lib", 2, 77)
	kv, _ := newDevice(t)
	magpie := libsignaloracle.Address{Name: "magpie", DeviceID: 1}
	id, err := NewDistributionID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	// libsignal → Magpie.
	got, err := ProcessSenderKeyDistribution(kv, lib.Name, lib.DeviceID, o.CreateSenderKeyDistribution(lib.Name, id.String()))
	if err != nil || got != id {
		t.Fatalf("Magpie processing libsignal's distribution message: %v", err)
	}
	var fromLib [][]byte
	for i := range 4 {
		m, err := o.GroupEncrypt(lib.Name, id.String(), []byte(fmt.Sprint("lib", i)))
		if err != nil {
			t.Fatal(err)
		}
		fromLib = append(fromLib, m)
	}
	for _, i := range []int{3, 0, 2, 1} {
		d, err := GroupDecrypt(kv, lib.Name, lib.DeviceID, fromLib[i])
		if err != nil || string(d.Plaintext) != fmt.Sprint("lib", i) || d.DistributionID != id {
			t.Fatalf("Magpie decrypting libsignal's message %d: %q, %v", i, d.Plaintext, err)
		}
	}
	if _, err := GroupDecrypt(kv, lib.Name, lib.DeviceID, fromLib[1]); !errors.Is(err, senderkey.ErrDuplicateMessage) {
		t.Fatalf("replay: %v", err)
	}

	// Magpie → libsignal, on the same distribution id.
	skdm, err := SenderKeyDistribution(kv, id, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.ProcessSenderKeyDistribution(lib.Name, magpie, skdm); err != nil {
		t.Fatalf("libsignal refuses Magpie's distribution message: %v", err)
	}
	var fromMagpie [][]byte
	for i := range 4 {
		m, err := GroupEncrypt(kv, id, []byte(fmt.Sprint("magpie", i)), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		fromMagpie = append(fromMagpie, m)
	}
	for _, i := range []int{1, 3, 0, 2} {
		pt, err := o.GroupDecrypt(lib.Name, magpie, fromMagpie[i])
		if err != nil || string(pt) != fmt.Sprint("magpie", i) {
			t.Fatalf("libsignal decrypting Magpie's message %d: %q, %v", i, pt, err)
		}
	}
	if _, err := o.GroupDecrypt(lib.Name, magpie, fromMagpie[0]); err == nil || !strings.Contains(err.Error(), "DuplicatedMessage") {
		t.Fatalf("libsignal given a replay: %v", err)
	}
	// After ForgetSenderKey, libsignal needs the new distribution message.
	if err := ForgetSenderKey(kv, id); err != nil {
		t.Fatal(err)
	}
	if _, err := SenderKeyDistribution(kv, id, rand.Reader); err != nil {
		t.Fatal(err)
	}
	m, err := GroupEncrypt(kv, id, []byte("rotated"), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.GroupDecrypt(lib.Name, magpie, m); err == nil || !strings.Contains(err.Error(), "missing sender key state") {
		t.Fatalf("libsignal given a message of a chain it was not given: %v", err)
	}
}
