package ratchet_test

// Interop with Signal's own library: sessions between Magpie (this package)
// and libsignal-client 0.90.0, driven through internal/libsignaloracle. The
// tests skip when the oracle's node_modules is missing, and fail instead
// when MAGPIE_REQUIRE_ORACLE=1 (as in CI):
//
//	npm ci --prefix interop/libsignal

import (
	"bytes"
	"crypto/rand"
	"encoding"
	"errors"
	"fmt"
	"testing"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/fingerprint"
	"github.com/magpie-im/magpie/e2e/kem"
	"github.com/magpie-im/magpie/e2e/ratchet"
	"github.com/magpie-im/magpie/e2e/xeddsa"
	"github.com/magpie-im/magpie/internal/libsignaloracle"
)

// side is one end of a conversation.
type side interface {
	String() string
	send(t *testing.T, text string) (typ int, body []byte)
	recv(t *testing.T, typ int, body []byte) ([]byte, error)
	// isDuplicate and isBadMAC tell whether err is this side's error for a
	// replayed message and for a tampered one.
	isDuplicate(err error) bool
	isRejected(err error) bool
}

// magpieSide is a Magpie device: an identity and one session Record.
type magpieSide struct {
	id    ratchet.IdentityKeyPair
	regID uint32
	rec   *ratchet.Record
	keys  *preKeys
	used  []ratchet.UsedPreKeys // from every PreKey message it decrypted
}

func (m *magpieSide) String() string { return "Magpie" }

func (m *magpieSide) send(t *testing.T, text string) (int, []byte) {
	t.Helper()
	typ, body, err := m.rec.Encrypt(m.id, []byte(text), rand.Reader)
	if err != nil {
		t.Fatalf("Magpie encrypting %q: %v", text, err)
	}
	m.persist(t)
	return int(typ), body
}

func (m *magpieSide) recv(t *testing.T, typ int, body []byte) ([]byte, error) {
	t.Helper()
	pt, used, err := m.rec.Decrypt(m.id, m.regID, m.keys, ratchet.MessageType(typ), body)
	if err != nil {
		return nil, err
	}
	if typ == libsignaloracle.TypePreKey {
		m.used = append(m.used, used)
	}
	m.persist(t)
	return pt, nil
}

// persist round-trips the Record through its storage encoding, when the
// package has one, so every step also proves that what is stored resumes.
func (m *magpieSide) persist(t *testing.T) {
	t.Helper()
	enc, ok := any(m.rec).(encoding.BinaryMarshaler)
	if !ok {
		return
	}
	data, err := enc.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	fresh := new(ratchet.Record)
	if err := any(fresh).(encoding.BinaryUnmarshaler).UnmarshalBinary(data); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	m.rec = fresh
}

func (m *magpieSide) isDuplicate(err error) bool { return errors.Is(err, ratchet.ErrDuplicateMessage) }
func (m *magpieSide) isRejected(err error) bool {
	return errors.Is(err, ratchet.ErrInvalidMAC) || errors.Is(err, ratchet.ErrInvalidMessage)
}

// oracleSide is a libsignal party in the harness, talking to one peer.
type oracleSide struct {
	o    *libsignaloracle.Oracle
	name string
	peer libsignaloracle.Address
	// whisperPQ records the pq_ratchet length of each SignalMessage it
	// sent (SPQR, which Magpie does not speak).
	whisperPQ []int
}

func (s *oracleSide) String() string { return "libsignal" }

func (s *oracleSide) send(t *testing.T, text string) (int, []byte) {
	t.Helper()
	m := s.o.Encrypt(s.name, s.peer, []byte(text))
	if m.Type == libsignaloracle.TypeWhisper {
		info, err := s.o.Inspect(m)
		if err != nil {
			t.Fatal(err)
		}
		s.whisperPQ = append(s.whisperPQ, info.PQRatchetLen)
	}
	return m.Type, m.Body
}

func (s *oracleSide) recv(t *testing.T, typ int, body []byte) ([]byte, error) {
	t.Helper()
	return s.o.Decrypt(s.name, s.peer, libsignaloracle.Message{Type: typ, Body: body})
}

