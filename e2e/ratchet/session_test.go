package ratchet

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	mrand "math/rand/v2"
	"testing"
	"time"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"

	"github.com/magpie-im/magpie/e2e/curve"
)

// The chain-key test vector of libsignal v0.90.0
// rust/protocol/src/ratchet/keys.rs:222-267 (facts: input and outputs).
func TestChainKeyVector(t *testing.T) {
	h := func(s string) (out [32]byte) {
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != 32 {
			t.Fatal("bad hex")
		}
		copy(out[:], b)
		return out
	}
	seed := h("8ab72d6f4cc5ac0d387eaf463378ddb28edd07385b1cb01250c715982e7ad48f")
	k := deriveMessageKeys(messageKeySeed(seed))
	if k.cipherKey != h("bf51e9d75e0e31031051f82a2491ffc084fa298b7793bd9db620056febf45217") {
		t.Errorf("cipher key %x", k.cipherKey)
	}
	if k.macKey != h("c6c77d6a73a354337a56435e34607dfe48e3ace14e77314dc6abc172e7a7030b") {
		t.Errorf("mac key %x", k.macKey)
	}
	if nextChainKey(seed) != h("28e8f8fee54b801eef7c5cfb2f17f32c7b334485bbb70fac6ec10342a246d15d") {
		t.Errorf("next chain key %x", nextChainKey(seed))
	}
}

func TestSessionBothWays(t *testing.T) {
	for _, oneTime := range []bool{true, false} {
		name := "no-one-time-prekey"
		if oneTime {
			name = "one-time-prekey"
		}
		t.Run(name, func(t *testing.T) {
			p := newPair(t, oneTime)
			// Alice sends three PreKeySignalMessages before any reply.
			var first []sealed
			for i := range 3 {
				m := encrypt(t, p.a, &p.aRec, msg(i))
				if m.typ != PreKeyMessage {
					t.Fatalf("message %d before a reply is %v, want prekey", i, m.typ)
				}
				first = append(first, m)
			}
			used := decrypt(t, p.b, &p.bRec, first[0])
			if !used.NewSession || used.SignedPreKeyID != 200 || used.KyberPreKeyID != 201 {
				t.Fatalf("used = %+v", used)
			}
			if oneTime != (used.PreKeyID != nil) || (oneTime && *used.PreKeyID != 202) {
				t.Fatalf("used one-time pre-key = %v, want %v", used.PreKeyID, oneTime)
			}
			if used.BaseKey != p.aRec.current.aliceBaseKey {
				t.Fatal("used.BaseKey is not Alice's base key")
			}
			// Later PreKeySignalMessages of the same session use no pre-key.
			if used := decrypt(t, p.b, &p.bRec, first[2]); used.NewSession {
				t.Fatal("second PreKeySignalMessage made a new session")
			}
			if id, ok := p.bRec.RemoteIdentity(); !ok || id != p.a.identity.Public {
				t.Fatal("Bob's RemoteIdentity is not Alice's")
			}
			if id, ok := p.aRec.RemoteIdentity(); !ok || id != p.b.identity.Public {
				t.Fatal("Alice's RemoteIdentity is not Bob's")
			}
			if reg, _ := p.bRec.RemoteRegistrationID(); reg != p.a.regID {
				t.Fatalf("Bob sees registration id %d", reg)
			}
			reply := encrypt(t, p.b, &p.bRec, "reply")
			if reply.typ != WhisperMessage {
				t.Fatalf("Bob's reply is %v", reply.typ)
			}
			decrypt(t, p.a, &p.aRec, reply)
			m := encrypt(t, p.a, &p.aRec, "after reply")
			if m.typ != WhisperMessage {
				t.Fatalf("Alice's message after a reply is %v, want whisper", m.typ)
			}
			decrypt(t, p.b, &p.bRec, m)
			decrypt(t, p.b, &p.bRec, first[1]) // late, from the first chain
		})
	}
	t.Run("reverse", func(t *testing.T) {
		// Bob starts a session to Alice, who already has none.
		p := newPair(t, true)
		if err := p.bRec.InitiateFromBundle(p.b.identity, p.b.regID, p.a.bundle, rand.Reader); err != nil {
			t.Fatal(err)
		}
		var aFromB Record
		m := encrypt(t, p.b, &p.bRec, "hello alice")
		decrypt(t, p.a, &aFromB, m)
		decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &aFromB, "hello bob"))
		decrypt(t, p.a, &aFromB, encrypt(t, p.b, &p.bRec, "again"))
	})
}

