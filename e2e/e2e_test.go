package e2e

import (
	"bytes"
	"crypto/rand"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/ratchet"
	"github.com/magpie-im/magpie/e2e/xeddsa"
	"github.com/magpie-im/magpie/wire"
)

// memKV is an in-memory KV for unit tests of this layer; the client's real
// one (SQLite, sealed) is exercised by the client's tests.
type memKV map[string][]byte

func (m memKV) Get(ns, key string) ([]byte, error) { return bytes.Clone(m[ns+"\x00"+key]), nil }
func (m memKV) Put(ns, key string, v []byte) error {
	m[ns+"\x00"+key] = bytes.Clone(v)
	return nil
}
func (m memKV) Delete(ns, key string) error { delete(m, ns+"\x00"+key); return nil }
func (m memKV) Keys(ns, prefix string) ([]string, error) {
	var out []string
	for k := range m {
		if rest, ok := strings.CutPrefix(k, ns+"\x00"); ok && strings.HasPrefix(rest, prefix) {
			out = append(out, rest)
		}
	}
	return out, nil
}

func newDevice(t *testing.T) (memKV, *Identity) {
	t.Helper()
	kv := memKV{}
	id, err := CreateIdentity(kv, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return kv, id
}

func TestCreateIdentity(t *testing.T) {
	kv, id := newDevice(t)
	if id.RegistrationID == 0 || id.RegistrationID > 0x3fff {
		t.Fatalf("registration id %d outside Signal's 14-bit range", id.RegistrationID)
	}
	again, err := CreateIdentity(kv, rand.Reader)
	if err != nil || *again != *id {
		t.Fatalf("second CreateIdentity changed the identity: %v", err)
	}
	if _, err := LoadIdentity(memKV{}); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("LoadIdentity of nothing: %v", err)
	}
}

func verifySigned(t *testing.T, id *Identity, p *wire.SignedPreKey) {
	t.Helper()
	if !xeddsa.Verify(id.Key.Public, p.GetPublicKey(), [64]byte(p.GetSignature())) {
		t.Fatalf("prekey %d: signature does not verify", p.GetId())
	}
}