func (s *oracleSide) isDuplicate(err error) bool { return kind(err) == "DuplicatedMessage" }
func (s *oracleSide) isRejected(err error) bool  { return err != nil }

func kind(err error) string {
	var e *libsignaloracle.Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return ""
}

// converse runs a conversation that init started (so its first messages
// are PreKey messages) with resp: out-of-order first messages, several
// ratchet steps each way with late delivery, then a replay and a tampered
// message that both sides must refuse.
func converse(t *testing.T, init, resp side) {
	t.Helper()
	deliver := func(from, to side, typ int, body []byte, want string) {
		t.Helper()
		got, err := to.recv(t, typ, body)
		if err != nil {
			t.Fatalf("%s decrypting %q from %s: %v", to, want, from, err)
		}
		if string(got) != want {
			t.Fatalf("%s decrypted %q from %s, want %q", to, got, from, want)
		}
	}
	type held struct {
		typ  int
		body []byte
		text string
	}

	// The first messages, before any reply, are PreKey messages; they
	// arrive in reverse order.
	var first []held
	for i := range 3 {
		text := fmt.Sprintf("init-%d", i)
		typ, body := init.send(t, text)
		if typ != libsignaloracle.TypePreKey {
			t.Fatalf("%s's message %d before any reply has type %d, want PreKey (3)", init, i, typ)
		}
		first = append(first, held{typ, body, text})
	}
	deliver(init, resp, first[2].typ, first[2].body, first[2].text)
	deliver(init, resp, first[0].typ, first[0].body, first[0].text)

	// Ratchet steps: each side sends three, the middle one held back. Each
	// step adds a receiving chain on both sides; with four steps, the
	// first chain (that of the PreKey messages) is still among the
	// MaxReceiverChains (5) kept, so the held-back PreKey message below
	// still decrypts.
	late := map[side][]held{}
	for step := range ratchet.MaxReceiverChains - 1 {
		for _, dir := range [][2]side{{resp, init}, {init, resp}} {
			from, to := dir[0], dir[1]
			for i := range 3 {
				text := fmt.Sprintf("%s step %d msg %d", from, step, i)
				typ, body := from.send(t, text)
				if typ != libsignaloracle.TypeWhisper {
					t.Fatalf("%s's message after a reply has type %d, want Whisper (2)", from, typ)
				}
				if i == 1 {
					late[to] = append(late[to], held{typ, body, text})
					continue
				}
				deliver(from, to, typ, body, text)
			}
		}
	}
	// The held-back messages, newest first; and the PreKey message that
	// arrives after the session has moved on.
	for _, to := range []side{init, resp} {
		from := init
		if to == init {
			from = resp
		}
		hs := late[to]
		for i := len(hs) - 1; i >= 0; i-- {
			deliver(from, to, hs[i].typ, hs[i].body, hs[i].text)
		}
	}
	deliver(init, resp, first[1].typ, first[1].body, first[1].text)

	// Replays are refused as duplicates, on both sides.
	if _, err := resp.recv(t, first[1].typ, first[1].body); !resp.isDuplicate(err) {
		t.Fatalf("%s given a replayed PreKey message: %v, want its duplicate error", resp, err)
	}
	for _, pair := range [][2]side{{init, resp}, {resp, init}} {
		from, to := pair[0], pair[1]
		typ, body := from.send(t, "once")
		deliver(from, to, typ, body, "once")
		if _, err := to.recv(t, typ, body); !to.isDuplicate(err) {
			t.Fatalf("%s given a replay from %s: %v, want its duplicate error", to, from, err)
		}
		// A flipped bit in the AES-CBC ciphertext, or in the MAC, is refused.
		for _, off := range []int{len(body) - 8 - 5, len(body) - 1} {
			typ, body := from.send(t, "tampered")
			bad := bytes.Clone(body)
			bad[off] ^= 0x01
			if pt, err := to.recv(t, typ, bad); !to.isRejected(err) {
				t.Fatalf("%s given a tampered message from %s: %q, %v", to, from, pt, err)
			}
			// The session survives the bad message.
			deliver(from, to, typ, body, "tampered")
		}
	}
}