func TestManyRatchetSteps(t *testing.T) {
	p := newPair(t, true)
	decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &p.aRec, "hi"))
	r := mrand.New(mrand.NewPCG(1, 2))
	for round := range 50 {
		for i := range 1 + r.IntN(4) {
			decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &p.aRec, msg(round*10+i)))
		}
		for i := range 1 + r.IntN(4) {
			decrypt(t, p.a, &p.aRec, encrypt(t, p.b, &p.bRec, msg(round*10+i)))
		}
	}
	if got := len(p.aRec.current.receivers); got != MaxReceiverChains {
		t.Fatalf("Alice keeps %d receiver chains, want %d", got, MaxReceiverChains)
	}
}

func TestOutOfOrderAcrossRatchetSteps(t *testing.T) {
	p := newPair(t, false)
	var chain1, chain2, chain3 []sealed
	for i := range 10 {
		chain1 = append(chain1, encrypt(t, p.a, &p.aRec, msg(i)))
	}
	decrypt(t, p.b, &p.bRec, chain1[4]) // creates the session
	decrypt(t, p.a, &p.aRec, encrypt(t, p.b, &p.bRec, "ack"))
	for i := range 10 {
		chain2 = append(chain2, encrypt(t, p.a, &p.aRec, msg(100+i)))
	}
	decrypt(t, p.b, &p.bRec, chain2[9])
	decrypt(t, p.a, &p.aRec, encrypt(t, p.b, &p.bRec, "ack 2"))
	for i := range 10 {
		chain3 = append(chain3, encrypt(t, p.a, &p.aRec, msg(200+i)))
	}
	// Chain 3 first, backwards; then chains 2 and 1 shuffled together.
	for i := 9; i >= 0; i-- {
		decrypt(t, p.b, &p.bRec, chain3[i])
	}
	var late []sealed
	late = append(late, chain1[:4]...)
	late = append(late, chain1[5:]...)
	late = append(late, chain2[:9]...)
	mrand.New(mrand.NewPCG(3, 4)).Shuffle(len(late), func(i, j int) { late[i], late[j] = late[j], late[i] })
	for _, m := range late {
		decrypt(t, p.b, &p.bRec, m)
	}
	// Everything decrypted once; every replay is a duplicate.
	for _, m := range append(append(late, chain3...), chain1[4], chain2[9]) {
		mustFail(t, p.b, &p.bRec, m.typ, m.ct, ErrDuplicateMessage)
	}
}

