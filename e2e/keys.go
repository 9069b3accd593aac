package e2e

import (
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/kem"
	"github.com/magpie-im/magpie/e2e/ratchet"
	"github.com/magpie-im/magpie/e2e/xeddsa"
	"github.com/magpie-im/magpie/wire"
)

// Prekey policy.
const (
	// PreKeyBatch is how many one-time prekeys of each kind are uploaded at
	// once, and the number a refill tops up to.
	PreKeyBatch = 100
	// RefillBelow: when the server reports fewer one-time prekeys of either
	// kind than this, upload more.
	RefillBelow = 25
	// RotateEvery is how often the signed EC prekey and the last-resort
	// Kyber prekey are replaced (PQXDH §4.1 and X3DH §4.4 leave the period
	// to the implementation; a week bounds the exposure of a leaked signed
	// prekey's private half).
	RotateEvery = 7 * 24 * time.Hour
	// KeepOldFor is how long a replaced signed or last-resort prekey's
	// private half is kept, for messages that were encrypted to it before
	// the rotation and are still queued (the server's message TTL).
	KeepOldFor = 30 * 24 * time.Hour
)

// Identity is this device's long-term identity.
type Identity struct {
	Key            curve.KeyPair `json:"key"`
	RegistrationID uint32        `json:"registration_id"`
}

// keyState is the prekey bookkeeping.
type keyState struct {
	NextPreKeyID    uint32    `json:"next_prekey_id"`
	NextKyberID     uint32    `json:"next_kyber_id"`
	NextSignedID    uint32    `json:"next_signed_id"`
	SignedID        uint32    `json:"signed_id"`      // current signed EC prekey
	LastResortID    uint32    `json:"last_resort_id"` // current last-resort Kyber prekey
	Rotated         time.Time `json:"rotated"`
	UploadedInitial bool      `json:"uploaded_initial"`
}

type signedEC struct {
	Key     curve.KeyPair `json:"key"`
	Created time.Time     `json:"created"`
	Retired time.Time     `json:"retired,omitzero"`
}

type kyberKey struct {
	Seed       []byte    `json:"seed"`
	LastResort bool      `json:"last_resort"`
	Created    time.Time `json:"created"`
	Retired    time.Time `json:"retired,omitzero"`
}

func idKey(id uint32) string { return strconv.FormatUint(uint64(id), 10) }

// LoadIdentity returns this device's identity, or ErrNoIdentity.
func LoadIdentity(kv KV) (*Identity, error) {
	var id Identity
	ok, err := getJSON(kv, nsSelf, "identity", &id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNoIdentity
	}
	return &id, nil
}

// CreateIdentity makes this device's identity key and registration id (a
// random 14-bit value other than 0, as Signal's) once; later calls return
// the existing one.
func CreateIdentity(kv KV, random io.Reader) (*Identity, error) {
	id, err := LoadIdentity(kv)
	switch {
	case err == ErrNoIdentity:
		kp, err := curve.GenerateKeyPair(random)
		if err != nil {
			return nil, fmt.Errorf("e2e: identity key: %w", err)
		}
		if id, err = ImportIdentity(kv, kp, random); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	}
	return id, initKeyState(kv, random)
}

// ImportIdentity sets this device's identity to the account's identity key
// pair, as device linking does (every device of an account shares it), with
// a fresh registration id of its own.
func ImportIdentity(kv KV, key curve.KeyPair, random io.Reader) (*Identity, error) {
	var b [2]byte
	if _, err := io.ReadFull(random, b[:]); err != nil {
		return nil, err
	}
	id := &Identity{Key: key, RegistrationID: uint32(binary.BigEndian.Uint16(b[:]))&0x3fff | 1}
	if err := putJSON(kv, nsSelf, "identity", id); err != nil {
		return nil, err
	}
	return id, initKeyState(kv, random)
}

// initKeyState starts the prekey bookkeeping if it is not there yet.
func initKeyState(kv KV, random io.Reader) error {
	if b, err := kv.Get(nsSelf, "keystate"); err != nil || b != nil {
		return err
	}
	// Prekey ids start at random points so that ids do not reveal how many
	// keys a device has used.
	var b [2]byte
	if _, err := io.ReadFull(random, b[:]); err != nil {
		return err
	}
	start := uint32(binary.BigEndian.Uint16(b[:]))<<4 | 1
	return putJSON(kv, nsSelf, "keystate", keyState{NextPreKeyID: start, NextKyberID: start, NextSignedID: start})
}