// newMagpie makes a Magpie device with a fresh identity.
func newMagpie(t *testing.T, regID uint32) *magpieSide {
	t.Helper()
	id, err := curve.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &magpieSide{id: id, regID: regID, rec: new(ratchet.Record), keys: newPreKeys()}
}

// bundleFromOracle converts the oracle's serialized bundle to Magpie's.
func bundleFromOracle(t *testing.T, b libsignaloracle.Bundle) ratchet.Bundle {
	t.Helper()
	must := func(k curve.PublicKey, err error) curve.PublicKey {
		t.Helper()
		if err != nil {
			t.Fatalf("Magpie cannot parse libsignal's bundle key: %v", err)
		}
		return k
	}
	kyber, err := kem.ParsePublicKey(b.KyberPreKey)
	if err != nil {
		t.Fatalf("Magpie cannot parse libsignal's Kyber prekey: %v", err)
	}
	out := ratchet.Bundle{
		RegistrationID: b.RegistrationID,
		DeviceID:       b.DeviceID,
		IdentityKey:    must(curve.ParsePublicKey(b.IdentityKey)),
		SignedPreKeyID: b.SignedPreKeyID,
		SignedPreKey:   must(curve.ParsePublicKey(b.SignedPreKey)),
		KyberPreKeyID:  b.KyberPreKeyID,
		KyberPreKey:    kyber,
	}
	copy(out.SignedPreKeySig[:], b.SignedPreKeySignature)
	copy(out.KyberPreKeySig[:], b.KyberPreKeySignature)
	if b.PreKeyID != nil {
		id := *b.PreKeyID
		pk := must(curve.ParsePublicKey(b.PreKey))
		out.PreKeyID, out.PreKey = &id, &pk
	}
	return out
}

// TestInteropMagpieInitiates: Magpie starts a session from libsignal's
// bundle, with and without a one-time prekey, and the two talk.
func TestInteropMagpieInitiates(t *testing.T) {
	for _, oneTime := range []bool{true, false} {
		t.Run(fmt.Sprintf("oneTimePreKey=%v", oneTime), func(t *testing.T) {
			o := libsignaloracle.Start(t)
			bob := o.NewParty("bob", 3, 4242)
			alice := newMagpie(t, 1717)
			aliceAddr := libsignaloracle.Address{Name: "alice", DeviceID: 1}

			ob := o.Bundle(bob.Name, oneTime)
			if err := alice.rec.InitiateFromBundle(alice.id, alice.regID, bundleFromOracle(t, ob), rand.Reader); err != nil {
				t.Fatalf("Magpie refuses libsignal's bundle: %v", err)
			}
			if id, ok := alice.rec.RemoteIdentity(); !ok || !bytes.Equal(id.Serialize(), bob.IdentityKey) {
				t.Fatal("Magpie's session does not name libsignal's identity")
			}

			// The PreKey message header, as libsignal reads it.
			typ, body := alice.send(t, "hello")
			info, err := o.Inspect(libsignaloracle.Message{Type: typ, Body: body})
			if err != nil {
				t.Fatalf("libsignal cannot parse Magpie's PreKey message: %v", err)
			}
			if info.Version != 4 || info.RegistrationID != alice.regID || info.SignedPreKeyID != ob.SignedPreKeyID ||
				(info.PreKeyID == nil) != (ob.PreKeyID == nil) || (info.PreKeyID != nil && *info.PreKeyID != *ob.PreKeyID) {
				t.Fatalf("Magpie's PreKey message header %+v does not match the bundle", info)
			}
			bobSide := &oracleSide{o: o, name: bob.Name, peer: aliceAddr}
			if pt, err := bobSide.recv(t, typ, body); err != nil || string(pt) != "hello" {
				t.Fatalf("libsignal decrypting Magpie's first message: %q, %v", pt, err)
			}
			left, used := o.PreKeyState(bob.Name)
			if len(left) != 0 {
				t.Errorf("libsignal still holds one-time prekeys %v", left)
			}
			if len(used) != 1 || used[0].KyberPreKeyID != ob.KyberPreKeyID || used[0].SignedPreKeyID != ob.SignedPreKeyID {
				t.Errorf("libsignal recorded Kyber uses %v, want one of (%d, %d)", used, ob.KyberPreKeyID, ob.SignedPreKeyID)
			}

			converse(t, alice, bobSide)

			// libsignal offers SPQR until it hears from a peer without it,
			// then sends no pq_ratchet at all: the session runs at SPQR
			// version 0 (classic message keys).
			for i, n := range bobSide.whisperPQ {
				if n != 0 {
					t.Fatalf("libsignal's SignalMessage %d carries a %d-byte pq_ratchet in a session with Magpie", i, n)
				}
			}
			if rid, ok := alice.rec.RemoteRegistrationID(); !ok || rid != bob.RegistrationID {
				t.Errorf("remote registration id %d, %v; want %d", rid, ok, bob.RegistrationID)
			}
			checkSafetyNumber(t, o, alice, bob)
		})
	}
}