func TestTamperedMessagesRejected(t *testing.T) {
	p := newPair(t, true)
	decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &p.aRec, "hi"))
	decrypt(t, p.a, &p.aRec, encrypt(t, p.b, &p.bRec, "hi back"))
	held := []sealed{encrypt(t, p.a, &p.aRec, "held 0"), encrypt(t, p.a, &p.aRec, "held 1")}
	m := encrypt(t, p.a, &p.aRec, "the real one")
	if m.typ != WhisperMessage || m.ct[0] != 0x44 {
		t.Fatalf("type %v, version byte %#x", m.typ, m.ct[0])
	}
	parsed, err := parseSignalMessage(m.ct)
	if err != nil {
		t.Fatal(err)
	}
	ctOffset := bytes.Index(m.ct, parsed.ciphertext)
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(m.ct)) }
	cases := []struct {
		name string
		ct   []byte
		want error
	}{
		{"ciphertext bit", mod(func(b []byte) []byte { b[ctOffset+3] ^= 1; return b }), ErrInvalidMAC},
		{"last ciphertext byte", mod(func(b []byte) []byte { b[len(b)-macLen-1] ^= 0x80; return b }), ErrInvalidMAC},
		{"mac", mod(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrInvalidMAC},
		{"version low nibble", mod(func(b []byte) []byte { b[0] = 0x45; return b }), ErrInvalidMAC},
		{"version 3", mod(func(b []byte) []byte { b[0] = 0x34; return b }), ErrLegacyVersion},
		{"version 2", mod(func(b []byte) []byte { b[0] = 0x22; return b }), ErrLegacyVersion},
		{"version 5", mod(func(b []byte) []byte { b[0] = 0x54; return b }), ErrUnsupportedVersion},
		{"counter", func() []byte {
			body := encodeSignalMessage(4, parsed.ratchetKey, parsed.counter+1, parsed.previousCounter, parsed.ciphertext)
			return append(body, m.ct[len(m.ct)-macLen:]...)
		}(), ErrInvalidMAC},
		{"earlier counter", func() []byte {
			body := encodeSignalMessage(4, parsed.ratchetKey, 0, parsed.previousCounter, parsed.ciphertext)
			return append(body, m.ct[len(m.ct)-macLen:]...)
		}(), ErrInvalidMAC},
		{"truncated", m.ct[:len(m.ct)-3], ErrInvalidMessage},
		{"too short", m.ct[:5], ErrInvalidMessage},
		{"empty", nil, ErrInvalidMessage},
		{"appended byte", append(bytes.Clone(m.ct), 0), ErrInvalidMessage},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mustFail(t, p.b, &p.bRec, WhisperMessage, c.ct, c.want)
		})
	}
	// As a PreKeySignalMessage it does not parse.
	mustFail(t, p.b, &p.bRec, PreKeyMessage, m.ct, ErrInvalidMessage)
	mustFail(t, p.b, &p.bRec, MessageType(7), m.ct, ErrInvalidMessage)
	// The session survived all of it.
	decrypt(t, p.b, &p.bRec, m)
	mustFail(t, p.b, &p.bRec, m.typ, m.ct, ErrDuplicateMessage)
	decrypt(t, p.b, &p.bRec, held[1])
	decrypt(t, p.b, &p.bRec, held[0])
	decrypt(t, p.a, &p.aRec, encrypt(t, p.b, &p.bRec, "still here"))
}

func TestTamperedPreKeyMessageRejected(t *testing.T) {
	p := newPair(t, true)
	m := encrypt(t, p.a, &p.aRec, "first")
	pk, err := parsePreKeySignalMessage(m.ct)
	if err != nil {
		t.Fatal(err)
	}
	re := func(f func(q *preKeySignalMessage)) []byte {
		q := *pk
		f(&q)
		return encodePreKeySignalMessage(q.version, q.registrationID, q.preKeyID, q.signedPreKeyID, q.kyberPreKeyID, q.kyberCiphertext, q.baseKey, q.identityKey, q.message.serialized)
	}
	if !bytes.Equal(re(func(*preKeySignalMessage) {}), m.ct) {
		t.Fatal("re-encoding a parsed PreKeySignalMessage changed it")
	}
	otherID := mustKeyPair(t)
	badCT := bytes.Clone(pk.kyberCiphertext)
	badCT[100] ^= 1
	unknown := uint32(999)
	cases := []struct {
		name string
		ct   []byte
		want error
	}{
		{"identity key", re(func(q *preKeySignalMessage) { q.identityKey = otherID.Public }), ErrInvalidMAC},
		{"base key", re(func(q *preKeySignalMessage) { q.baseKey = otherID.Public }), ErrInvalidMAC},
		{"kyber ciphertext", re(func(q *preKeySignalMessage) { q.kyberCiphertext = badCT }), nil},
		{"unknown signed pre-key", re(func(q *preKeySignalMessage) { q.signedPreKeyID = 999 }), ErrUnknownPreKey},
		{"unknown kyber pre-key", re(func(q *preKeySignalMessage) { q.kyberPreKeyID = 999 }), ErrUnknownPreKey},
		{"unknown one-time pre-key", re(func(q *preKeySignalMessage) { q.preKeyID = &unknown }), ErrUnknownPreKey},
		{"dropped one-time pre-key", re(func(q *preKeySignalMessage) { q.preKeyID = nil }), ErrInvalidMAC},
		{"inner mac", func() []byte {
			inner := bytes.Clone(pk.message.serialized)
			inner[len(inner)-1] ^= 1
			return re(func(q *preKeySignalMessage) { q.message = &signalMessage{serialized: inner} })
		}(), ErrInvalidMAC},
		{"version 3", func() []byte { b := bytes.Clone(m.ct); b[0] = 0x33; return b }(), ErrLegacyVersion},
		{"version 5", func() []byte { b := bytes.Clone(m.ct); b[0] = 0x54; return b }(), ErrUnsupportedVersion},
		{"low-order base key", re(func(q *preKeySignalMessage) { q.baseKey = curve.PublicKey{} }), ErrInvalidMessage},
		{"truncated", m.ct[:len(m.ct)-1], ErrInvalidMessage},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mustFail(t, p.b, &p.bRec, PreKeyMessage, c.ct, c.want)
			if p.bRec.HasCurrentSession() {
				t.Fatal("a failed PreKeySignalMessage left a session")
			}
		})
	}
	decrypt(t, p.b, &p.bRec, m)
}

