package ratchet

import (
	"crypto/rand"
	"errors"
	"fmt"
	"testing"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/kem"
	"github.com/magpie-im/magpie/e2e/xeddsa"
)

var errNotFound = errors.New("test store: no such key")

// device is a test party: identity, registration id and private pre-keys.
type device struct {
	name     string
	identity IdentityKeyPair
	regID    uint32
	signed   map[uint32]curve.KeyPair
	kyber    map[uint32]*kem.PrivateKey
	oneTime  map[uint32]curve.KeyPair
	bundle   Bundle // the last bundle published
}

func (d *device) SignedPreKey(id uint32) (curve.KeyPair, error) {
	k, ok := d.signed[id]
	if !ok {
		return curve.KeyPair{}, errNotFound
	}
	return k, nil
}

func (d *device) KyberPreKey(id uint32) (*kem.PrivateKey, error) {
	k, ok := d.kyber[id]
	if !ok {
		return nil, errNotFound
	}
	return k, nil
}

func (d *device) PreKey(id uint32) (curve.KeyPair, error) {
	k, ok := d.oneTime[id]
	if !ok {
		return curve.KeyPair{}, errNotFound
	}
	return k, nil
}

func mustKeyPair(t testing.TB) curve.KeyPair {
	t.Helper()
	kp, err := curve.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func sign(t testing.TB, priv curve.PrivateKey, msg []byte) [64]byte {
	t.Helper()
	var random [64]byte
	if _, err := rand.Read(random[:]); err != nil {
		t.Fatal(err)
	}
	return xeddsa.Sign(priv, msg, random)
}

// newDevice makes a device and publishes a bundle with pre-key ids based
// on base (so that two devices can share ids), with a one-time pre-key if
// oneTime.
func newDevice(t testing.TB, name string, regID uint32, base uint32, oneTime bool) *device {
	t.Helper()
	d := &device{
		name:     name,
		identity: mustKeyPair(t),
		regID:    regID,
		signed:   map[uint32]curve.KeyPair{},
		kyber:    map[uint32]*kem.PrivateKey{},
		oneTime:  map[uint32]curve.KeyPair{},
	}
	d.publish(t, base, oneTime)
	return d
}

// publish makes fresh pre-keys with ids base, base+1, base+2.
func (d *device) publish(t testing.TB, base uint32, oneTime bool) {
	t.Helper()
	spk := mustKeyPair(t)
	kpk, err := kem.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	d.signed[base] = spk
	d.kyber[base+1] = kpk
	b := Bundle{
		RegistrationID:  d.regID,
		DeviceID:        1,
		IdentityKey:     d.identity.Public,
		SignedPreKeyID:  base,
		SignedPreKey:    spk.Public,
		SignedPreKeySig: sign(t, d.identity.Private, spk.Public.Serialize()),
		KyberPreKeyID:   base + 1,
		KyberPreKey:     kpk.PublicKey(),
		KyberPreKeySig:  sign(t, d.identity.Private, kpk.PublicKey().Serialize()),
	}
	if oneTime {
		opk := mustKeyPair(t)
		id := base + 2
		d.oneTime[id] = opk
		b.PreKeyID, b.PreKey = &id, &opk.Public
	}
	d.bundle = b
}

// pair is two devices with a Record each for the other.
type pair struct {
	a, b       *device
	aRec, bRec Record
}

// newPair has a initiate to b, with or without a one-time pre-key.
func newPair(t testing.TB, oneTime bool) *pair {
	t.Helper()
	p := &pair{
		a: newDevice(t, "alice", 1111, 100, oneTime),
		b: newDevice(t, "bob", 2222, 200, oneTime),
	}
	if err := p.aRec.InitiateFromBundle(p.a.identity, p.a.regID, p.b.bundle, rand.Reader); err != nil {
		t.Fatal(err)
	}
	return p
}

type sealed struct {
	typ MessageType
	ct  []byte
	pt  []byte
}

func encrypt(t testing.TB, from *device, rec *Record, pt string) sealed {
	t.Helper()
	typ, ct, err := rec.Encrypt(from.identity, []byte(pt), rand.Reader)
	if err != nil {
		t.Fatalf("%s: Encrypt: %v", from.name, err)
	}
	return sealed{typ, ct, []byte(pt)}
}

func decrypt(t testing.TB, to *device, rec *Record, m sealed) UsedPreKeys {
	t.Helper()
	pt, used, err := rec.Decrypt(to.identity, to.regID, to, m.typ, m.ct)
	if err != nil {
		t.Fatalf("%s: Decrypt %s: %v", to.name, m.typ, err)
	}
	if string(pt) != string(m.pt) {
		t.Fatalf("%s: decrypted %q, want %q", to.name, pt, m.pt)
	}
	return used
}

func mustFail(t testing.TB, to *device, rec *Record, typ MessageType, ct []byte, want error) {
	t.Helper()
	before, _ := rec.MarshalBinary()
	pt, _, err := rec.Decrypt(to.identity, to.regID, to, typ, ct)
	if err == nil {
		t.Fatalf("%s: Decrypt succeeded (%d bytes), want %v", to.name, len(pt), want)
	}
	if want != nil && !errors.Is(err, want) {
		t.Fatalf("%s: Decrypt error %v, want %v", to.name, err, want)
	}
	after, _ := rec.MarshalBinary()
	if string(before) != string(after) {
		t.Fatalf("%s: failed Decrypt (%v) changed the record", to.name, err)
	}
}

func msg(i int) string { return fmt.Sprintf("message %d", i) }
