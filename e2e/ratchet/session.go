package ratchet

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/xeddsa"
)

// DESIGN notes.
//
// SPQR. libsignal 0.90.0 creates every session with SPQR version 1 but a
// minimum version of 0 (ratchet.rs:101-111 and :192-202). SPQR treats an
// empty pq_ratchet field as version 0 (SparsePostQuantumRatchet v1.5.1
// src/lib.rs:462-468); on receiving it, a state that still allows
// negotiation drops to version 0 for good (lib.rs:375-407), after which
// it supplies no message key (lib.rs:415-419). Before it has received
// anything, libsignal also sends without an SPQR key while the minimum
// version is 0 (lib.rs:273-292). So every message key in a session with
// Magpie is derived classically, with no HKDF salt (ratchet/keys.rs:22-26,
// :90-100), and Magpie can ignore the pq_ratchet field it receives (it is
// still covered by the MAC, which is computed over the received bytes).
//
// Immutability. A state held by a Record is never modified in place:
// Encrypt and Decrypt work on clones and swap them in on success, and the
// skipped-key slices of a chain are replaced, never edited. This is what
// makes Decrypt transactional at the cost of a shallow copy.

// chain is one receiving chain: the remote ratchet public key it belongs
// to, its chain key, and the keys of messages skipped on it.
type chain struct {
	ratchetKey curve.PublicKey
	key        [32]byte
	index      uint32
	// skipped holds message-key seeds for counters below index that have
	// not arrived yet, oldest first, at most MaxMessageKeys. Replaced,
	// never modified in place.
	skipped []skippedKey
}

type skippedKey struct {
	index uint32
	seed  [32]byte
}

// pending is what the initiator repeats in every PreKeySignalMessage until
// it receives a message in the session ("unacknowledged pre-key message").
type pending struct {
	preKeyID        *uint32
	signedPreKeyID  uint32
	baseKey         curve.PublicKey
	kyberPreKeyID   uint32
	kyberCiphertext []byte
	created         int64 // unix seconds
}

// state is one session: Double Ratchet state plus what identifies it.
type state struct {
	version         uint8
	localIdentity   curve.PublicKey
	remoteIdentity  curve.PublicKey
	localRegID      uint32
	remoteRegID     uint32
	aliceBaseKey    curve.PublicKey
	rootKey         [32]byte
	previousCounter uint32
	senderRatchet   curve.KeyPair
	senderChainKey  [32]byte
	senderIndex     uint32
	receivers       []chain // oldest first, at most MaxReceiverChains
	pending         *pending
}

func (s *state) clone() *state {
	c := *s
	c.receivers = slices.Clone(s.receivers)
	return &c
}

func (s *state) withSelf() bool { return s.localIdentity == s.remoteIdentity }

func (s *state) receiverChain(key curve.PublicKey) int {
	for i := range s.receivers {
		if s.receivers[i].ratchetKey == key {
			return i
		}
	}
	return -1
}

func (s *state) addReceiverChain(key curve.PublicKey, ck [32]byte) {
	s.receivers = append(s.receivers, chain{ratchetKey: key, key: ck})
	if len(s.receivers) > MaxReceiverChains {
		s.receivers = slices.Delete(s.receivers, 0, 1)
	}
}

// maxUnacknowledgedAge is how long an initiator keeps sending on a session
// that has had no reply (libsignal consts.rs:25): after it, Encrypt
// reports ErrNoSession and the caller fetches a new bundle.
const maxUnacknowledgedAge = 30 * 24 * time.Hour

// Record is the session record for one remote device: the current session
// state, if any, and up to ArchivedStatesMax previous ones, newest first.
// The zero Record is empty and ready to use. A Record is not safe for
// concurrent use.
type Record struct {
	current  *state
	previous []*state
}

// HasCurrentSession reports whether the Record has a session to Encrypt
// with.
func (r *Record) HasCurrentSession() bool { return r.current != nil }

