package senderkey

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/xeddsa"
)

// A chain's messages decrypt in any order, each once, and the skipped keys
// a receiver keeps are exactly those of the messages not yet received.
func TestEncryptDecryptOutOfOrder(t *testing.T) {
	s := newSender(t)
	r := s.receiver(t)
	var msgs [][]byte
	for i := range 10 {
		msgs = append(msgs, s.send(t, fmt.Sprint("m", i)))
	}
	for _, i := range []int{0, 4, 2, 9, 1, 8, 3} {
		mustDecrypt(t, r, msgs[i], fmt.Sprint("m", i))
	}
	st := r.states[0]
	if got := st.Skipped(); !slices.Equal(got, []uint32{5, 6, 7}) {
		t.Fatalf("skipped keys kept for %v, want [5 6 7]", got)
	}
	if st.ChainKey().Iteration != 10 {
		t.Fatalf("receiving chain at %d, want 10", st.ChainKey().Iteration)
	}
	for _, i := range []int{7, 5, 6} {
		mustDecrypt(t, r, msgs[i], fmt.Sprint("m", i))
	}
	for i := range msgs {
		mustFail(t, r, msgs[i], ErrDuplicateMessage)
	}
	// Plaintexts of every padding length, and an empty one.
	for n := range 40 {
		text := strings.Repeat("x", n)
		mustDecrypt(t, r, s.send(t, text), text)
	}
}

// libsignal's limit is on the jump: iteration - current <= MaxForwardJumps
// (group_cipher.rs:99-100).
func TestForwardJumpLimit(t *testing.T) {
	for _, tc := range []struct {
		ahead uint32
		err   error
	}{{MaxForwardJumps, nil}, {MaxForwardJumps + 1, ErrTooFarInFuture}} {
		t.Run(fmt.Sprint(tc.ahead), func(t *testing.T) {
			s := newSender(t)
			r := s.receiver(t)
			mustDecrypt(t, r, s.send(t, "first"), "first") // the chain is at 1
			s.skip(t, tc.ahead)
			far := s.send(t, "far")
			if tc.err != nil {
				mustFail(t, r, far, tc.err)
				return
			}
			mustDecrypt(t, r, far, "far")
			// Of the 25,000 skipped, the newest MaxMessageKeys are kept.
			st := r.states[0]
			if got := st.Skipped(); len(got) != MaxMessageKeys || got[0] != 1+tc.ahead-MaxMessageKeys || got[len(got)-1] != tc.ahead {
				t.Fatalf("kept %d skipped keys, %v..%v", len(got), got[0], got[len(got)-1])
			}
		})
	}
}

// Skipped keys accumulate over several jumps up to MaxMessageKeys; beyond,
// the oldest go first, and a message whose key went is a duplicate to
// libsignal (group_cipher.rs:85-97).
func TestSkippedKeysCap(t *testing.T) {
	s := newSender(t)
	r := s.receiver(t)
	var kept []uint32
	var held [][]byte // a message of each jump, for after
	for jump := range 3 {
		start := r.states[0].chain.Iteration
		held = append(held, s.send(t, fmt.Sprint("held ", jump)))
		s.skip(t, 898)
		mustDecrypt(t, r, s.send(t, "jump"), "jump")
		for i := start; i < start+899; i++ {
			kept = append(kept, i)
		}
		if len(kept) > MaxMessageKeys {
			kept = kept[len(kept)-MaxMessageKeys:]
		}
		if got := r.states[0].Skipped(); !slices.Equal(got, kept) {
			t.Fatalf("after jump %d: %d skipped keys [%d..%d], want %d [%d..%d]", jump,
				len(got), got[0], got[len(got)-1], len(kept), kept[0], kept[len(kept)-1])
		}
	}
	// 3×899 were skipped (0-898, 900-1798, 1800-2698): the 697 oldest went.
	if n := len(kept); n != MaxMessageKeys || kept[0] != 697 {
		t.Fatalf("test setup: %d keys from %d", n, kept[0])
	}
	// So held[0] (iteration 0) went, and held[1] (900) and held[2] (1800)
	// are kept.
	mustFail(t, r, held[0], ErrDuplicateMessage)
	mustDecrypt(t, r, held[1], "held 1")
	mustDecrypt(t, r, held[2], "held 2")
}