// KeysToUpload decides what the server needs, given the one-time prekey
// counts it reported: everything on first use, signed and last-resort
// prekeys when they are due for rotation, and one-time prekeys when they
// run low. It stores the new private keys before returning, and returns nil
// when nothing is due. Old signed prekeys are pruned after KeepOldFor.
func KeysToUpload(kv KV, self *Identity, preKeys, kyberPreKeys int, now time.Time, random io.Reader) (*wire.SetKeysRequest, error) {
	var st keyState
	if _, err := getJSON(kv, nsSelf, "keystate", &st); err != nil {
		return nil, err
	}
	req := &wire.SetKeysRequest{}
	due := false
	if !st.UploadedInitial || now.Sub(st.Rotated) >= RotateEvery {
		if err := rotate(kv, self, &st, req, now, random); err != nil {
			return nil, err
		}
		due = true
	}
	if !st.UploadedInitial {
		preKeys, kyberPreKeys = 0, 0
	}
	if preKeys < RefillBelow {
		for range PreKeyBatch - preKeys {
			kp, err := curve.GenerateKeyPair(random)
			if err != nil {
				return nil, err
			}
			id := st.NextPreKeyID
			st.NextPreKeyID = nextID(id)
			if err := putJSON(kv, nsPreKey, idKey(id), kp); err != nil {
				return nil, err
			}
			req.PreKeys = append(req.PreKeys, &wire.PreKey{Id: id, PublicKey: kp.Public.Serialize()})
		}
		due = true
	}
	if kyberPreKeys < RefillBelow {
		for range PreKeyBatch - kyberPreKeys {
			_, spk, err := newKyber(kv, self, &st, false, now, random)
			if err != nil {
				return nil, err
			}
			req.KyberPreKeys = append(req.KyberPreKeys, spk)
		}
		due = true
	}
	if !due {
		return nil, nil
	}
	st.UploadedInitial = true
	req.IdentityKey = self.Key.Public.Serialize()
	req.RegistrationId = self.RegistrationID
	if err := prune(kv, now); err != nil {
		return nil, err
	}
	return req, putJSON(kv, nsSelf, "keystate", st)
}

// nextID advances a prekey id, staying in libsignal's 24-bit id space and
// never using 0.
func nextID(id uint32) uint32 {
	id = (id + 1) & 0xffffff
	if id == 0 {
		id = 1
	}
	return id
}

func sign(self *Identity, msg []byte, random io.Reader) ([]byte, error) {
	var r [64]byte
	if _, err := io.ReadFull(random, r[:]); err != nil {
		return nil, err
	}
	sig := xeddsa.Sign(self.Key.Private, msg, r)
	return sig[:], nil
}

// rotate makes a new signed EC prekey and last-resort Kyber prekey and
// marks the previous ones retired (kept until KeepOldFor has passed).
func rotate(kv KV, self *Identity, st *keyState, req *wire.SetKeysRequest, now time.Time, random io.Reader) error {
	kp, err := curve.GenerateKeyPair(random)
	if err != nil {
		return err
	}
	if st.SignedID != 0 {
		var old signedEC
		if ok, err := getJSON(kv, nsSigned, idKey(st.SignedID), &old); err != nil {
			return err
		} else if ok {
			old.Retired = now
			if err := putJSON(kv, nsSigned, idKey(st.SignedID), old); err != nil {
				return err
			}
		}
	}
	id := st.NextSignedID
	st.NextSignedID = nextID(id)
	if err := putJSON(kv, nsSigned, idKey(id), signedEC{Key: kp, Created: now}); err != nil {
		return err
	}
	pub := kp.Public.Serialize()
	sig, err := sign(self, pub, random)
	if err != nil {
		return err
	}
	req.SignedPreKey = &wire.SignedPreKey{Id: id, PublicKey: pub, Signature: sig}
	st.SignedID = id

	if st.LastResortID != 0 {
		var old kyberKey
		if ok, err := getJSON(kv, nsKyber, idKey(st.LastResortID), &old); err != nil {
			return err
		} else if ok {
			old.Retired = now
			if err := putJSON(kv, nsKyber, idKey(st.LastResortID), old); err != nil {
				return err
			}
		}
	}
	lrID, spk, err := newKyber(kv, self, st, true, now, random)
	if err != nil {
		return err
	}
	req.LastResortKyberPreKey = spk
	st.LastResortID = lrID
	st.Rotated = now
	return nil
}