// RemoteIdentity returns the remote identity key of the current session.
func (r *Record) RemoteIdentity() (curve.PublicKey, bool) {
	if r.current == nil {
		return curve.PublicKey{}, false
	}
	return r.current.remoteIdentity, true
}

// RemoteRegistrationID returns the remote registration id of the current
// session.
func (r *Record) RemoteRegistrationID() (uint32, bool) {
	if r.current == nil {
		return 0, false
	}
	return r.current.remoteRegID, true
}

// ArchiveCurrentState moves the current session, if any, to the archived
// states: Encrypt then needs a new session, while late messages for the
// archived one still decrypt.
func (r *Record) ArchiveCurrentState() {
	if r.current == nil {
		return
	}
	r.previous = archive(r.previous, r.current)
	r.current = nil
}

// archive returns previous with s in front (and its pending pre-key
// message cleared, as it will never be sent again), dropping the oldest
// beyond ArchivedStatesMax (state/session.rs:754-766). It never modifies
// the array behind previous.
func archive(previous []*state, s *state) []*state {
	if s.pending != nil {
		s = s.clone()
		s.pending = nil
	}
	n := min(len(previous), ArchivedStatesMax-1)
	out := make([]*state, 0, n+1)
	out = append(out, s)
	return append(out, previous[:n]...)
}

// promote makes s the current state, archiving the old current one.
func (r *Record) promote(s *state) {
	if r.current != nil {
		r.previous = archive(r.previous, r.current)
	}
	r.current = s
}

// InitiateFromBundle starts a new session with the device that published b
// (Alice's side of PQXDH, PQXDH spec §3.3), making it the current session
// and archiving any previous one. It verifies both pre-key signatures and
// fails with ErrInvalidSignature if either is bad. Until the first message
// from the remote device arrives, Encrypt produces PreKeySignalMessages.
func (r *Record) InitiateFromBundle(ours IdentityKeyPair, ourRegID uint32, b Bundle, rand io.Reader) error {
	if b.KyberPreKey == nil {
		return fmt.Errorf("%w: no Kyber pre-key", ErrInvalidBundle)
	}
	if (b.PreKeyID == nil) != (b.PreKey == nil) {
		return fmt.Errorf("%w: one-time pre-key id and key must come together", ErrInvalidBundle)
	}
	// PQXDH spec §3.3: "Alice verifies the signatures"; libsignal
	// session.rs:191-203 checks both over the serialized public keys.
	if !xeddsa.Verify(b.IdentityKey, b.SignedPreKey.Serialize(), b.SignedPreKeySig) {
		return fmt.Errorf("%w: signed pre-key %d", ErrInvalidSignature, b.SignedPreKeyID)
	}
	if !xeddsa.Verify(b.IdentityKey, b.KyberPreKey.Serialize(), b.KyberPreKeySig) {
		return fmt.Errorf("%w: Kyber pre-key %d", ErrInvalidSignature, b.KyberPreKeyID)
	}
	base, err := curve.GenerateKeyPair(rand)
	if err != nil {
		return fmt.Errorf("ratchet: base key: %w", err)
	}

	// SK = KDF(DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS) with the 0xFF prefix
	// (PQXDH §2.2, §3.3; ratchet.rs:60-90).
	secret := make([]byte, 0, 32*6)
	secret = append(secret, discontinuity[:]...)
	for _, dh := range []struct {
		priv curve.PrivateKey
		pub  curve.PublicKey
	}{
		{ours.Private, b.SignedPreKey}, // DH1 = DH(IKA, SPKB)
		{base.Private, b.IdentityKey},  // DH2 = DH(EKA, IKB)
		{base.Private, b.SignedPreKey}, // DH3 = DH(EKA, SPKB)
	} {
		out, err := dh.priv.ECDH(dh.pub)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidBundle, err)
		}
		secret = append(secret, out[:]...)
	}
	if b.PreKey != nil { // DH4 = DH(EKA, OPKB)
		out, err := base.Private.ECDH(*b.PreKey)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidBundle, err)
		}
		secret = append(secret, out[:]...)
	}
	ct, ss, err := b.KyberPreKey.Encapsulate()
	if err != nil {
		return fmt.Errorf("%w: Kyber encapsulation: %w", ErrInvalidBundle, err)
	}
	secret = append(secret, ss...)
	rootKey, chainKey := pqxdhKeys(secret)
	clear(secret)

	// Double Ratchet §3.3 RatchetInitAlice: Bob's signed pre-key is his
	// first ratchet key (session.rs:218-225 passes it twice); Alice holds
	// a receiving chain for it with the PQXDH chain key
	// (ratchet.rs:94-129) and ratchets once to get her sending chain.
	sending, err := curve.GenerateKeyPair(rand)
	if err != nil {
		return fmt.Errorf("ratchet: ratchet key: %w", err)
	}
	dh, err := sending.Private.ECDH(b.SignedPreKey)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidBundle, err)
	}
	newRoot, sendChain := kdfRK(rootKey, dh)

	s := &state{
		version:        CurrentVersion,
		localIdentity:  ours.Public,
		remoteIdentity: b.IdentityKey,
		localRegID:     ourRegID,
		remoteRegID:    b.RegistrationID,
		aliceBaseKey:   base.Public,
		rootKey:        newRoot,
		senderRatchet:  sending,
		senderChainKey: sendChain,
		pending: &pending{
			signedPreKeyID:  b.SignedPreKeyID,
			baseKey:         base.Public,
			kyberPreKeyID:   b.KyberPreKeyID,
			kyberCiphertext: ct,
			created:         time.Now().Unix(),
		},
	}
	if b.PreKeyID != nil {
		id := *b.PreKeyID
		s.pending.preKeyID = &id
	}
	s.addReceiverChain(b.SignedPreKey, chainKey)
	r.promote(s)
	return nil
}