// TestInteropLibsignalInitiates: libsignal starts a session from Magpie's
// bundle (so libsignal verifies Magpie's XEdDSA signatures and Magpie
// decapsulates libsignal's Kyber ciphertext), and the two talk.
func TestInteropLibsignalInitiates(t *testing.T) {
	for _, oneTime := range []bool{true, false} {
		t.Run(fmt.Sprintf("oneTimePreKey=%v", oneTime), func(t *testing.T) {
			o := libsignaloracle.Start(t)
			alice := o.NewParty("alice", 2, 9191)
			bob := newMagpie(t, 5151)
			bobAddr := libsignaloracle.Address{Name: "bob", DeviceID: 4}

			b := bob.keys.bundle(t, bob, 4, oneTime)
			if err := o.ProcessBundle(alice.Name, bobAddr, b); err != nil {
				t.Fatalf("libsignal refuses Magpie's bundle: %v", err)
			}
			aliceSide := &oracleSide{o: o, name: alice.Name, peer: bobAddr}
			converse(t, aliceSide, bob)

			// Every PreKey message named the bundle's prekeys; only the
			// first created the session.
			if len(bob.used) == 0 || !bob.used[0].NewSession {
				t.Fatalf("Magpie's first PreKey decrypt reports %+v, want a new session", bob.used)
			}
			u := bob.used[0]
			if u.SignedPreKeyID != b.SignedPreKeyID || u.KyberPreKeyID != b.KyberPreKeyID ||
				(u.PreKeyID == nil) != (b.PreKeyID == nil) || (u.PreKeyID != nil && *u.PreKeyID != *b.PreKeyID) {
				t.Fatalf("Magpie used prekeys %+v, want those of the bundle", u)
			}
			for i, u := range bob.used[1:] {
				if u.NewSession {
					t.Fatalf("PreKey message %d made another new session", i+1)
				}
			}
			// After Magpie's first reply, libsignal drops SPQR: all its
			// SignalMessages (sent after that reply) carry no pq_ratchet.
			for i, n := range aliceSide.whisperPQ {
				if n != 0 {
					t.Fatalf("libsignal's SignalMessage %d carries a %d-byte pq_ratchet after Magpie's reply", i, n)
				}
			}
			if id, ok := bob.rec.RemoteIdentity(); !ok || !bytes.Equal(id.Serialize(), alice.IdentityKey) {
				t.Fatal("Magpie's session does not name libsignal's identity")
			}
			checkSafetyNumber(t, o, bob, alice)
		})
	}
}

// checkSafetyNumber compares the safety number Magpie computes for its
// session with the one libsignal computes from the other side, with the
// Magpie identity imported into libsignal as well.
func checkSafetyNumber(t *testing.T, o *libsignaloracle.Oracle, m *magpieSide, peer libsignaloracle.Party) {
	t.Helper()
	twin := o.NewPartyWithIdentity(peer.Name+"-sees", 9, 9, m.id.Private[:])
	if !bytes.Equal(twin.IdentityKey, m.id.Public.Serialize()) {
		t.Fatal("libsignal derives another public key from Magpie's identity")
	}
	remote, ok := m.rec.RemoteIdentity()
	if !ok {
		t.Fatal("no remote identity")
	}
	mID, pID := []byte("magpie-user"), []byte("libsignal-user")
	ours := fingerprint.Displayable(mID, m.id.Public, pID, remote)
	theirs, theirScan := o.Fingerprint(pID, peer.IdentityKey, mID, twin.IdentityKey)
	if ours != theirs {
		t.Fatalf("safety numbers differ: Magpie %s, libsignal %s", ours, theirs)
	}
	if ok, err := fingerprint.CompareScannable(fingerprint.Scannable(mID, m.id.Public, pID, remote), theirScan); err != nil || !ok {
		t.Fatalf("scannable safety numbers do not match: %v, %v", ok, err)
	}
}

