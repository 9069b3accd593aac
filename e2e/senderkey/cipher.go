package senderkey

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/magpie-im/magpie/e2e/curve"
)

// DistributionMessage returns the message that hands this device's chain to
// member devices: the chain's id, its current iteration and chain key, and
// its public signing key. If the Record has no chain yet, it first makes
// one, as libsignal's create_sender_key_distribution_message does
// (group_cipher.rs:228-287): a random 31-bit chain id, a random chain key
// at iteration 0 and a new signing key pair. Otherwise it describes the
// newest chain as it stands, so that a member added later cannot read
// the messages sent before.
func (r *Record) DistributionMessage(id DistributionID, random io.Reader) (DistributionMessage, error) {
	if len(r.states) == 0 {
		var b [4 + 32]byte
		if _, err := io.ReadFull(random, b[:]); err != nil {
			return DistributionMessage{}, fmt.Errorf("senderkey: reading randomness: %w", err)
		}
		kp, err := curve.GenerateKeyPair(random)
		if err != nil {
			return DistributionMessage{}, fmt.Errorf("senderkey: signing key: %w", err)
		}
		// "libsignal-protocol-java uses 31-bit integers for sender key
		// chain IDs" (group_cipher.rs:241).
		s := &State{
			chainID: binary.BigEndian.Uint32(b[:4]) >> 1,
			chain:   ChainKey{Key: [32]byte(b[4:])},
			signing: kp.Public,
			private: &kp.Private,
		}
		r.add(s)
	}
	s := r.states[0]
	return DistributionMessage{
		DistributionID: id,
		ChainID:        s.chainID,
		Iteration:      s.chain.Iteration,
		ChainKey:       s.chain.Key,
		SigningKey:     s.signing,
	}, nil
}

// Process adds the chain that a DistributionMessage hands over, as
// libsignal's add_sender_key_state does (sender_keys.rs:294-348): a chain
// with the same id and signing key is kept as it is (the message's chain key
// and iteration are ignored) and becomes the newest; one with the same id
// but another signing key is replaced; and when the Record is full, the
// chain least recently added is dropped.
func (r *Record) Process(m DistributionMessage) {
	r.add(&State{
		chainID: m.ChainID,
		chain:   ChainKey{Iteration: m.Iteration, Key: m.ChainKey},
		signing: m.SigningKey,
	})
}

// add makes s the newest chain (or the chain it matches, see Process).
func (r *Record) add(s *State) {
	if i := slices.IndexFunc(r.states, func(o *State) bool {
		return o.chainID == s.chainID && o.signing == s.signing
	}); i >= 0 {
		s = r.states[i]
	}
	kept := slices.DeleteFunc(slices.Clone(r.states), func(o *State) bool { return o.chainID == s.chainID })
	kept = kept[:min(len(kept), MaxStates-1)]
	r.states = append([]*State{s}, kept...)
}

// Encrypt encrypts plaintext on the Record's newest chain, which must be
// this device's own (see DistributionMessage), and returns the signed
// Message. random supplies the signature's 64 random bytes.
func (r *Record) Encrypt(id DistributionID, plaintext []byte, random io.Reader) ([]byte, error) {
	if len(r.states) == 0 {
		return nil, fmt.Errorf("%w: no chain to send on for distribution %s", ErrNoSenderKey, id)
	}
	s := r.states[0]
	if s.private == nil {
		return nil, ErrCannotSend
	}
	next, err := s.chain.Next()
	if err != nil {
		return nil, err
	}
	var z [64]byte
	if _, err := io.ReadFull(random, z[:]); err != nil {
		return nil, fmt.Errorf("senderkey: reading randomness: %w", err)
	}
	keys := s.chain.MessageKeys()
	msg := signMessage(id, s.chainID, keys.Iteration, keys.Seal(plaintext), *s.private, z)
	r.replace(0, s.with(next, s.skipped))
	return msg, nil
}

// Decrypt checks a Message's signature with its chain's signing key and
// then decrypts it, as libsignal's group_decrypt does
// (group_cipher.rs:124-194). The caller has found the Record by the
// Message's distribution id and sender. On any error the Record is
// unchanged.
func (r *Record) Decrypt(m *Message) ([]byte, error) {
	i := slices.IndexFunc(r.states, func(s *State) bool { return s.chainID == m.ChainID })
	if i < 0 {
		return nil, fmt.Errorf("%w: chain %d of distribution %s is unknown: never distributed to this device, or dropped (a record keeps the %d chains most recently distributed)",
			ErrNoSenderKey, m.ChainID, m.DistributionID, MaxStates)
	}
	s := r.states[i]
	if !m.VerifySignature(s.signing) {
		return nil, ErrInvalidSignature
	}
	keys, next, err := s.keysFor(m.Iteration)
	if err != nil {
		return nil, err
	}
	pt, err := keys.Open(m.Ciphertext)
	if err != nil {
		return nil, err
	}
	r.replace(i, next)
	return pt, nil
}

// replace swaps in a new version of state i.
func (r *Record) replace(i int, s *State) {
	states := slices.Clone(r.states)
	states[i] = s
	r.states = states
}

// with returns a copy of s with another chain key and skipped keys.
func (s *State) with(chain ChainKey, skipped []skippedKey) *State {
	n := *s
	n.chain, n.skipped = chain, skipped
	return &n
}

// keysFor returns the keys of the message at iteration and the State that
// results from using them, as libsignal's get_sender_key does
// (group_cipher.rs:75-122): a message behind the chain uses a kept skipped
// key, or is a duplicate; one ahead, by at most MaxForwardJumps, advances the
// chain and keeps the keys of the messages it skips, at most
// MaxMessageKeys in all, the oldest dropped first.
func (s *State) keysFor(iteration uint32) (MessageKeys, *State, error) {
	cur := s.chain.Iteration
	if iteration < cur {
		i := slices.IndexFunc(s.skipped, func(k skippedKey) bool { return k.iteration == iteration })
		if i < 0 {
			return MessageKeys{}, nil, fmt.Errorf("%w: iteration %d, chain at %d", ErrDuplicateMessage, iteration, cur)
		}
		keys := NewMessageKeys(iteration, s.skipped[i].seed)
		return keys, s.with(s.chain, slices.Delete(slices.Clone(s.skipped), i, i+1)), nil
	}
	jump := iteration - cur
	if jump > MaxForwardJumps {
		return MessageKeys{}, nil, fmt.Errorf("%w: iteration %d, chain at %d", ErrTooFarInFuture, iteration, cur)
	}
	// Of the old skipped keys and the jump new ones, the last
	// MaxMessageKeys are kept.
	fresh := min(int(jump), MaxMessageKeys)
	old := s.skipped[len(s.skipped)-min(len(s.skipped), MaxMessageKeys-fresh):]
	skipped := make([]skippedKey, len(old), len(old)+fresh)
	copy(skipped, old)
	c := s.chain
	for c.Iteration < iteration {
		if iteration-c.Iteration <= uint32(fresh) {
			skipped = append(skipped, skippedKey{c.Iteration, c.seed()})
		}
		c, _ = c.Next() // c.Iteration < iteration: it cannot be exhausted
	}
	next, err := c.Next()
	if err != nil {
		return MessageKeys{}, nil, err
	}
	return c.MessageKeys(), s.with(next, skipped), nil
}
