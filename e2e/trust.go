package e2e

import (
	"time"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/fingerprint"
)

// Contact is what this device believes about another user's identity key.
type Contact struct {
	Identity curve.PublicKey `json:"identity"`
	Verified bool            `json:"verified"` // the user compared safety numbers
	// Pending is a new identity key seen after Identity was verified. Until
	// the user verifies it, sending to this contact is refused
	// (ErrIdentityChanged).
	Pending   *curve.PublicKey `json:"pending,omitempty"`
	FirstSeen time.Time        `json:"first_seen"`
	Changed   time.Time        `json:"changed,omitzero"` // last identity change
}

// LoadContact returns what is known of user, or nil.
func LoadContact(kv KV, user string) (*Contact, error) {
	var c Contact
	ok, err := getJSON(kv, nsContact, user, &c)
	if err != nil || !ok {
		return nil, err
	}
	return &c, nil
}

// CheckIdentity is called before sending to user with identity key key. The
// first key seen is trusted (trust on first use). A different key for an
// unverified contact replaces the old one and reports changed (the caller
// warns the user). A different key for a verified contact is recorded as
// pending and refused with ErrIdentityChanged until the user verifies it.
func CheckIdentity(kv KV, user string, key curve.PublicKey) (changed bool, err error) {
	c, err := LoadContact(kv, user)
	if err != nil {
		return false, err
	}
	now := time.Now()
	switch {
	case c == nil:
		return false, putJSON(kv, nsContact, user, Contact{Identity: key, FirstSeen: now})
	case c.Identity == key && c.Pending == nil:
		return false, nil
	case c.Verified:
		if c.Pending == nil || *c.Pending != key {
			c.Pending, c.Changed = &key, now
			if err := putJSON(kv, nsContact, user, c); err != nil {
				return true, err
			}
		}
		return true, ErrIdentityChanged
	default:
		c.Identity, c.Changed = key, now
		return true, putJSON(kv, nsContact, user, c)
	}
}

// noteIdentity records the identity key a received message came with. The
// message is always accepted (it is already decrypted and authentic under
// that key); a change is reported and, for a verified contact, blocks
// sending until the user verifies again.
func noteIdentity(kv KV, user string, key curve.PublicKey) (bool, error) {
	changed, err := CheckIdentity(kv, user, key)
	if err == ErrIdentityChanged {
		return true, nil
	}
	return changed, err
}

// SafetyNumber is what two users compare to rule out a man in the middle:
// Signal's 60-digit number and the scannable (QR) form, computed from both
// usernames and identity keys. It uses the contact's pending key if one is
// waiting for verification.
type SafetyNumber struct {
	Digits    string
	Scannable []byte
	Contact   Contact
}

// ComputeSafetyNumber returns the safety number between this device's user
// (selfName, self) and user whose identity key is known in kv.
func ComputeSafetyNumber(kv KV, selfName string, self *Identity, user string) (*SafetyNumber, error) {
	c, err := LoadContact(kv, user)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, ErrNoContact
	}
	theirs := c.Identity
	if c.Pending != nil {
		theirs = *c.Pending
	}
	return &SafetyNumber{
		Digits:    fingerprint.Displayable([]byte(selfName), self.Key.Public, []byte(user), theirs),
		Scannable: fingerprint.Scannable([]byte(selfName), self.Key.Public, []byte(user), theirs),
		Contact:   *c,
	}, nil
}

// MarkVerified records that the user compared safety numbers with user: the
// pending key, if any, becomes the trusted one.
func MarkVerified(kv KV, user string) error {
	c, err := LoadContact(kv, user)
	if err != nil {
		return err
	}
	if c == nil {
		return ErrNoContact
	}
	if c.Pending != nil {
		c.Identity, c.Pending = *c.Pending, nil
	}
	c.Verified = true
	return putJSON(kv, nsContact, user, c)
}
