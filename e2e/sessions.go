package e2e

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/kem"
	"github.com/magpie-im/magpie/e2e/ratchet"
	"github.com/magpie-im/magpie/wire"
)

// An end-to-end envelope payload is the ratchet message type (2: Signal
// message, 3: PreKey Signal message, libsignal's CiphertextMessageType
// values) followed by the message in libsignal's wire format.

func sessionKey(user string, device uint32) string {
	return user + "/" + strconv.FormatUint(uint64(device), 10)
}

func loadRecord(kv KV, user string, device uint32) (*ratchet.Record, error) {
	r := new(ratchet.Record)
	b, err := kv.Get(nsSession, sessionKey(user, device))
	if err != nil || b == nil {
		return r, err
	}
	if err := r.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("e2e: session with %s/%d: %w", user, device, err)
	}
	return r, nil
}

func saveRecord(kv KV, user string, device uint32, r *ratchet.Record) error {
	b, err := r.MarshalBinary()
	if err != nil {
		return err
	}
	return kv.Put(nsSession, sessionKey(user, device), b)
}

// SessionDevices maps each device of user that this device has a session
// with to that device's registration id.
func SessionDevices(kv KV, user string) (map[uint32]uint32, error) {
	keys, err := kv.Keys(nsSession, user+"/")
	if err != nil {
		return nil, err
	}
	out := make(map[uint32]uint32, len(keys))
	for _, k := range keys {
		d, err := strconv.ParseUint(strings.TrimPrefix(k, user+"/"), 10, 32)
		if err != nil {
			continue
		}
		r, err := loadRecord(kv, user, uint32(d))
		if err != nil {
			return nil, err
		}
		if reg, ok := r.RemoteRegistrationID(); ok && r.HasCurrentSession() {
			out[uint32(d)] = reg
		}
	}
	return out, nil
}

// DeleteSession forgets the session with one device (it was removed, or
// re-registered: a new one starts from a fresh bundle).
func DeleteSession(kv KV, user string, device uint32) error {
	return kv.Delete(nsSession, sessionKey(user, device))
}

// StartSessions runs PQXDH with each bundle of resp, replacing any session
// with those devices. The bundles' identity key must be one the user trusts
// (see CheckIdentity): ErrIdentityChanged otherwise.
func StartSessions(kv KV, self *Identity, resp *wire.GetBundlesResponse, random io.Reader) (changed bool, err error) {
	ik, err := curve.ParsePublicKey(resp.GetIdentityKey())
	if err != nil {
		return false, fmt.Errorf("e2e: %s's identity key: %w", resp.GetUsername(), err)
	}
	if changed, err = CheckIdentity(kv, resp.GetUsername(), ik); err != nil {
		return changed, err
	}
	for _, db := range resp.GetBundles() {
		b, err := bundle(ik, db)
		if err != nil {
			return changed, fmt.Errorf("e2e: %s device %d: %w", resp.GetUsername(), db.GetDevice(), err)
		}
		r, err := loadRecord(kv, resp.GetUsername(), db.GetDevice())
		if err != nil {
			return changed, err
		}
		if err := r.InitiateFromBundle(self.Key, self.RegistrationID, b, random); err != nil {
			return changed, fmt.Errorf("e2e: %s device %d: %w", resp.GetUsername(), db.GetDevice(), err)
		}
		if err := saveRecord(kv, resp.GetUsername(), db.GetDevice(), r); err != nil {
			return changed, err
		}
	}
	return changed, nil
}