// discontinuity is PQXDH's F: 32 0xFF bytes in front of the DH outputs
// (PQXDH §2.2 for X25519; ratchet.rs:62).
var discontinuity = [32]byte{
	0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
	0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
}

// Encrypt encrypts plaintext in the current session and advances the
// sending chain. While the session is unacknowledged (started by
// InitiateFromBundle, nothing received yet) the result is a
// PreKeySignalMessage, otherwise a SignalMessage. ours must be the
// identity the session was created with. rand is unused today (there is
// no randomness in encryption without SPQR) and kept for when there is.
func (r *Record) Encrypt(ours IdentityKeyPair, plaintext []byte, rand io.Reader) (MessageType, []byte, error) {
	_ = rand
	if r.current == nil {
		return 0, nil, ErrNoSession
	}
	s := r.current
	if s.localIdentity != ours.Public {
		return 0, nil, fmt.Errorf("%w: session belongs to another local identity", ErrNoSession)
	}
	if s.pending != nil && time.Since(time.Unix(s.pending.created, 0)) > maxUnacknowledgedAge {
		return 0, nil, fmt.Errorf("%w: session unacknowledged for too long; fetch a new bundle", ErrNoSession)
	}
	keys := deriveMessageKeys(messageKeySeed(s.senderChainKey))
	body := encodeSignalMessage(s.version, s.senderRatchet.Public, s.senderIndex, s.previousCounter, encryptCBC(keys, plaintext))
	mac := computeMAC(keys.macKey, s.localIdentity, s.remoteIdentity, body)
	msg := append(body, mac[:]...)
	typ := WhisperMessage
	if p := s.pending; p != nil {
		msg = encodePreKeySignalMessage(s.version, s.localRegID, p.preKeyID, p.signedPreKeyID, p.kyberPreKeyID, p.kyberCiphertext, p.baseKey, s.localIdentity, msg)
		typ = PreKeyMessage
	}
	n := s.clone()
	n.senderChainKey = nextChainKey(s.senderChainKey)
	n.senderIndex++
	r.current = n
	return typ, msg, nil
}