// TestInteropControl runs the same conversation between two libsignal
// parties, proving that everything converse expects is libsignal's own
// behavior.
func TestInteropControl(t *testing.T) {
	o := libsignaloracle.Start(t)
	alice := o.NewParty("alice", 1, 1)
	bob := o.NewParty("bob", 2, 2)
	if err := o.ProcessBundle(alice.Name, bob.Address(), o.Bundle(bob.Name, true)); err != nil {
		t.Fatal(err)
	}
	converse(t, &oracleSide{o: o, name: alice.Name, peer: bob.Address()},
		&oracleSide{o: o, name: bob.Name, peer: alice.Address()})
}

// TestInteropRefusesBadSignatures: each side refuses the other's bundle
// when a signature is wrong.
func TestInteropRefusesBadSignatures(t *testing.T) {
	o := libsignaloracle.Start(t)
	o.NewParty("alice", 1, 1)
	o.NewParty("bob", 1, 2)
	magpie := newMagpie(t, 3)

	for _, which := range []string{"signed", "kyber"} {
		b := bundleFromOracle(t, o.Bundle("bob", true))
		if which == "signed" {
			b.SignedPreKeySig[3] ^= 1
		} else {
			b.KyberPreKeySig[3] ^= 1
		}
		if err := new(ratchet.Record).InitiateFromBundle(magpie.id, magpie.regID, b, rand.Reader); !errors.Is(err, ratchet.ErrInvalidSignature) {
			t.Errorf("Magpie given libsignal's bundle with a bad %s signature: %v, want ErrInvalidSignature", which, err)
		}

		mb := magpie.keys.bundle(t, magpie, 1, true)
		if which == "signed" {
			mb.SignedPreKeySignature[3] ^= 1
		} else {
			mb.KyberPreKeySignature[3] ^= 1
		}
		if err := o.ProcessBundle("alice", libsignaloracle.Address{Name: "magpie", DeviceID: 1}, mb); err == nil {
			t.Errorf("libsignal accepted Magpie's bundle with a bad %s signature", which)
		}
	}
}

// preKeys is an in-memory ratchet.PreKeyStore.
type preKeys struct {
	next   uint32
	signed map[uint32]curve.KeyPair
	kyber  map[uint32]*kem.PrivateKey
	once   map[uint32]curve.KeyPair
}

func newPreKeys() *preKeys {
	return &preKeys{
		next:   100,
		signed: map[uint32]curve.KeyPair{},
		kyber:  map[uint32]*kem.PrivateKey{},
		once:   map[uint32]curve.KeyPair{},
	}
}

func (p *preKeys) SignedPreKey(id uint32) (curve.KeyPair, error) {
	k, ok := p.signed[id]
	if !ok {
		return curve.KeyPair{}, fmt.Errorf("no signed prekey %d", id)
	}
	return k, nil
}

func (p *preKeys) KyberPreKey(id uint32) (*kem.PrivateKey, error) {
	k, ok := p.kyber[id]
	if !ok {
		return nil, fmt.Errorf("no kyber prekey %d", id)
	}
	return k, nil
}

func (p *preKeys) PreKey(id uint32) (curve.KeyPair, error) {
	k, ok := p.once[id]
	if !ok {
		return curve.KeyPair{}, fmt.Errorf("no one-time prekey %d", id)
	}
	return k, nil
}