func bundle(ik curve.PublicKey, db *wire.DeviceBundle) (ratchet.Bundle, error) {
	b := ratchet.Bundle{RegistrationID: db.GetRegistrationId(), DeviceID: db.GetDevice(), IdentityKey: ik}
	var err error
	spk := db.GetSignedPreKey()
	if b.SignedPreKey, err = curve.ParsePublicKey(spk.GetPublicKey()); err != nil {
		return b, err
	}
	if len(spk.GetSignature()) != 64 || len(db.GetKyberPreKey().GetSignature()) != 64 {
		return b, ratchet.ErrInvalidSignature
	}
	b.SignedPreKeyID, b.SignedPreKeySig = spk.GetId(), [64]byte(spk.GetSignature())
	kpk := db.GetKyberPreKey()
	if b.KyberPreKey, err = kem.ParsePublicKey(kpk.GetPublicKey()); err != nil {
		return b, err
	}
	b.KyberPreKeyID, b.KyberPreKeySig = kpk.GetId(), [64]byte(kpk.GetSignature())
	if pk := db.GetPreKey(); pk != nil {
		k, err := curve.ParsePublicKey(pk.GetPublicKey())
		if err != nil {
			return b, err
		}
		id := pk.GetId()
		b.PreKeyID, b.PreKey = &id, &k
	}
	return b, nil
}

// Encrypt encrypts plaintext for one device of user with the existing
// session and returns the envelope payload.
func Encrypt(kv KV, self *Identity, user string, device uint32, plaintext []byte, random io.Reader) ([]byte, error) {
	r, err := loadRecord(kv, user, device)
	if err != nil {
		return nil, err
	}
	typ, ct, err := r.Encrypt(self.Key, plaintext, random)
	if err != nil {
		return nil, fmt.Errorf("e2e: encrypt for %s/%d: %w", user, device, err)
	}
	if err := saveRecord(kv, user, device, r); err != nil {
		return nil, err
	}
	return append([]byte{byte(typ)}, ct...), nil
}

// Decrypted is the result of Decrypt.
type Decrypted struct {
	Plaintext []byte
	// IdentityChanged: the sender's identity key differs from the one this
	// device knew (their safety number changed).
	IdentityChanged bool
}

// Decrypt decrypts an envelope payload from one device of user, updating
// the session and consuming any one-time prekey it used. On error nothing
// in kv has changed; errors from the ratchet (ErrDuplicateMessage,
// ErrInvalidMAC, …) pass through for errors.Is.
func Decrypt(kv KV, self *Identity, user string, device uint32, payload []byte) (Decrypted, error) {
	if len(payload) < 2 {
		return Decrypted{}, ErrUnknownEnvelope
	}
	typ := ratchet.MessageType(payload[0])
	if typ != ratchet.WhisperMessage && typ != ratchet.PreKeyMessage {
		return Decrypted{}, ErrUnknownEnvelope
	}
	r, err := loadRecord(kv, user, device)
	if err != nil {
		return Decrypted{}, err
	}
	pt, used, err := r.Decrypt(self.Key, self.RegistrationID, preKeys{kv}, typ, payload[1:])
	if err != nil {
		return Decrypted{}, fmt.Errorf("e2e: from %s/%d: %w", user, device, err)
	}
	if used.NewSession && used.PreKeyID == nil {
		// Only a last-resort Kyber key was spent: refuse a replayed first
		// message instead of starting a second session from it.
		if seen, err := seenBaseKey(kv, used); err != nil {
			return Decrypted{}, err
		} else if seen {
			return Decrypted{}, fmt.Errorf("e2e: from %s/%d: replayed first message: %w", user, device, ratchet.ErrDuplicateMessage)
		}
	}
	var out Decrypted
	if rid, ok := r.RemoteIdentity(); ok {
		if out.IdentityChanged, err = noteIdentity(kv, user, rid); err != nil {
			return Decrypted{}, err
		}
	}
	if err := consume(kv, used); err != nil {
		return Decrypted{}, err
	}
	if err := saveRecord(kv, user, device, r); err != nil {
		return Decrypted{}, err
	}
	out.Plaintext = pt
	return out, nil
}

// IsEnvelope reports whether payload looks like an end-to-end envelope
// (as opposed to a clear-text payload from a pre-e2e client).
func IsEnvelope(payload []byte) bool {
	return len(payload) > 1 && (payload[0] == byte(ratchet.WhisperMessage) || payload[0] == byte(ratchet.PreKeyMessage)) &&
		payload[1] == 0x44
}