// Decrypt decrypts a message of type msgType from the remote device.
//
// A PreKeyMessage that belongs to a session already in the Record
// (same base key) is decrypted in that session, which becomes current.
// Otherwise it creates a new session from our pre-keys (Bob's side of
// PQXDH), which becomes current, archiving the old one; used then says
// which pre-keys it consumed. A WhisperMessage is tried against the
// current session and then the archived ones, newest first.
//
// Decrypt is transactional: on any error the Record is unchanged. ours and
// ourRegID are the local device's identity and registration id.
func (r *Record) Decrypt(ours IdentityKeyPair, ourRegID uint32, keys PreKeyStore, msgType MessageType, ciphertext []byte) (plaintext []byte, used UsedPreKeys, err error) {
	switch msgType {
	case WhisperMessage:
		m, err := parseSignalMessage(ciphertext)
		if err != nil {
			return nil, used, err
		}
		if m.version != CurrentVersion {
			return nil, used, fmt.Errorf("%w: version %d", ErrLegacyVersion, m.version)
		}
		n := *r
		pt, err := n.decryptWhisper(m)
		if err != nil {
			return nil, used, err
		}
		*r = n
		return pt, used, nil
	case PreKeyMessage:
		m, err := parsePreKeySignalMessage(ciphertext)
		if err != nil {
			return nil, used, err
		}
		n := *r
		used, err = n.processPreKey(ours, ourRegID, keys, m)
		if err != nil {
			return nil, UsedPreKeys{}, err
		}
		// A PreKeySignalMessage decrypts in the session it names only
		// (session_cipher.rs:484-503).
		c := n.current.clone()
		pt, err := c.decrypt(m.message)
		if err != nil {
			return nil, UsedPreKeys{}, err
		}
		n.current = c
		*r = n
		return pt, used, nil
	}
	return nil, used, fmt.Errorf("%w: unknown message type %d", ErrInvalidMessage, msgType)
}