// bundle makes fresh prekeys for m, signed by its identity, and returns
// them serialized for the oracle.
func (p *preKeys) bundle(t *testing.T, m *magpieSide, deviceID uint32, oneTime bool) libsignaloracle.Bundle {
	t.Helper()
	sign := func(msg []byte) []byte {
		var random [64]byte
		rand.Read(random[:])
		sig := xeddsa.Sign(m.id.Private, msg, random)
		return sig[:]
	}
	spk, err := curve.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kyber, err := kem.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	p.next++
	spkID := p.next
	p.next++
	kyberID := p.next
	p.signed[spkID], p.kyber[kyberID] = spk, kyber
	b := libsignaloracle.Bundle{
		RegistrationID:        m.regID,
		DeviceID:              deviceID,
		IdentityKey:           m.id.Public.Serialize(),
		SignedPreKeyID:        spkID,
		SignedPreKey:          spk.Public.Serialize(),
		SignedPreKeySignature: sign(spk.Public.Serialize()),
		KyberPreKeyID:         kyberID,
		KyberPreKey:           kyber.PublicKey().Serialize(),
		KyberPreKeySignature:  sign(kyber.PublicKey().Serialize()),
	}
	if oneTime {
		opk, err := curve.GenerateKeyPair(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		p.next++
		id := p.next
		p.once[id] = opk
		b.PreKeyID, b.PreKey = &id, opk.Public.Serialize()
	}
	return b
}

// TestInteropReceiverChainLimit checks that Magpie keeps exactly as many
// receiving chains as libsignal: a PreKey message held back while the
// ratchet turns MaxReceiverChains-1 times still decrypts, and one held back
// for MaxReceiverChains turns is refused, in every pairing (libsignal with
// itself as the control).
func TestInteropReceiverChainLimit(t *testing.T) {
	for _, pairing := range []string{"libsignal-libsignal", "Magpie-libsignal", "libsignal-Magpie"} {
		for _, turns := range []int{ratchet.MaxReceiverChains - 1, ratchet.MaxReceiverChains} {
			t.Run(fmt.Sprintf("%s/turns=%d", pairing, turns), func(t *testing.T) {
				o := libsignaloracle.Start(t)
				aAddr := libsignaloracle.Address{Name: "a", DeviceID: 1}
				bAddr := libsignaloracle.Address{Name: "b", DeviceID: 1}
				var init, resp side
				switch pairing {
				case "libsignal-libsignal":
					o.NewParty("a", 1, 1)
					o.NewParty("b", 1, 2)
					if err := o.ProcessBundle("a", bAddr, o.Bundle("b", true)); err != nil {
						t.Fatal(err)
					}
					init, resp = &oracleSide{o: o, name: "a", peer: bAddr}, &oracleSide{o: o, name: "b", peer: aAddr}
				case "Magpie-libsignal":
					o.NewParty("b", 1, 2)
					m := newMagpie(t, 1)
					if err := m.rec.InitiateFromBundle(m.id, m.regID, bundleFromOracle(t, o.Bundle("b", true)), rand.Reader); err != nil {
						t.Fatal(err)
					}
					init, resp = m, &oracleSide{o: o, name: "b", peer: aAddr}
				case "libsignal-Magpie":
					o.NewParty("a", 1, 1)
					m := newMagpie(t, 2)
					if err := o.ProcessBundle("a", bAddr, m.keys.bundle(t, m, 1, true)); err != nil {
						t.Fatal(err)
					}
					init, resp = &oracleSide{o: o, name: "a", peer: bAddr}, m
				}
				heldTyp, held := init.send(t, "held")
				typ, body := init.send(t, "first")
				if _, err := resp.recv(t, typ, body); err != nil {
					t.Fatal(err)
				}
				for i := range turns {
					for _, d := range [][2]side{{resp, init}, {init, resp}} {
						typ, body := d[0].send(t, fmt.Sprint("turn ", i))
						if _, err := d[1].recv(t, typ, body); err != nil {
							t.Fatalf("%s, turn %d: %v", d[1], i, err)
						}
					}
				}
				pt, err := resp.recv(t, heldTyp, held)
				if turns < ratchet.MaxReceiverChains && (err != nil || string(pt) != "held") {
					t.Fatalf("%s refused a message %d ratchet turns late: %v", resp, turns, err)
				}
				if turns >= ratchet.MaxReceiverChains && err == nil {
					t.Fatalf("%s decrypted a message whose receiving chain is %d turns old", resp, turns)
				}
			})
		}
	}
}
