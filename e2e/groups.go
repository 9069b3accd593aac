package e2e

import (
	"fmt"
	"io"

	"github.com/magpie-im/magpie/e2e/senderkey"
)

// Groups use Sender Keys (package senderkey, libsignal's group cipher): this
// device sends on one chain per distribution id, whose distribution
// message goes to each member device inside the 1:1 sessions (Encrypt),
// and encrypts each group message once (GroupEncrypt). It keeps one record
// per (distribution id, member device) of the chains it received.
//
// Errors from senderkey pass through for errors.Is: ErrNoSenderKey (no
// distribution message processed for that chain yet, or it was dropped for
// newer ones: ask the sender for it), ErrDuplicateMessage,
// ErrInvalidSignature, ErrTooFarInFuture, ErrInvalidMessage and the
// version errors.

// Namespaces of Sender Key records (values are senderkey.Record encodings,
// in libsignal's storage format).
const (
	// nsSenderKey holds the chains received from member devices, by
	// "<distribution id>/<user>/<device>".
	nsSenderKey = "e2e.senderkey"
	// nsOwnSenderKey holds this device's own chains, by distribution id.
	nsOwnSenderKey = "e2e.senderkey.own"
)

func memberKey(id senderkey.DistributionID, user string, device uint32) string {
	return id.String() + "/" + sessionKey(user, device)
}

// loadSenderKey returns the record at ns/key, or nil if there is none.
func loadSenderKey(kv KV, ns, key string) (*senderkey.Record, error) {
	b, err := kv.Get(ns, key)
	if err != nil || b == nil {
		return nil, err
	}
	r := new(senderkey.Record)
	if err := r.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("e2e: stored sender key %s/%s: %w", ns, key, err)
	}
	return r, nil
}

func saveSenderKey(kv KV, ns, key string, r *senderkey.Record) error {
	b, err := r.MarshalBinary()
	if err != nil {
		return err
	}
	return kv.Put(ns, key, b)
}

// NewDistributionID returns a random RFC 4122 version 4 UUID for a new
// sender key chain (a new group, or a group's new epoch after a member
// left).
func NewDistributionID(random io.Reader) (senderkey.DistributionID, error) {
	return senderkey.NewDistributionID(random)
}

// SenderKeyDistribution returns this device's distribution message for a
// distribution id, to be sent to each member device over its 1:1 session.
// The first call makes the chain, with a fresh signing key; later calls
// describe the same chain at its current iteration (a member given it then
// cannot read earlier messages), until ForgetSenderKey.
func SenderKeyDistribution(kv KV, id senderkey.DistributionID, random io.Reader) ([]byte, error) {
	r, err := loadSenderKey(kv, nsOwnSenderKey, id.String())
	if err != nil {
		return nil, err
	}
	if r == nil {
		r = new(senderkey.Record)
	}
	d, err := r.DistributionMessage(id, random)
	if err != nil {
		return nil, err
	}
	if err := saveSenderKey(kv, nsOwnSenderKey, id.String(), r); err != nil {
		return nil, err
	}
	return d.Marshal(), nil
}

// ProcessSenderKeyDistribution records the chain in a distribution message
// that a member device (user/device) sent over its 1:1 session, and returns
// the distribution id it is for, so that the caller can check it is one
// of the group the message claims.
func ProcessSenderKeyDistribution(kv KV, user string, device uint32, msg []byte) (senderkey.DistributionID, error) {
	d, err := senderkey.ParseDistributionMessage(msg)
	if err != nil {
		return senderkey.DistributionID{}, fmt.Errorf("e2e: sender key distribution from %s/%d: %w", user, device, err)
	}
	key := memberKey(d.DistributionID, user, device)
	r, err := loadSenderKey(kv, nsSenderKey, key)
	if err != nil {
		return d.DistributionID, err
	}
	if r == nil {
		r = new(senderkey.Record)
	}
	r.Process(d)
	return d.DistributionID, saveSenderKey(kv, nsSenderKey, key, r)
}

// GroupEncrypt encrypts plaintext on this device's chain for a
// distribution id and returns the SenderKeyMessage (libsignal's message
// type senderkey.MessageType). ErrNoSenderKey: SenderKeyDistribution was
// never called for it (or ForgetSenderKey was since).
func GroupEncrypt(kv KV, id senderkey.DistributionID, plaintext []byte, random io.Reader) ([]byte, error) {
	r, err := loadSenderKey(kv, nsOwnSenderKey, id.String())
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, fmt.Errorf("e2e: group encrypt: %w: no chain of this device for distribution %s", senderkey.ErrNoSenderKey, id)
	}
	msg, err := r.Encrypt(id, plaintext, random)
	if err != nil {
		return nil, fmt.Errorf("e2e: group encrypt: %w", err)
	}
	if err := saveSenderKey(kv, nsOwnSenderKey, id.String(), r); err != nil {
		return nil, err
	}
	return msg, nil
}

// GroupDecrypted is the result of GroupDecrypt.
type GroupDecrypted struct {
	// DistributionID is the chain's distribution id, named by the
	// message: the caller checks it belongs to the group the message is
	// for.
	DistributionID senderkey.DistributionID
	Plaintext      []byte
}

// GroupDecrypt decrypts a SenderKeyMessage from one device of user. On
// error nothing in kv has changed.
func GroupDecrypt(kv KV, user string, device uint32, msg []byte) (GroupDecrypted, error) {
	m, err := senderkey.ParseMessage(msg)
	if err != nil {
		return GroupDecrypted{}, fmt.Errorf("e2e: group message from %s/%d: %w", user, device, err)
	}
	key := memberKey(m.DistributionID, user, device)
	r, err := loadSenderKey(kv, nsSenderKey, key)
	if err != nil {
		return GroupDecrypted{}, err
	}
	if r == nil {
		return GroupDecrypted{}, fmt.Errorf("e2e: group message from %s/%d: %w: no distribution message received for %s",
			user, device, senderkey.ErrNoSenderKey, m.DistributionID)
	}
	pt, err := r.Decrypt(m)
	if err != nil {
		return GroupDecrypted{}, fmt.Errorf("e2e: group message from %s/%d: %w", user, device, err)
	}
	if err := saveSenderKey(kv, nsSenderKey, key, r); err != nil {
		return GroupDecrypted{}, err
	}
	return GroupDecrypted{DistributionID: m.DistributionID, Plaintext: pt}, nil
}

// ForgetSenderKey drops this device's own chain for a distribution id, so
// that the next SenderKeyDistribution makes a new one (new chain id, chain
// key and signing key), to be sent to the remaining members only: the
// rotation after a member leaves, as Signal-Android's
// SenderKeyUtil.rotateOurKey does while keeping the distribution id.
// Members keep the old chain beside the new one (up to
// senderkey.MaxStates), so messages sent before still decrypt. Moving the
// group to a new distribution id (NewDistributionID) rotates as well.
func ForgetSenderKey(kv KV, id senderkey.DistributionID) error {
	return kv.Delete(nsOwnSenderKey, id.String())
}