// processPreKey finds or creates the session for a PreKeySignalMessage and
// makes it current (session.rs:85-170).
func (r *Record) processPreKey(ours IdentityKeyPair, ourRegID uint32, keys PreKeyStore, m *preKeySignalMessage) (UsedPreKeys, error) {
	// An existing session with this base key? (state/session.rs:681-713)
	if r.current != nil && r.current.version == m.version && sameKey(r.current.aliceBaseKey, m.baseKey) {
		return UsedPreKeys{}, nil
	}
	for i, p := range r.previous {
		if p.version == m.version && sameKey(p.aliceBaseKey, m.baseKey) {
			r.previous = slices.Delete(slices.Clone(r.previous), i, i+1)
			r.promote(p)
			return UsedPreKeys{}, nil
		}
	}
	if m.version != CurrentVersion {
		return UsedPreKeys{}, fmt.Errorf("%w: X3DH (version %d) is no longer supported", ErrLegacyVersion, m.version)
	}
	if !m.hasKyber {
		return UsedPreKeys{}, fmt.Errorf("%w: missing Kyber pre-key", ErrInvalidMessage)
	}
	// libsignal refuses a base key that is not a canonical, torsion-free
	// point (ratchet.rs:139-145).
	if !isCanonical(m.baseKey) {
		return UsedPreKeys{}, fmt.Errorf("%w: incoming base key is invalid", ErrInvalidMessage)
	}
	spk, err := keys.SignedPreKey(m.signedPreKeyID)
	if err != nil {
		return UsedPreKeys{}, fmt.Errorf("%w: signed pre-key %d: %w", ErrUnknownPreKey, m.signedPreKeyID, err)
	}
	kpk, err := keys.KyberPreKey(m.kyberPreKeyID)
	if err != nil {
		return UsedPreKeys{}, fmt.Errorf("%w: Kyber pre-key %d: %w", ErrUnknownPreKey, m.kyberPreKeyID, err)
	}
	var opk *curve.KeyPair
	if m.preKeyID != nil {
		k, err := keys.PreKey(*m.preKeyID)
		if err != nil {
			return UsedPreKeys{}, fmt.Errorf("%w: one-time pre-key %d: %w", ErrUnknownPreKey, *m.preKeyID, err)
		}
		opk = &k
	}

	// Bob's half of PQXDH (§3.4; ratchet.rs:149-189), same order as Alice.
	secret := make([]byte, 0, 32*6)
	secret = append(secret, discontinuity[:]...)
	dhs := []struct {
		priv curve.PrivateKey
		pub  curve.PublicKey
	}{
		{spk.Private, m.identityKey}, // DH1
		{ours.Private, m.baseKey},    // DH2
		{spk.Private, m.baseKey},     // DH3
	}
	if opk != nil {
		dhs = append(dhs, struct {
			priv curve.PrivateKey
			pub  curve.PublicKey
		}{opk.Private, m.baseKey}) // DH4
	}
	for _, dh := range dhs {
		out, err := dh.priv.ECDH(dh.pub)
		if err != nil {
			clear(secret)
			return UsedPreKeys{}, fmt.Errorf("%w: %w", ErrInvalidMessage, err)
		}
		secret = append(secret, out[:]...)
	}
	ss, err := kpk.Decapsulate(m.kyberCiphertext)
	if err != nil {
		clear(secret)
		return UsedPreKeys{}, fmt.Errorf("%w: Kyber ciphertext: %w", ErrInvalidMessage, err)
	}
	secret = append(secret, ss...)
	rootKey, chainKey := pqxdhKeys(secret)
	clear(secret)

	// Double Ratchet §3.3 RatchetInitBob: the signed pre-key pair is the
	// first ratchet key pair, sending on the PQXDH chain key
	// (session.rs:146-155, ratchet.rs:210-218).
	r.promote(&state{
		version:        CurrentVersion,
		localIdentity:  ours.Public,
		remoteIdentity: m.identityKey,
		localRegID:     ourRegID,
		remoteRegID:    m.registrationID,
		aliceBaseKey:   m.baseKey,
		rootKey:        rootKey,
		senderRatchet:  spk,
		senderChainKey: chainKey,
	})
	used := UsedPreKeys{
		NewSession:     true,
		SignedPreKeyID: m.signedPreKeyID,
		KyberPreKeyID:  m.kyberPreKeyID,
		BaseKey:        m.baseKey,
	}
	if m.preKeyID != nil {
		id := *m.preKeyID
		used.PreKeyID = &id
	}
	return used, nil
}

func sameKey(a, b curve.PublicKey) bool { return subtle.ConstantTimeCompare(a[:], b[:]) == 1 }