func TestWrongRecipient(t *testing.T) {
	p := newPair(t, true)
	m := encrypt(t, p.a, &p.aRec, "for bob only")
	// Carol with her own pre-keys, under other ids: unknown pre-key.
	carol := newDevice(t, "carol", 3333, 300, true)
	var cRec Record
	mustFail(t, carol, &cRec, m.typ, m.ct, ErrUnknownPreKey)
	// Carol with pre-keys under the same ids as Bob's: the keys differ.
	carol2 := newDevice(t, "carol2", 3334, 200, true)
	mustFail(t, carol2, &cRec, m.typ, m.ct, ErrInvalidMAC)
	// Carol holding Bob's pre-keys but her own identity: the MAC binds
	// the receiver's identity (and DH2 uses it).
	bobKeysCarolID := *p.b
	bobKeysCarolID.identity = carol.identity
	mustFail(t, &bobKeysCarolID, &cRec, m.typ, m.ct, ErrInvalidMAC)
	// A whisper message of the Alice-Bob session, given to Carol's
	// session with Alice.
	decrypt(t, p.b, &p.bRec, m)
	decrypt(t, p.a, &p.aRec, encrypt(t, p.b, &p.bRec, "ack"))
	var aToC, cFromA Record
	if err := aToC.InitiateFromBundle(p.a.identity, p.a.regID, carol.bundle, rand.Reader); err != nil {
		t.Fatal(err)
	}
	decrypt(t, carol, &cFromA, encrypt(t, p.a, &aToC, "hi carol"))
	w := encrypt(t, p.a, &p.aRec, "for bob again")
	mustFail(t, carol, &cFromA, w.typ, w.ct, ErrInvalidMAC)
	decrypt(t, p.b, &p.bRec, w)
	// Without any session at all.
	var empty Record
	mustFail(t, carol, &empty, w.typ, w.ct, ErrNoSession)
	if _, _, err := empty.Encrypt(carol.identity, []byte("x"), rand.Reader); !errors.Is(err, ErrNoSession) {
		t.Fatalf("Encrypt without session: %v", err)
	}
	// Encrypt under the wrong local identity.
	if _, _, err := p.aRec.Encrypt(carol.identity, []byte("x"), rand.Reader); !errors.Is(err, ErrNoSession) {
		t.Fatalf("Encrypt with another identity: %v", err)
	}
}

// A PreKeySignalMessage replayed after the session is established is
// decrypted in that session (found by base key), so it is a duplicate, and
// no pre-key is looked up again (session.rs:94-100).
func TestPreKeyReplayAfterEstablished(t *testing.T) {
	p := newPair(t, true)
	m0 := encrypt(t, p.a, &p.aRec, "m0")
	m1 := encrypt(t, p.a, &p.aRec, "m1")
	decrypt(t, p.b, &p.bRec, m0)
	delete(p.b.oneTime, 202) // the caller deletes the used one-time pre-key
	decrypt(t, p.a, &p.aRec, encrypt(t, p.b, &p.bRec, "ack"))
	for range 3 {
		decrypt(t, p.a, &p.aRec, encrypt(t, p.b, &p.bRec, "more"))
		decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &p.aRec, "more"))
	}
	mustFail(t, p.b, &p.bRec, m0.typ, m0.ct, ErrDuplicateMessage)
	// The other early message still decrypts, creating nothing.
	if used := decrypt(t, p.b, &p.bRec, m1); used.NewSession {
		t.Fatal("late PreKeySignalMessage made a new session")
	}
	mustFail(t, p.b, &p.bRec, m1.typ, m1.ct, ErrDuplicateMessage)
	decrypt(t, p.a, &p.aRec, encrypt(t, p.b, &p.bRec, "fine"))
}