func newKyber(kv KV, self *Identity, st *keyState, lastResort bool, now time.Time, random io.Reader) (uint32, *wire.SignedPreKey, error) {
	k, err := kem.GenerateKey()
	if err != nil {
		return 0, nil, err
	}
	id := st.NextKyberID
	st.NextKyberID = nextID(id)
	if err := putJSON(kv, nsKyber, idKey(id), kyberKey{Seed: k.Seed(), LastResort: lastResort, Created: now}); err != nil {
		return 0, nil, err
	}
	pub := k.PublicKey().Serialize()
	sig, err := sign(self, pub, random)
	if err != nil {
		return 0, nil, err
	}
	return id, &wire.SignedPreKey{Id: id, PublicKey: pub, Signature: sig}, nil
}

// prune deletes retired signed and last-resort prekeys older than
// KeepOldFor.
func prune(kv KV, now time.Time) error {
	ids, err := kv.Keys(nsSigned, "")
	if err != nil {
		return err
	}
	for _, id := range ids {
		var k signedEC
		if ok, err := getJSON(kv, nsSigned, id, &k); err != nil || !ok {
			return err
		}
		if !k.Retired.IsZero() && now.Sub(k.Retired) > KeepOldFor {
			if err := kv.Delete(nsSigned, id); err != nil {
				return err
			}
		}
	}
	ids, err = kv.Keys(nsKyber, "")
	if err != nil {
		return err
	}
	for _, id := range ids {
		var k kyberKey
		if ok, err := getJSON(kv, nsKyber, id, &k); err != nil || !ok {
			return err
		}
		if k.LastResort && !k.Retired.IsZero() && now.Sub(k.Retired) > KeepOldFor {
			if err := kv.Delete(nsKyber, id); err != nil {
				return err
			}
		}
	}
	return nil
}

// preKeys gives ratchet.Decrypt this device's private prekeys from the KV.
type preKeys struct{ kv KV }

var _ ratchet.PreKeyStore = preKeys{}

func (p preKeys) SignedPreKey(id uint32) (curve.KeyPair, error) {
	var k signedEC
	ok, err := getJSON(p.kv, nsSigned, idKey(id), &k)
	if err == nil && !ok {
		err = fmt.Errorf("signed prekey %d: %w", id, ratchet.ErrUnknownPreKey)
	}
	return k.Key, err
}

func (p preKeys) KyberPreKey(id uint32) (*kem.PrivateKey, error) {
	var k kyberKey
	ok, err := getJSON(p.kv, nsKyber, idKey(id), &k)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("kyber prekey %d: %w", id, ratchet.ErrUnknownPreKey)
	}
	return kem.NewPrivateKey(k.Seed)
}

func (p preKeys) PreKey(id uint32) (curve.KeyPair, error) {
	var k curve.KeyPair
	ok, err := getJSON(p.kv, nsPreKey, idKey(id), &k)
	if err == nil && !ok {
		err = fmt.Errorf("prekey %d: %w", id, ratchet.ErrUnknownPreKey)
	}
	return k, err
}

// consume deletes what a PreKeySignalMessage used once: the one-time EC
// prekey and a one-time Kyber prekey. A last-resort Kyber prekey stays, but
// the (Kyber id, signed id, base key) triple is recorded so that a replay
// of the same first message cannot start a second session (as libsignal's
// mark_kyber_pre_key_used).
func consume(kv KV, used ratchet.UsedPreKeys) error {
	if !used.NewSession {
		return nil
	}
	if used.PreKeyID != nil {
		if err := kv.Delete(nsPreKey, idKey(*used.PreKeyID)); err != nil {
			return err
		}
	}
	var k kyberKey
	ok, err := getJSON(kv, nsKyber, idKey(used.KyberPreKeyID), &k)
	if err != nil || !ok {
		return err
	}
	if !k.LastResort {
		return kv.Delete(nsKyber, idKey(used.KyberPreKeyID))
	}
	return kv.Put(nsBaseKeys, fmt.Sprintf("%d/%d/%x", used.KyberPreKeyID, used.SignedPreKeyID, used.BaseKey.Serialize()), []byte{1})
}

// seenBaseKey reports whether a last-resort first message with this triple
// was processed before.
func seenBaseKey(kv KV, used ratchet.UsedPreKeys) (bool, error) {
	b, err := kv.Get(nsBaseKeys, fmt.Sprintf("%d/%d/%x", used.KyberPreKeyID, used.SignedPreKeyID, used.BaseKey.Serialize()))
	return b != nil, err
}