// A Record keeps MaxStates chains: adding one to a full Record drops the
// chain least recently added, where re-adding a known chain counts as
// adding it (sender_keys.rs:294-348).
func TestStateEviction(t *testing.T) {
	id, err := NewDistributionID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var senders []*sender
	var r Record
	for i := range MaxStates + 1 {
		senders = append(senders, newSenderOn(t, id, uint32(i+1))) // distinct, whatever the random ids
	}
	add := func(i int) { r.Process(senders[i].distribution(t)) }
	ids := func() (out []uint32) {
		for _, st := range r.States() {
			out = append(out, st.ChainID())
		}
		return out
	}
	for i := range MaxStates {
		add(i)
	}
	if got := ids(); !slices.Equal(got, []uint32{5, 4, 3, 2, 1}) {
		t.Fatalf("chains %v, want newest first [5 4 3 2 1]", got)
	}
	// Chain 1 receives a message, then is distributed again: it becomes
	// the newest and keeps its state (iteration 1, not 0 again).
	mustDecrypt(t, &r, senders[0].send(t, "on chain 1"), "on chain 1")
	old2 := senders[1].send(t, "on chain 2")
	add(0)
	if got := ids(); !slices.Equal(got, []uint32{1, 5, 4, 3, 2}) {
		t.Fatalf("chains %v after re-adding chain 1, want [1 5 4 3 2]", got)
	}
	if it := r.states[0].ChainKey().Iteration; it != 1 {
		t.Fatalf("re-added chain 1 at iteration %d, want its kept state at 1", it)
	}
	// The sixth chain drops chain 2, the least recently added.
	add(5)
	if got := ids(); !slices.Equal(got, []uint32{6, 1, 5, 4, 3}) {
		t.Fatalf("chains %v after a sixth, want [6 1 5 4 3]", got)
	}
	err = mustFail(t, &r, old2, ErrNoSenderKey)
	if !strings.Contains(err.Error(), "chain 2 ") || !strings.Contains(err.Error(), "dropped") {
		t.Fatalf("the error for an evicted chain does not say which and why: %v", err)
	}
	for _, i := range []int{0, 2, 3, 4, 5} {
		mustDecrypt(t, &r, senders[i].send(t, "still here"), "still here")
	}
}

// A distribution message for a known chain id with the same signing key
// leaves the chain as it was; with another signing key, it replaces it.
func TestProcessKnownChain(t *testing.T) {
	s := newSender(t)
	r := s.receiver(t)
	first := s.send(t, "first")
	mustDecrypt(t, r, s.send(t, "second"), "second")
	// The same chain, distributed again at iteration 2: the receiver keeps
	// its state, so the skipped first message still decrypts.
	r.Process(s.distribution(t))
	if len(r.states) != 1 || r.states[0].chain.Iteration != 2 || !slices.Equal(r.states[0].Skipped(), []uint32{0}) {
		t.Fatalf("re-processing changed the chain: %d states, iteration %d, skipped %v",
			len(r.states), r.states[0].chain.Iteration, r.states[0].Skipped())
	}
	// Even a distribution message with an older iteration and another
	// chain key changes nothing.
	d := s.distribution(t)
	d.Iteration, d.ChainKey = 0, [32]byte{1}
	r.Process(d)
	mustDecrypt(t, r, first, "first")
	mustDecrypt(t, r, s.send(t, "third"), "third")

	// Another signing key under the same chain id replaces the chain.
	imp := newSenderOn(t, s.id, s.rec.states[0].chainID)
	d = imp.distribution(t)
	r.Process(d)
	if len(r.states) != 1 || r.states[0].signing != d.SigningKey || r.states[0].chain.Iteration != 0 {
		t.Fatalf("a new signing key did not replace the chain")
	}
	mustFail(t, r, s.send(t, "old key"), ErrInvalidSignature)
	mustDecrypt(t, r, imp.send(t, "new key"), "new key")
}

// DistributionMessage makes a chain once (31-bit id, iteration 0, a signing
// key whose private half stays in the Record) and afterwards describes it
// as it stands.
func TestDistributionMessage(t *testing.T) {
	var top uint32
	for range 64 {
		s := newSender(t)
		d := s.distribution(t)
		top |= d.ChainID
		if d.ChainID >= 1<<31 || d.Iteration != 0 || d.DistributionID != s.id {
			t.Fatalf("new chain: id %d, iteration %d", d.ChainID, d.Iteration)
		}
		st := s.rec.states[0]
		if !st.CanSend() || st.signing != d.SigningKey || st.chain.Key != d.ChainKey {
			t.Fatal("the Record does not hold the chain it distributed")
		}
		if pub, err := st.private.PublicKey(); err != nil || pub != d.SigningKey {
			t.Fatal("the private signing key does not match the public one")
		}
	}
	if top < 1<<30 {
		t.Fatalf("64 chain ids never used bit 30: not 31 random bits (%#x)", top)
	}
	s := newSender(t)
	d0 := s.distribution(t)
	for range 3 {
		s.send(t, "x")
	}
	d3 := s.distribution(t)
	c3 := ChainKey{Key: d0.ChainKey}
	for range 3 {
		c3, _ = c3.Next()
	}
	if d3.ChainID != d0.ChainID || d3.SigningKey != d0.SigningKey || d3.Iteration != 3 || d3.ChainKey != c3.Key || len(s.rec.states) != 1 {
		t.Fatalf("second distribution message %+v is not the same chain at iteration 3", d3.Iteration)
	}
	// A receiver given the later one cannot read what was sent before.
	s2 := newSender(t)
	early := s2.send(t, "before")
	late := s2.receiver(t)
	mustFail(t, late, early, ErrDuplicateMessage)
}