// A new session replaces the current one; late messages of the old one
// still decrypt from the archive, which makes it current again, as in
// libsignal (session_cipher.rs:513-553).
func TestArchivedSessions(t *testing.T) {
	p := newPair(t, true)
	decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &p.aRec, "old session"))
	decrypt(t, p.a, &p.aRec, encrypt(t, p.b, &p.bRec, "ack"))
	lateOld := encrypt(t, p.a, &p.aRec, "late from the old session")

	// Alice loses her state and starts over from a new bundle.
	p.b.publish(t, 500, true)
	var aNew Record
	if err := aNew.InitiateFromBundle(p.a.identity, p.a.regID, p.b.bundle, rand.Reader); err != nil {
		t.Fatal(err)
	}
	first := encrypt(t, p.a, &aNew, "new session")
	if used := decrypt(t, p.b, &p.bRec, first); !used.NewSession {
		t.Fatal("no new session")
	}
	if len(p.bRec.previous) != 1 {
		t.Fatalf("%d archived states, want 1", len(p.bRec.previous))
	}
	decrypt(t, p.b, &p.bRec, lateOld)
	if p.bRec.current.aliceBaseKey == aNew.current.aliceBaseKey {
		t.Fatal("the old session was not promoted")
	}
	// The new session's PreKeySignalMessages bring it back.
	decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &aNew, "new again"))
	decrypt(t, p.a, &aNew, encrypt(t, p.b, &p.bRec, "reply in the new session"))

	// The archive is bounded.
	for i := range ArchivedStatesMax + 5 {
		p.b.publish(t, uint32(1000+10*i), false)
		var a Record
		if err := a.InitiateFromBundle(p.a.identity, p.a.regID, p.b.bundle, rand.Reader); err != nil {
			t.Fatal(err)
		}
		decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &a, "x"))
	}
	if len(p.bRec.previous) != ArchivedStatesMax {
		t.Fatalf("%d archived states, want %d", len(p.bRec.previous), ArchivedStatesMax)
	}
	for _, s := range p.bRec.previous {
		if s.pending != nil {
			t.Fatal("archived state keeps a pending pre-key message")
		}
	}
	p.bRec.ArchiveCurrentState()
	if p.bRec.HasCurrentSession() {
		t.Fatal("ArchiveCurrentState left a current session")
	}
}

// advance moves the sending chain of rec's current state forward by n
// without sending, as if n messages were lost.
func advance(rec *Record, n int) {
	s := rec.current.clone()
	for range n {
		s.senderChainKey = nextChainKey(s.senderChainKey)
		s.senderIndex++
	}
	rec.current = s
}

func TestForwardJumpAndSkippedKeyLimits(t *testing.T) {
	p := newPair(t, false)
	decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &p.aRec, "hi"))
	decrypt(t, p.a, &p.aRec, encrypt(t, p.b, &p.bRec, "ack"))

	// Counter 1 + MaxForwardJumps + 1 when Bob's chain expects 1.
	far := p.aRec
	advance(&far, MaxForwardJumps+1)
	m := encrypt(t, p.a, &far, "too far")
	mustFail(t, p.b, &p.bRec, m.typ, m.ct, ErrTooFarInFuture)

	// Exactly MaxForwardJumps is allowed; only MaxMessageKeys are kept.
	var skipped []sealed
	for i := range 3 {
		skipped = append(skipped, encrypt(t, p.a, &p.aRec, msg(i)))
	}
	advance(&p.aRec, MaxForwardJumps-3)
	decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &p.aRec, "just in range"))
	if n := len(p.bRec.current.receivers[len(p.bRec.current.receivers)-1].skipped); n != MaxMessageKeys {
		t.Fatalf("%d skipped keys kept, want %d", n, MaxMessageKeys)
	}
	// The oldest skipped keys were dropped: libsignal reports those as
	// duplicates.
	mustFail(t, p.b, &p.bRec, skipped[0].typ, skipped[0].ct, ErrDuplicateMessage)
	decrypt(t, p.a, &p.aRec, encrypt(t, p.b, &p.bRec, "still fine"))
}

