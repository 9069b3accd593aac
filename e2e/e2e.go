// Package e2e is Magpie's end-to-end layer on the client: this device's
// identity and prekeys, one Signal-protocol session per remote device
// (Sesame: a message to a user is encrypted to each of their devices, and to
// the sender's own other devices), and trust in contacts' identity keys.
//
// The protocol itself lives in the subpackages: ratchet (PQXDH and the
// Double Ratchet in libsignal's formats), curve, xeddsa, kem and
// fingerprint. This package keeps their state in a KV, which the client
// implements over its local (encrypted) store, inside transactions so that a
// decrypted message and the session step that produced it are saved
// together. Sesame is the send path: it encrypts a message for each of the
// recipient's devices and keeps the sessions in step with the server's
// device list.
package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
)

// KV is the state this package keeps, in namespaces. Values are secret: the
// implementation encrypts them at rest.
type KV interface {
	// Get returns the value, or nil and no error if there is none.
	Get(ns, key string) ([]byte, error)
	Put(ns, key string, value []byte) error
	Delete(ns, key string) error
	// Keys lists the keys of a namespace with the given prefix.
	Keys(ns, prefix string) ([]string, error)
}

// Namespaces in the KV.
const (
	nsSelf     = "e2e.self"     // identity, prekey bookkeeping
	nsSigned   = "e2e.signed"   // signed EC prekeys, by id
	nsKyber    = "e2e.kyber"    // Kyber prekeys (one-time and last-resort), by id
	nsPreKey   = "e2e.prekey"   // one-time EC prekeys, by id
	nsSession  = "e2e.session"  // session records, by "user/device"
	nsContact  = "e2e.contact"  // contacts' identity keys and trust
	nsBaseKeys = "e2e.basekeys" // last-resort Kyber uses seen, to refuse replays
)

// Sentinel errors.
var (
	// ErrNoIdentity: this device has not created its identity yet.
	ErrNoIdentity = errors.New("e2e: no identity key yet")
	// ErrIdentityChanged: a verified contact's identity key changed; the
	// user must compare safety numbers again before sending.
	ErrIdentityChanged = errors.New("e2e: safety number changed")
	// ErrUnknownEnvelope: a payload that is not an end-to-end envelope.
	ErrUnknownEnvelope = errors.New("e2e: not an end-to-end message")
	// ErrNoContact: nothing is known of that user's identity yet.
	ErrNoContact = errors.New("e2e: no identity key known for that user yet")
)

func getJSON(kv KV, ns, key string, v any) (bool, error) {
	b, err := kv.Get(ns, key)
	if err != nil || b == nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("e2e: stored %s/%s: %w", ns, key, err)
	}
	return true, nil
}

func putJSON(kv KV, ns, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return kv.Put(ns, key, b)
}