func TestEncryptErrors(t *testing.T) {
	var empty Record
	if _, err := empty.Encrypt(DistributionID{}, []byte("x"), rand.Reader); !errors.Is(err, ErrNoSenderKey) {
		t.Fatalf("Encrypt with no chain: %v", err)
	}
	s := newSender(t)
	r := s.receiver(t)
	if _, err := r.Encrypt(s.id, []byte("x"), rand.Reader); !errors.Is(err, ErrCannotSend) {
		t.Fatalf("Encrypt on a received chain: %v", err)
	}
	before := marshal(t, &s.rec)
	if _, err := s.rec.Encrypt(s.id, []byte("x"), bytes.NewReader(make([]byte, 10))); err == nil {
		t.Fatal("Encrypt with too little randomness succeeded")
	}
	if !bytes.Equal(before, marshal(t, &s.rec)) {
		t.Fatal("a failed Encrypt advanced the chain")
	}
	if _, err := NewDistributionID(bytes.NewReader(nil)); err == nil {
		t.Fatal("NewDistributionID without randomness succeeded")
	}
	if _, err := new(Record).DistributionMessage(s.id, bytes.NewReader(make([]byte, 40))); err == nil {
		t.Fatal("DistributionMessage with too little randomness succeeded")
	}
}

// The signature is checked before anything else about the message's
// iteration: a forged message is refused as such, even when it would also be
// a duplicate or too far ahead.
func TestSignatureCheckedFirst(t *testing.T) {
	s := newSender(t)
	r := s.receiver(t)
	forger := newSenderOn(t, s.id, s.rec.states[0].chainID)
	forger.rec.states[0].chain = s.rec.states[0].chain // even knowing the chain key

	seen := s.send(t, "seen")
	mustDecrypt(t, r, seen, "seen")
	forged := forger.send(t, "forged") // iteration 0 again
	mustFail(t, r, forged, ErrInvalidSignature)
	forger.skip(t, MaxForwardJumps+5)
	mustFail(t, r, forger.send(t, "far"), ErrInvalidSignature)
	// Each byte of a genuine message is covered.
	m := s.send(t, "genuine")
	for i := range m {
		bad := bytes.Clone(m)
		bad[i] ^= 0x40
		if pt, err := decrypt(t, r, bad); err == nil {
			t.Fatalf("flipping byte %d of %d: decrypted %q", i, len(m), pt)
		}
	}
	mustDecrypt(t, r, m, "genuine")
}

// Decrypt changes nothing when it fails, whatever the reason; in particular
// a message that is validly signed but does not decrypt (a sender's bug)
// does not advance the chain or consume a skipped key.
func TestDecryptFailureLeavesRecord(t *testing.T) {
	s := newSender(t)
	r := s.receiver(t)
	st := s.rec.states[0]
	signed := func(iteration uint32, ct []byte) []byte {
		return signMessage(s.id, st.chainID, iteration, ct, *st.private, [64]byte{})
	}
	mustDecrypt(t, r, s.send(t, "m0"), "m0")
	held := s.send(t, "m1")
	mustDecrypt(t, r, s.send(t, "m2"), "m2") // 1 is skipped, the chain at 3
	before := marshal(t, r)
	chain := ChainKey{Key: st.chain.Key}
	var keys []MessageKeys
	for range 6 {
		keys = append(keys, chain.MessageKeys())
		chain, _ = chain.Next()
	}
	goodKeys := keys[5]
	for name, m := range map[string][]byte{
		"skipped key, bad padding":       signed(1, badPadding(keys[1])),
		"new key, bad padding":           signed(5, badPadding(goodKeys)),
		"new key, empty ciphertext":      signed(5, nil),
		"new key, ciphertext of 15":      signed(5, make([]byte, 15)),
		"too far ahead":                  signed(3+MaxForwardJumps+1, goodKeys.Seal(nil)),
		"another chain id":               signMessage(s.id, st.chainID+1, 3, goodKeys.Seal(nil), *st.private, [64]byte{}),
		"duplicate":                      signed(0, make([]byte, 16)),
		"valid at iteration 5, but tamp": append(signed(5, goodKeys.Seal([]byte("x")))[:20], make([]byte, 64)...),
	} {
		if _, err := decrypt(t, r, m); err == nil {
			t.Fatalf("%s: decrypted", name)
		}
		if !bytes.Equal(before, marshal(t, r)) {
			t.Fatalf("%s: the Record changed", name)
		}
	}
	mustDecrypt(t, r, held, "m1")
	mustDecrypt(t, r, signed(5, goodKeys.Seal([]byte("five"))), "five")
}