func TestSessionWithSelfHasNoJumpLimit(t *testing.T) {
	a := newDevice(t, "self", 1, 100, true)
	var out, in Record
	if err := out.InitiateFromBundle(a.identity, a.regID, a.bundle, rand.Reader); err != nil {
		t.Fatal(err)
	}
	decrypt(t, a, &in, encrypt(t, a, &out, "note to self"))
	advance(&out, MaxForwardJumps+10)
	decrypt(t, a, &in, encrypt(t, a, &out, "far ahead"))
}

func TestBundleSignatures(t *testing.T) {
	a := newDevice(t, "alice", 1, 100, true)
	b := newDevice(t, "bob", 2, 200, true)
	var rec Record
	bad := b.bundle
	bad.SignedPreKeySig[5] ^= 1
	if err := rec.InitiateFromBundle(a.identity, a.regID, bad, rand.Reader); !errors.Is(err, ErrInvalidSignature) {
		t.Fatalf("bad signed pre-key signature: %v", err)
	}
	bad = b.bundle
	bad.KyberPreKeySig[5] ^= 1
	if err := rec.InitiateFromBundle(a.identity, a.regID, bad, rand.Reader); !errors.Is(err, ErrInvalidSignature) {
		t.Fatalf("bad Kyber pre-key signature: %v", err)
	}
	bad = b.bundle
	bad.IdentityKey = a.identity.Public
	if err := rec.InitiateFromBundle(a.identity, a.regID, bad, rand.Reader); !errors.Is(err, ErrInvalidSignature) {
		t.Fatalf("signatures by another identity: %v", err)
	}
	bad = b.bundle
	bad.KyberPreKey = nil
	if err := rec.InitiateFromBundle(a.identity, a.regID, bad, rand.Reader); !errors.Is(err, ErrInvalidBundle) {
		t.Fatalf("no Kyber pre-key: %v", err)
	}
	bad = b.bundle
	bad.PreKey = nil
	if err := rec.InitiateFromBundle(a.identity, a.regID, bad, rand.Reader); !errors.Is(err, ErrInvalidBundle) {
		t.Fatalf("pre-key id without key: %v", err)
	}
	if rec.HasCurrentSession() {
		t.Fatal("a refused bundle made a session")
	}
}

func TestRecordRoundTrip(t *testing.T) {
	p := newPair(t, true)
	early := encrypt(t, p.a, &p.aRec, "early")
	// Alice's record while unacknowledged (pending pre-key message).
	roundTrip(t, &p.aRec)
	decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &p.aRec, "second"))
	var held []sealed
	for i := range 5 {
		m := encrypt(t, p.a, &p.aRec, msg(i))
		if i%2 == 0 {
			held = append(held, m)
		} else {
			decrypt(t, p.b, &p.bRec, m)
		}
	}
	decrypt(t, p.a, &p.aRec, encrypt(t, p.b, &p.bRec, "ack"))
	// An archived state too.
	p.bRec.ArchiveCurrentState()
	roundTrip(t, &p.aRec)
	roundTrip(t, &p.bRec)
	for _, m := range append(held, early) {
		decrypt(t, p.b, &p.bRec, m)
	}
	decrypt(t, p.a, &p.aRec, encrypt(t, p.b, &p.bRec, "after reload"))
	decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &p.aRec, "and back"))

	var empty Record
	roundTrip(t, &empty)
	for _, bad := range [][]byte{nil, []byte("MGSR"), []byte("XXXX\x01\x00\x00"), []byte("MGSR\x02\x00\x00"), []byte("MGSR\x01\x00\x00\x00")} {
		if err := empty.UnmarshalBinary(bad); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("UnmarshalBinary(%q) = %v", bad, err)
		}
	}
}

func roundTrip(t *testing.T, rec *Record) {
	t.Helper()
	b, err := rec.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var n Record
	if err := n.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	b2, _ := n.MarshalBinary()
	if !bytes.Equal(b, b2) {
		t.Fatal("Marshal(Unmarshal(b)) != b")
	}
	*rec = n
}