// decryptWhisper tries the current state, then the archived ones
// (session_cipher.rs:452-581). A duplicate stops the search at once.
func (r *Record) decryptWhisper(m *signalMessage) ([]byte, error) {
	if r.current == nil && len(r.previous) == 0 {
		return nil, ErrNoSession
	}
	var first error
	if r.current != nil {
		c := r.current.clone()
		pt, err := c.decrypt(m)
		if err == nil {
			r.current = c
			return pt, nil
		}
		if errors.Is(err, ErrDuplicateMessage) {
			return nil, err
		}
		first = err
	}
	for i, p := range r.previous {
		c := p.clone()
		pt, err := c.decrypt(m)
		if err == nil {
			r.previous = slices.Delete(slices.Clone(r.previous), i, i+1)
			r.promote(c)
			return pt, nil
		}
		if errors.Is(err, ErrDuplicateMessage) {
			return nil, err
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}

// decrypt decrypts m in s, which the caller has cloned: on error s may be
// half-updated and must be dropped (session_cipher.rs:599-694).
func (s *state) decrypt(m *signalMessage) ([]byte, error) {
	if m.version != s.version {
		return nil, fmt.Errorf("%w: message version %d in a version %d session", ErrUnsupportedVersion, m.version, s.version)
	}
	ci, err := s.receiverChainFor(m.ratchetKey)
	if err != nil {
		return nil, err
	}
	seed, err := s.messageKeySeed(ci, m.counter)
	if err != nil {
		return nil, err
	}
	keys := deriveMessageKeys(seed)
	body := m.serialized[:len(m.serialized)-macLen]
	want := computeMAC(keys.macKey, s.remoteIdentity, s.localIdentity, body)
	if !macEqual(want[:], m.serialized[len(m.serialized)-macLen:]) {
		return nil, ErrInvalidMAC
	}
	pt, err := decryptCBC(keys, m.ciphertext)
	if err != nil {
		return nil, err
	}
	// A message received means the peer has the session: stop sending
	// PreKeySignalMessages.
	s.pending = nil
	return pt, nil
}

// receiverChainFor returns the index of the receiving chain for the
// remote ratchet key, performing a DH ratchet step if it is new (Double
// Ratchet §3.5 DHRatchet; session_cipher.rs:696-730).
func (s *state) receiverChainFor(theirs curve.PublicKey) (int, error) {
	if i := s.receiverChain(theirs); i >= 0 {
		return i, nil
	}
	dh, err := s.senderRatchet.Private.ECDH(theirs)
	if err != nil {
		return 0, fmt.Errorf("%w: ratchet key: %w", ErrInvalidMessage, err)
	}
	root, recvChain := kdfRK(s.rootKey, dh)
	next, err := curve.GenerateKeyPair(rand.Reader)
	if err != nil {
		return 0, fmt.Errorf("ratchet: new ratchet key: %w", err)
	}
	dh, err = next.Private.ECDH(theirs)
	if err != nil {
		return 0, fmt.Errorf("%w: ratchet key: %w", ErrInvalidMessage, err)
	}
	root, sendChain := kdfRK(root, dh)
	s.rootKey = root
	s.addReceiverChain(theirs, recvChain)
	// libsignal records the index of the last message sent in the old
	// chain, or 0 (session_cipher.rs:720-726).
	s.previousCounter = 0
	if s.senderIndex > 0 {
		s.previousCounter = s.senderIndex - 1
	}
	s.senderRatchet = next
	s.senderChainKey = sendChain
	s.senderIndex = 0
	return len(s.receivers) - 1, nil
}

// messageKeySeed returns the message-key seed for counter on receiving
// chain ci, from the skipped keys or by advancing the chain and keeping
// the keys it skips (Double Ratchet §3.5 TrySkippedMessageKeys and
// SkipMessageKeys; session_cipher.rs:732-782).
func (s *state) messageKeySeed(ci int, counter uint32) ([32]byte, error) {
	c := &s.receivers[ci]
	if counter == math.MaxUint32 {
		// The chain index after it would wrap.
		return [32]byte{}, fmt.Errorf("%w: counter %d", ErrInvalidMessage, counter)
	}
	if counter < c.index {
		for i, k := range c.skipped {
			if k.index == counter {
				c.skipped = slices.Delete(slices.Clone(c.skipped), i, i+1)
				return k.seed, nil
			}
		}
		return [32]byte{}, fmt.Errorf("%w: counter %d", ErrDuplicateMessage, counter)
	}
	jump := counter - c.index
	if jump > MaxForwardJumps && !s.withSelf() {
		return [32]byte{}, fmt.Errorf("%w: counter %d is %d past the chain", ErrTooFarInFuture, counter, jump)
	}
	ck := c.key
	if jump > 0 {
		// Only the newest MaxMessageKeys skipped keys survive, so only
		// those are kept; the chain still advances over all of them.
		keep := int(min(jump, MaxMessageKeys))
		old := c.skipped
		if drop := len(old) + keep - MaxMessageKeys; drop > 0 {
			old = old[drop:]
		}
		skipped := make([]skippedKey, len(old), len(old)+keep)
		copy(skipped, old)
		for idx := c.index; idx < counter; idx++ {
			if counter-idx <= uint32(keep) {
				skipped = append(skipped, skippedKey{index: idx, seed: messageKeySeed(ck)})
			}
			ck = nextChainKey(ck)
		}
		c.skipped = skipped
	}
	seed := messageKeySeed(ck)
	c.key = nextChainKey(ck)
	c.index = counter + 1
	return seed, nil
}