func TestKeyLifecycle(t *testing.T) {
	kv, id := newDevice(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	up, err := KeysToUpload(kv, id, 0, 0, t0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(up.GetIdentityKey(), id.Key.Public.Serialize()) || up.GetRegistrationId() != id.RegistrationID ||
		len(up.GetPreKeys()) != PreKeyBatch || len(up.GetKyberPreKeys()) != PreKeyBatch ||
		up.GetSignedPreKey() == nil || up.GetLastResortKyberPreKey() == nil {
		t.Fatalf("first upload incomplete")
	}
	verifySigned(t, id, up.GetSignedPreKey())
	verifySigned(t, id, up.GetLastResortKyberPreKey())
	for _, k := range up.GetKyberPreKeys() {
		verifySigned(t, id, k)
	}
	ids := map[uint32]bool{}
	for _, k := range up.GetPreKeys() {
		if ids[k.GetId()] || k.GetId() == 0 || k.GetId() > 0xffffff {
			t.Fatalf("prekey id %d repeated or out of range", k.GetId())
		}
		ids[k.GetId()] = true
	}

	// Nothing due: nothing to upload.
	if up, err := KeysToUpload(kv, id, PreKeyBatch, PreKeyBatch, t0.Add(time.Hour), rand.Reader); err != nil || up != nil {
		t.Fatalf("nothing due, got %v %v", up, err)
	}
	// EC prekeys ran low: top them up to the batch size, nothing else.
	up, err = KeysToUpload(kv, id, RefillBelow-1, PreKeyBatch, t0.Add(2*time.Hour), rand.Reader)
	if err != nil || len(up.GetPreKeys()) != PreKeyBatch-(RefillBelow-1) || len(up.GetKyberPreKeys()) != 0 || up.GetSignedPreKey() != nil {
		t.Fatalf("refill: %d EC, %d Kyber, signed %v (%v)", len(up.GetPreKeys()), len(up.GetKyberPreKeys()), up.GetSignedPreKey(), err)
	}
	var st keyState
	getJSON(kv, nsSelf, "keystate", &st)
	oldSigned, oldLastResort := st.SignedID, st.LastResortID

	// A week on: new signed and last-resort prekeys; the old ones stay for
	// messages already on their way.
	up, err = KeysToUpload(kv, id, PreKeyBatch, PreKeyBatch, t0.Add(RotateEvery+time.Hour), rand.Reader)
	if err != nil || up.GetSignedPreKey() == nil || up.GetSignedPreKey().GetId() == oldSigned || up.GetLastResortKyberPreKey().GetId() == oldLastResort {
		t.Fatalf("rotation: %v %v", up, err)
	}
	if _, err := (preKeys{kv}).SignedPreKey(oldSigned); err != nil {
		t.Fatalf("retired signed prekey dropped at once: %v", err)
	}
	// After the grace period the retired ones are gone; the current stay.
	later := t0.Add(RotateEvery + time.Hour + KeepOldFor + time.Hour)
	if _, err := KeysToUpload(kv, id, PreKeyBatch, PreKeyBatch, later, rand.Reader); err != nil {
		t.Fatal(err)
	}
	if _, err := (preKeys{kv}).SignedPreKey(oldSigned); !errors.Is(err, ratchet.ErrUnknownPreKey) {
		t.Fatalf("retired signed prekey kept past the grace period: %v", err)
	}
	if _, err := (preKeys{kv}).KyberPreKey(oldLastResort); !errors.Is(err, ratchet.ErrUnknownPreKey) {
		t.Fatalf("retired last-resort prekey kept past the grace period: %v", err)
	}
}

// bundleFrom turns a device's key upload into the bundle a server would
// hand out, taking the first one-time keys if withOneTime.
func bundleFrom(user string, id *Identity, up *wire.SetKeysRequest, withOneTime bool) *wire.GetBundlesResponse {
	db := &wire.DeviceBundle{Device: 1, RegistrationId: id.RegistrationID, SignedPreKey: up.GetSignedPreKey(), KyberPreKey: up.GetLastResortKyberPreKey()}
	if withOneTime {
		db.PreKey = up.GetPreKeys()[0]
		db.KyberPreKey = up.GetKyberPreKeys()[0]
	}
	return &wire.GetBundlesResponse{Username: user, IdentityKey: id.Key.Public.Serialize(), Bundles: []*wire.DeviceBundle{db}}
}

func TestConversation(t *testing.T) {
	for _, oneTime := range []bool{true, false} {
		akv, aid := newDevice(t)
		bkv, bid := newDevice(t)
		up, err := KeysToUpload(bkv, bid, 0, 0, time.Now(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if changed, err := StartSessions(akv, aid, bundleFrom("bob", bid, up, oneTime), rand.Reader); err != nil || changed {
			t.Fatalf("StartSessions: %v %v", changed, err)
		}
		devs, _ := SessionDevices(akv, "bob")
		if devs[1] != bid.RegistrationID || len(devs) != 1 {
			t.Fatalf("session devices %v", devs)
		}
		first, err := Encrypt(akv, aid, "bob", 1, []byte("hello bob"), rand.Reader)
		if err != nil || !IsEnvelope(first) || first[0] != byte(ratchet.PreKeyMessage) {
			t.Fatalf("first message: %v", err)
		}
		d, err := Decrypt(bkv, bid, "alice", 1, first)
		if err != nil || string(d.Plaintext) != "hello bob" || d.IdentityChanged {
			t.Fatalf("bob decrypts: %+v %v", d, err)
		}
		if oneTime {
			if b, _ := bkv.Get(nsPreKey, idKey(up.GetPreKeys()[0].GetId())); b != nil {
				t.Fatal("one-time prekey kept after use")
			}
			if b, _ := bkv.Get(nsKyber, idKey(up.GetKyberPreKeys()[0].GetId())); b != nil {
				t.Fatal("one-time Kyber prekey kept after use")
			}
		}
		if c, _ := LoadContact(bkv, "alice"); c == nil || c.Identity != aid.Key.Public {
			t.Fatalf("bob did not record alice's identity: %+v", c)
		}
		reply, err := Encrypt(bkv, bid, "alice", 1, []byte("hello alice"), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if d, err := Decrypt(akv, aid, "bob", 1, reply); err != nil || string(d.Plaintext) != "hello alice" {
			t.Fatalf("alice decrypts: %+v %v", d, err)
		}
		// A replay is refused, and changes nothing.
		before := maps.Clone(bkv)
		if _, err := Decrypt(bkv, bid, "alice", 1, first); !errors.Is(err, ratchet.ErrDuplicateMessage) {
			t.Fatalf("replay: %v", err)
		}
		if !maps.EqualFunc(before, bkv, bytes.Equal) {
			t.Fatal("a refused message changed the state")
		}
		// Tampering is refused, and changes nothing.
		next, _ := Encrypt(akv, aid, "bob", 1, []byte("again"), rand.Reader)
		bad := bytes.Clone(next)
		bad[len(bad)-3] ^= 1
		if _, err := Decrypt(bkv, bid, "alice", 1, bad); err == nil {
			t.Fatal("tampered message decrypted")
		}
		if !maps.EqualFunc(before, bkv, bytes.Equal) {
			t.Fatal("a tampered message changed the state")
		}
		if d, err := Decrypt(bkv, bid, "alice", 1, next); err != nil || string(d.Plaintext) != "again" {
			t.Fatalf("session after tampering: %v", err)
		}
		if !oneTime {
			// With only the last-resort Kyber key, even a lost session
			// cannot be restarted by replaying the first message.
			DeleteSession(bkv, "alice", 1)
			if _, err := Decrypt(bkv, bid, "alice", 1, first); !errors.Is(err, ratchet.ErrDuplicateMessage) {
				t.Fatalf("replayed first message started a new session: %v", err)
			}
		}
	}
	if _, err := Decrypt(memKV{}, &Identity{}, "x", 1, []byte{9, 9, 9}); !errors.Is(err, ErrUnknownEnvelope) {
		t.Fatalf("garbage: %v", err)
	}
}

func TestTrust(t *testing.T) {
	kv := memKV{}
	k1, _ := curve.GenerateKeyPair(rand.Reader)
	k2, _ := curve.GenerateKeyPair(rand.Reader)
	k3, _ := curve.GenerateKeyPair(rand.Reader)
	if changed, err := CheckIdentity(kv, "bob", k1.Public); changed || err != nil {
		t.Fatalf("first sight: %v %v", changed, err)
	}
	if changed, err := CheckIdentity(kv, "bob", k1.Public); changed || err != nil {
		t.Fatalf("same key: %v %v", changed, err)
	}
	// Unverified: the new key replaces the old, with a warning.
	if changed, err := CheckIdentity(kv, "bob", k2.Public); !changed || err != nil {
		t.Fatalf("unverified change: %v %v", changed, err)
	}
	if c, _ := LoadContact(kv, "bob"); c.Identity != k2.Public || c.Pending != nil {
		t.Fatalf("after unverified change: %+v", c)
	}
	if err := MarkVerified(kv, "bob"); err != nil {
		t.Fatal(err)
	}
	// Verified: refused, kept pending, until verified again.
	if _, err := CheckIdentity(kv, "bob", k3.Public); !errors.Is(err, ErrIdentityChanged) {
		t.Fatalf("verified change: %v", err)
	}
	if _, err := CheckIdentity(kv, "bob", k2.Public); !errors.Is(err, ErrIdentityChanged) {
		t.Fatalf("the old key while a new one is pending: %v", err)
	}
	if changed, err := noteIdentity(kv, "bob", k3.Public); !changed || err != nil {
		t.Fatalf("a received message with the new key: %v %v", changed, err)
	}
	id, _ := CreateIdentity(memKV{}, rand.Reader)
	sn, err := ComputeSafetyNumber(kv, "alice", id, "bob")
	if err != nil || len(sn.Digits) != 60 || sn.Contact.Pending == nil || *sn.Contact.Pending != k3.Public {
		t.Fatalf("safety number with a pending key: %+v %v", sn, err)
	}
	if err := MarkVerified(kv, "bob"); err != nil {
		t.Fatal(err)
	}
	if c, _ := LoadContact(kv, "bob"); c.Identity != k3.Public || c.Pending != nil || !c.Verified {
		t.Fatalf("after re-verifying: %+v", c)
	}
	if _, err := ComputeSafetyNumber(kv, "alice", id, "nobody"); !errors.Is(err, ErrNoContact) {
		t.Fatalf("unknown contact: %v", err)
	}
}