func TestCanonicalBaseKey(t *testing.T) {
	for range 50 {
		if kp := mustKeyPair(t); !isCanonical(kp.Public) {
			t.Fatalf("generated key %x is not canonical", kp.Public)
		}
	}
	le := func(s string) (k curve.PublicKey) {
		b, _ := hex.DecodeString(s)
		copy(k[:], b)
		return k
	}
	// Low-order points (RFC 7748 and Curve25519 small-subgroup lists),
	// u >= p, and a point on the twist.
	bad := []curve.PublicKey{
		le("0000000000000000000000000000000000000000000000000000000000000000"),
		le("0100000000000000000000000000000000000000000000000000000000000000"),
		le("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
		le("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
		le("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
		le("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
		le("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
		le("0900000000000000000000000000000000000000000000000000000000000080"),
		le("0200000000000000000000000000000000000000000000000000000000000000"), // u=2 is on the twist
	}
	for i, k := range bad {
		if isCanonical(k) {
			t.Errorf("bad key %d (%x) accepted", i, k)
		}
	}
	// A valid key plus a point of order 8: on the curve, not torsion-free.
	for range 10 {
		if mixed := addTorsion(t, mustKeyPair(t).Public); isCanonical(mixed) {
			t.Fatalf("key with a torsion component (%x) accepted", mixed)
		}
	}
	if !isCanonical(le("0900000000000000000000000000000000000000000000000000000000000000")) {
		t.Error("the base point is not canonical")
	}
}

// addTorsion returns the u-coordinate of P + T, where P is the Edwards
// point of u (sign 0) and T a point of order 8.
func addTorsion(t *testing.T, u curve.PublicKey) curve.PublicKey {
	t.Helper()
	fe := func(b []byte) *field.Element {
		e, err := new(field.Element).SetBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	one := new(field.Element).One()
	uu := fe(u[:])
	y := new(field.Element).Multiply(new(field.Element).Subtract(uu, one), new(field.Element).Invert(new(field.Element).Add(uu, one)))
	p, err := new(edwards25519.Point).SetBytes(y.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	// An Edwards point of order 8 (y encoding from the small-order list).
	tb, _ := hex.DecodeString("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
	tor, err := new(edwards25519.Point).SetBytes(tb)
	if err != nil {
		t.Fatal(err)
	}
	q := new(edwards25519.Point).Add(p, tor)
	// u = (1+y)/(1-y); BytesMontgomery does exactly this.
	var out curve.PublicKey
	copy(out[:], q.BytesMontgomery())
	return out
}

func TestUnacknowledgedSessionExpires(t *testing.T) {
	p := newPair(t, true)
	encrypt(t, p.a, &p.aRec, "fresh")
	s := p.aRec.current.clone()
	pend := *s.pending
	pend.created = time.Now().Add(-maxUnacknowledgedAge - time.Hour).Unix()
	s.pending = &pend
	p.aRec.current = s
	if _, _, err := p.aRec.Encrypt(p.a.identity, []byte("stale"), rand.Reader); !errors.Is(err, ErrNoSession) {
		t.Fatalf("Encrypt on a stale unacknowledged session: %v", err)
	}
}

// The age limit is libsignal's 30 days (consts.rs:25), written out here
// rather than taken from maxUnacknowledgedAge: a session a day short of it
// still sends PreKeySignalMessages, one a day past it does not. The day
// either side is the margin for the clock read between setting the age and
// Encrypt.
func TestUnacknowledgedSessionSendsForThirtyDays(t *testing.T) {
	const day = 24 * time.Hour
	for _, c := range []struct {
		age   time.Duration
		sends bool
	}{{29 * day, true}, {31 * day, false}} {
		p := newPair(t, true)
		s := p.aRec.current.clone()
		pend := *s.pending
		pend.created = time.Now().Add(-c.age).Unix()
		s.pending = &pend
		p.aRec.current = s
		typ, ct, err := p.aRec.Encrypt(p.a.identity, []byte("late"), rand.Reader)
		if !c.sends {
			if !errors.Is(err, ErrNoSession) {
				t.Errorf("Encrypt on an unacknowledged session %v old: %v, want ErrNoSession", c.age, err)
			}
			continue
		}
		if err != nil || typ != PreKeyMessage {
			t.Fatalf("Encrypt on an unacknowledged session %v old: %v, %v", c.age, typ, err)
		}
		decrypt(t, p.b, &p.bRec, sealed{typ, ct, []byte("late")})
	}
}

// The skipped-key cap counts the keys already kept: a jump onto a chain
// that holds skipped keys keeps the newest MaxMessageKeys of old and new
// together, dropping the oldest, and the keys it keeps still decrypt.
func TestSkippedKeyLimitCountsKeysAlreadyKept(t *testing.T) {
	p := newPair(t, false)
	decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &p.aRec, "hi"))
	decrypt(t, p.a, &p.aRec, encrypt(t, p.b, &p.bRec, "ack"))
	const first, jump = 1500, 1000
	var held []sealed
	for i := range first {
		held = append(held, encrypt(t, p.a, &p.aRec, msg(i)))
	}
	decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &p.aRec, "after 1,500 lost"))
	skipped := func() int {
		r := p.bRec.current.receivers
		return len(r[len(r)-1].skipped)
	}
	if n := skipped(); n != first {
		t.Fatalf("%d skipped keys kept, want %d", n, first)
	}
	advance(&p.aRec, jump) // counters first+1 … first+jump are lost too
	decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &p.aRec, "after 1,000 more"))
	if n := skipped(); n != MaxMessageKeys {
		t.Fatalf("%d skipped keys kept after a jump of %d onto %d, want %d", n, jump, first, MaxMessageKeys)
	}
	dropped := first + jump - MaxMessageKeys
	mustFail(t, p.b, &p.bRec, held[dropped-1].typ, held[dropped-1].ct, ErrDuplicateMessage)
	decrypt(t, p.b, &p.bRec, held[dropped])
	decrypt(t, p.b, &p.bRec, held[first-1])
}

// Archiving an unacknowledged session drops its pending pre-key message
// (libsignal state/session.rs:754-766 does the same): an archived state is
// never sent on again, and the record should not keep the Kyber
// ciphertext and pre-key ids around. The state shared with an earlier copy
// of the Record is left as it was, which is what keeps Decrypt
// transactional.
func TestArchivingDropsThePendingPreKeyMessage(t *testing.T) {
	p := newPair(t, true)
	before := p.aRec
	p.aRec.ArchiveCurrentState()
	if len(p.aRec.previous) != 1 || p.aRec.previous[0].pending != nil {
		t.Fatal("the archived state keeps its pending pre-key message")
	}
	if before.current.pending == nil {
		t.Fatal("archiving modified the state held by an earlier copy of the Record")
	}
	roundTrip(t, &p.aRec)
	if p.aRec.previous[0].pending != nil {
		t.Fatal("the archived state has a pending pre-key message after a round trip")
	}
	// The unarchived copy still sends PreKeySignalMessages, and its
	// session works.
	m := encrypt(t, p.a, &before, "from the copy")
	if m.typ != PreKeyMessage {
		t.Fatalf("the unarchived session sends %v, want prekey", m.typ)
	}
	decrypt(t, p.b, &p.bRec, m)
}

// With no current session, a WhisperMessage is tried against the archived
// states only: one that none of them can decrypt is refused (not taken as
// an empty plaintext) and leaves the record unchanged; a genuine one
// decrypts and makes its state current.
func TestArchivedOnlyRecordRefusesForgedMessage(t *testing.T) {
	p := newPair(t, true)
	decrypt(t, p.b, &p.bRec, encrypt(t, p.a, &p.aRec, "hi"))
	decrypt(t, p.a, &p.aRec, encrypt(t, p.b, &p.bRec, "ack"))
	m := encrypt(t, p.a, &p.aRec, "after archiving")
	p.bRec.ArchiveCurrentState()
	forged := bytes.Clone(m.ct)
	forged[len(forged)-1] ^= 1
	mustFail(t, p.b, &p.bRec, m.typ, forged, ErrInvalidMAC)
	// A second archived state, which cannot decrypt it either.
	carol := newDevice(t, "carol", 3333, 300, true)
	var cRec Record
	if err := cRec.InitiateFromBundle(carol.identity, carol.regID, p.b.bundle, rand.Reader); err != nil {
		t.Fatal(err)
	}
	decrypt(t, p.b, &p.bRec, encrypt(t, carol, &cRec, "another session"))
	p.bRec.ArchiveCurrentState()
	mustFail(t, p.b, &p.bRec, m.typ, forged, ErrInvalidMAC)
	decrypt(t, p.b, &p.bRec, m)
	if !p.bRec.HasCurrentSession() {
		t.Fatal("the archived state that decrypted was not made current")
	}
}