// badPadding returns a block that decrypts with keys to 15 zero bytes and
// a padding byte of 0, which PKCS#7 does not allow.
func badPadding(keys MessageKeys) []byte {
	b := make([]byte, aes.BlockSize)
	cipher.NewCBCEncrypter(keys.block(), keys.IV[:]).CryptBlocks(b, b)
	return b
}

// A chain at the last iteration cannot send or receive further
// (libsignal's "Sender chain is too long").
func TestChainExhausted(t *testing.T) {
	s := newSender(t)
	st := s.rec.states[0]
	s.rec.replace(0, st.with(ChainKey{Iteration: math.MaxUint32 - 1, Key: st.chain.Key}, nil))
	r := s.receiver(t)
	mustDecrypt(t, r, s.send(t, "last but one"), "last but one")
	if _, err := s.rec.Encrypt(s.id, []byte("last"), rand.Reader); !errors.Is(err, ErrChainExhausted) {
		t.Fatalf("Encrypt at iteration 2^32-1: %v", err)
	}
	last := s.rec.states[0].chain.MessageKeys()
	m := signMessage(s.id, st.chainID, math.MaxUint32, last.Seal([]byte("last")), *st.private, [64]byte{})
	mustFail(t, r, m, ErrChainExhausted)
	if _, err := (ChainKey{Iteration: math.MaxUint32}).Next(); !errors.Is(err, ErrChainExhausted) {
		t.Fatalf("Next at 2^32-1: %v", err)
	}
}

func TestNewDistributionID(t *testing.T) {
	seen := map[DistributionID]bool{}
	for range 256 {
		id, err := NewDistributionID(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		// RFC 4122 §4.1.3 version 4, §4.1.1 variant 10x.
		if id[6]>>4 != 4 || id[8]>>6 != 2 {
			t.Fatalf("%s: version %d, variant bits %02b", id, id[6]>>4, id[8]>>6)
		}
		s := id.String()
		if len(s) != 36 || s[14] != '4' || !strings.ContainsRune("89ab", rune(s[19])) || strings.Count(s, "-") != 4 {
			t.Fatalf("%q is not a v4 UUID string", s)
		}
		seen[id] = true
	}
	if len(seen) != 256 {
		t.Fatal("repeated distribution ids")
	}
	id := DistributionID{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0x4c, 0xde, 0x8f, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd}
	if got := id.String(); got != "01234567-89ab-4cde-8f01-23456789abcd" {
		t.Fatalf("String: %s", got)
	}
}

// FuzzDecrypt gives Decrypt arbitrary messages, as they come (so nearly all
// fail the signature) and re-signed with the chain's key (so that the
// iteration, jump and ciphertext handling see arbitrary values), and checks
// that every failure is typed and leaves the Record unchanged.
func FuzzDecrypt(f *testing.F) {
	s := newSender(f)
	r := s.receiver(f)
	f.Add(s.send(f, "seed"))
	f.Add(s.send(f, ""))
	st := s.rec.states[0]
	f.Fuzz(func(t *testing.T, b []byte) {
		rec := *r
		before := marshal(t, &rec)
		for _, msg := range [][]byte{b, resign(b, *st.private)} {
			m, err := ParseMessage(msg)
			if err != nil {
				parseError(t, err)
				continue
			}
			pt, err := rec.Decrypt(m)
			if err == nil {
				if m.ChainID != st.chainID || len(pt) >= len(m.Ciphertext) {
					t.Fatalf("decrypted %d bytes on chain %d", len(pt), m.ChainID)
				}
				rec = *r
				continue
			}
			if !slices.ContainsFunc([]error{ErrNoSenderKey, ErrInvalidSignature, ErrDuplicateMessage, ErrTooFarInFuture, ErrInvalidMessage, ErrChainExhausted},
				func(want error) bool { return errors.Is(err, want) }) {
				t.Fatalf("untyped error %v", err)
			}
			if !bytes.Equal(before, marshal(t, &rec)) {
				t.Fatalf("failed Decrypt (%v) changed the Record", err)
			}
		}
	})
}

// resign replaces the signature of b (if it is long enough to have one).
func resign(b []byte, key curve.PrivateKey) []byte {
	if len(b) < minMessageSize {
		return b
	}
	body := bytes.Clone(b[:len(b)-SignatureSize])
	sig := xeddsa.Sign(key, body, [64]byte{})
	return append(body, sig[:]...)
}
